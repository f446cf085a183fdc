"""The VAE's input encoding: integer code grids as one-hot character channels."""

from __future__ import annotations

import torch

from asciiray.charset import NUM_CHARS


def one_hot(codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot [B, 95, S, S] of integer code grids [B, S, S], made on their device (the VAE's input).

    Same values and (channels-last) strides as
    F.one_hot(codes.long(), 95).permute(0, 3, 1, 2).to(dtype), without the int64
    intermediate; the layout lets every 95-channel tensor downstream keep the
    characters contiguous. Made in the dtype its consumer computes in (0 and 1
    are exact in every float type), so autocast need not cast a float32 copy.
    """
    out = torch.zeros(*codes.shape, NUM_CHARS, device=codes.device, dtype=dtype)
    return out.scatter_(-1, codes.long().unsqueeze(-1), 1.0).permute(0, 3, 1, 2)
