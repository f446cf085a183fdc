"""The convolutional VAE of S x S character grids, and its size presets.

Encoder: one-hot [B, 95, S, S] -> convs (each with its own stride and padding,
then ReLU + BatchNorm) -> flatten -> linear heads for mu and a clamped
log-variance. Decoder: linear (optionally ReLU + BatchNorm) -> C x n x n ->
bilinear-upsample + conv blocks up to S x S -> head convs to 95 logits.
Every size is a field of `VAEConfig`, so a checkpoint's `meta.json` rebuilds
its model exactly.

Two-level latent (`map_channels` > 0): besides the global z, the encoder's
feature map at `map_size` x `map_size` gives a posterior q(m | x) over a
spatial latent map m [map_channels, map_size, map_size], and the decoder's
features at that size, which depend on z alone, give a learned conditional
prior p(m | z). The decoder then continues from those features and m
together. The global z carries what a piece is (sampling and interpolation
start there); the map carries where each stroke goes, which a vector of a few
dozen numbers cannot hold for a 64 x 64 grid. Both are one flat latent to the
outside world: [z, m.flatten()].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from asciiray import config
from asciiray.charset import DEFAULT_GRID, NUM_CHARS
from asciiray.config import option
from asciiray.errors import UserError
from asciiray.models.encoding import one_hot


@dataclass
class VAEConfig:
    """Every size of the model; validated on construction."""

    grid: int = option(DEFAULT_GRID, "side S of the S x S character grid")
    z_dim: int = option(512, "size of the latent vector")
    kernel: int = option(5, "kernel size of the encoder and decoder convs (odd)")
    embed_dim: int = option(0, "0: the encoder's first conv reads the one-hot grid; n: it reads a learned "
                               "n-dim embedding of each character (a cheap, bias-free 1x1 conv on the one-hot)")
    encoder_channels: list[int] = option([32, 64, 128, 256], "output channels of the encoder convs")
    encoder_strides: list[int] = option([], "stride of each encoder conv (empty: 2 for every conv)")
    encoder_padding: list[int] = option([], "zero padding of each encoder conv (empty: kernel // 2 for every "
                                            "conv, i.e. 'same' at stride 1)")
    decoder_start: int = option(8, "spatial size the decoder's linear layer unflattens to")
    decoder_start_channels: int = option(8, "channels the decoder's linear layer unflattens to")
    decoder_linear_norm: bool = option(False, "ReLU + BatchNorm1d after the decoder's linear layer (the prototype's)")
    decoder_sizes: list[int] = option([12, 16, 32, 64], "spatial size after each upsample + conv block")
    decoder_channels: list[int] = option([64, 64, 64, 64], "output channels of each upsample + conv block")
    decoder_upsample: Literal["bilinear", "shuffle"] = option(
        "bilinear", "how a decoder block grows: bilinear (resize, then conv) or shuffle (conv to 4x the channels "
                    "at the smaller size, then pixel shuffle; each block must double the size)")
    head_channels: list[int] = option([NUM_CHARS, NUM_CHARS], "output channels of the head convs; last is 95")
    head_kernel: int = option(5, "kernel size of the head convs (odd)")
    head_norm: bool = option(False, "BatchNorm2d after the ReLU between head convs (the prototype's)")
    logvar_min: float = option(-10.0, "lower clamp of the encoder's log-variance")
    logvar_max: float = option(10.0, "upper clamp of the encoder's log-variance")
    init_std: float | None = option(None, "draw conv, linear and embedding weights from N(0, init_std^2) and zero "
                                          "their biases, as the prototype did (None: PyTorch's default init)")
    map_channels: int = option(0, "channels of the spatial latent map with a learned conditional prior "
                                  "p(map | z) (0: the global z alone)")
    map_size: int = option(16, "side of the spatial latent map: the encoder and decoder feature maps of this "
                               "size are where it is read and joined")
    # GPU kernels favour channel counts that are multiples of 8 or 32.
    pad_head: bool = option(False, "give the last head conv one extra output channel (96 instead of 95) that "
                                   "decode drops before anything reads the logits, which is the same as masking "
                                   "its logit to -inf: the 95 characters' probabilities are those of the "
                                   "unpadded head with the same weights")

    def __post_init__(self) -> None:
        def bad(message: str) -> UserError:
            return UserError(f"model config: {message}")

        positive = {"grid": self.grid, "z_dim": self.z_dim, "decoder_start": self.decoder_start,
                    "decoder_start_channels": self.decoder_start_channels}
        for name, value in positive.items():
            if value < 1:
                raise bad(f"{name} = {value} must be at least 1")
        if self.embed_dim < 0:
            raise bad(f"embed_dim = {self.embed_dim} must be 0 (one-hot input) or a positive size")
        for name in ("kernel", "head_kernel"):
            value = getattr(self, name)
            if value < 1 or value % 2 == 0:
                raise bad(f"{name} = {value} must be an odd positive integer, e.g. 3 or 5")
        for name in ("encoder_channels", "decoder_channels", "head_channels"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise bad(f"{name} = {values} must be a non-empty list of positive channel counts")
        if len(self.decoder_sizes) != len(self.decoder_channels):
            raise bad(f"decoder_sizes has {len(self.decoder_sizes)} entries but decoder_channels has "
                      f"{len(self.decoder_channels)}: give one channel count per decoder block")
        if self.decoder_upsample not in ("bilinear", "shuffle"):
            raise bad(f"decoder_upsample = {self.decoder_upsample!r} must be bilinear or shuffle")
        if self.decoder_upsample == "shuffle":
            sizes = [self.decoder_start, *self.decoder_sizes]
            if any(b != 2 * a for a, b in zip(sizes, sizes[1:])):
                raise bad(f"decoder_upsample = shuffle needs each of decoder_sizes {self.decoder_sizes} to double "
                          f"the one before (from decoder_start = {self.decoder_start})")
        if self.decoder_sizes[-1] != self.grid:
            raise bad(f"the last of decoder_sizes {self.decoder_sizes} must equal grid = {self.grid}")
        if self.head_channels[-1] != NUM_CHARS:
            raise bad(f"the last of head_channels {self.head_channels} must be {NUM_CHARS}, one per character")
        for name in ("encoder_strides", "encoder_padding"):
            values = getattr(self, name)
            if values and len(values) != len(self.encoder_channels):
                raise bad(f"{name} has {len(values)} entries but encoder_channels has "
                          f"{len(self.encoder_channels)}: give one per encoder conv, or none for the default")
        if self.encoder_strides and min(self.encoder_strides) < 1:
            raise bad(f"encoder_strides = {self.encoder_strides} must be positive")
        if self.encoder_padding and min(self.encoder_padding) < 0:
            raise bad(f"encoder_padding = {self.encoder_padding} must not be negative")
        if self.encoder_size() < 1:
            raise bad(f"the encoder shrinks a {self.grid}x{self.grid} grid to nothing: use fewer convs, "
                      f"smaller strides or more padding")
        if self.init_std is not None and not self.init_std > 0:
            raise bad(f"init_std = {self.init_std} must be positive, or None for PyTorch's default init")
        if self.map_channels < 0:
            raise bad(f"map_channels = {self.map_channels} must be 0 (no latent map) or a positive count")
        if self.map_channels:
            if self.map_size not in self.decoder_sizes[:-1]:
                raise bad(f"map_size = {self.map_size} must be one of the decoder's sizes before the last, "
                          f"{self.decoder_sizes[:-1]}")
            if self.map_size not in self.encoder_sizes():
                raise bad(f"map_size = {self.map_size} must be one of the encoder's feature-map sizes, "
                          f"{self.encoder_sizes()}")
        if self.logvar_min >= self.logvar_max:
            raise bad(f"logvar_min = {self.logvar_min} must be below logvar_max = {self.logvar_max}")

    def encoder_layers(self) -> list[tuple[int, int, int]]:
        """(output channels, stride, padding) of each encoder conv, defaults filled in."""
        n = len(self.encoder_channels)
        strides = self.encoder_strides or [2] * n
        padding = self.encoder_padding or [self.kernel // 2] * n
        return list(zip(self.encoder_channels, strides, padding))

    def encoder_sizes(self) -> list[int]:
        """Spatial side of each encoder conv's feature map."""
        sizes, size = [], self.grid
        for _, stride, pad in self.encoder_layers():
            size = (size + 2 * pad - self.kernel) // stride + 1
            sizes.append(size)
        return sizes

    def encoder_size(self) -> int:
        """Spatial side of the encoder's last feature map."""
        return self.encoder_sizes()[-1]

    def latent_dim(self) -> int:
        """Size of the flat latent [z, map]: what encode returns and decode takes."""
        return self.z_dim + self.map_channels * self.map_size ** 2


PRESETS: dict[str, VAEConfig] = {
    # The prototype's architecture, layer for layer: z = 512, every conv 5x5, every ReLU followed by
    # BatchNorm; encoder 95 -> 64 (64x64) -> 48 (32x32) -> 32 (16x16) -> 16 (12x12, unpadded) -> 8 (8x8,
    # unpadded) = 512; decoder linear 512 -> 512, ReLU, BN, 8x8x8 -> 16 (12x12) -> 32 (16x16) -> 48 (32x32)
    # -> 64 (64x64), conv 64 -> 95, ReLU, BN, conv 95 -> 95.
    "seed": VAEConfig(encoder_channels=[64, 48, 32, 16, 8], encoder_strides=[1, 2, 2, 1, 1],
                      encoder_padding=[2, 2, 2, 0, 0], decoder_linear_norm=True,
                      decoder_channels=[16, 32, 48, 64], head_norm=True),
    # Trains on 2 CPU cores: characters enter through an embedding, and the 64 x 64 layers stay narrow,
    # because the 95 x 64 x 64 logits and their log-softmax already dominate a step. Its decoder grows by
    # pixel shuffle: a bilinear decoder cannot draw a pattern that changes from one cell to the next
    # (docs/QUALITY.md: it memorised 90 pieces to ink_f1 0.54, this one to 0.86, in the same steps).
    "small": VAEConfig(z_dim=64, kernel=3, embed_dim=8, encoder_channels=[16, 32, 32, 64], decoder_start=8,
                       decoder_start_channels=16, decoder_sizes=[16, 32, 64], decoder_channels=[32, 16, 8],
                       decoder_upsample="shuffle", head_channels=[NUM_CHARS], head_kernel=1),
    # The small preset with room to draw: a 16 x 16 x 8 latent map under a conditional prior p(map | z),
    # and 32 channels at the grid instead of 8.
    "small-map": VAEConfig(z_dim=64, kernel=3, embed_dim=8, encoder_channels=[16, 32, 32, 64], decoder_start=8,
                           decoder_start_channels=16, decoder_sizes=[16, 32, 64], decoder_channels=[32, 32, 16],
                           decoder_upsample="shuffle", head_channels=[NUM_CHARS], head_kernel=1,
                           map_channels=8, map_size=16),
    # A 16 x 16 grid for tests.
    "tiny": VAEConfig(grid=16, z_dim=16, kernel=3, encoder_channels=[8, 16], decoder_start=4,
                      decoder_start_channels=8, decoder_sizes=[8, 16], decoder_channels=[16, 16],
                      head_channels=[NUM_CHARS], head_kernel=1),
}


def get_preset(name: str, **overrides: object) -> VAEConfig:
    """A fresh copy of a preset, with some fields replaced."""
    return config.from_preset(PRESETS, name, "model", **overrides)


def log_softmax_chars(logits: torch.Tensor) -> torch.Tensor:
    """fp32 log_softmax over the 95 characters (dim 1) of logits of any float dtype.

    Without copying channels-last logits, and without an fp32 copy of bf16 ones:
    the kernel reads them as they are and computes in fp32.
    """
    if logits.is_contiguous():
        return F.log_softmax(logits, dim=1, dtype=torch.float32)
    return F.log_softmax(logits.permute(0, 2, 3, 1), dim=-1, dtype=torch.float32).permute(0, 3, 1, 2)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d that normalises fewer than 16 channels in NCHW on a CPU: there PyTorch's channels-last
    kernel is several times slower (forward and backward of 8 channels at 64 x 64, batch 64: 23.6 ms against
    4.4 ms in NCHW, plus a copy each way; from 16 channels on they take the same time). Same parameters and
    state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dim() == 4 and x.shape[1] < 16 and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last)):
            x = _ToNCHW.apply(x)
        return super().forward(x)


class _ToNCHW(torch.autograd.Function):
    """A channels-last tensor copied to NCHW, whose gradient goes back channels-last: the layers below
    (ReLU, pixel shuffle, conv) have slow backward kernels for a gradient in the other format."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


# (row, column) pairs per slice of the lookup's gradient: their 4 MiB of int64 stay in cache between the pass
# that writes them and the scatter that reads them (a batch of 64 grids of 64 x 64 with 8 columns in a
# training step: 2.0 ms, against 4.9 ms for all pairs at once).
LOOKUP_PAIRS = 2 ** 19


class _Lookup(torch.autograd.Function):
    """Rows of an embedding table, whose gradient is summed by flat scatter_adds over (row, column) pairs: on a
    CPU F.embedding's backward sorts the indices first, index_select's adds the rows one at a time, and a
    bincount scans the pairs twice more for their range (the same batch, alone: 12.5 ms for the index_add, 4.2
    ms for the bincount)."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = weight.shape[0]
        return weight.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        columns = grad.shape[1]
        offsets = torch.arange(columns, device=index.device)
        sums = grad.new_zeros(ctx.rows * columns)
        step = max(1, LOOKUP_PAIRS // columns)
        for lo in range(0, len(index), step):
            pairs = torch.add(offsets, index[lo:lo + step].unsqueeze(1), alpha=columns).view(-1)
            sums.scatter_add_(0, pairs, grad[lo:lo + step].reshape(-1))
        return sums.view(ctx.rows, columns), None


class VAE(nn.Module):
    """Variational autoencoder of code grids; forward returns fp32 log-probabilities."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # A lookup equals a bias-free 1x1 conv on the one-hot, without its 95 channels.
        self.embed = nn.Embedding(NUM_CHARS, cfg.embed_dim) if cfg.embed_dim else None
        layers: list[nn.Module] = []
        channels = cfg.embed_dim or NUM_CHARS
        for out, stride, pad in cfg.encoder_layers():
            layers += [nn.Conv2d(channels, out, cfg.kernel, stride=stride, padding=pad), nn.ReLU(),
                       BatchNorm2d(out)]
            channels = out
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        flat = channels * cfg.encoder_size() ** 2
        self.mu = nn.Linear(flat, cfg.z_dim)
        self.logvar = nn.Linear(flat, cfg.z_dim)
        if cfg.map_channels:
            # q(map | x) from the encoder's features at map_size (conv, ReLU, BatchNorm per layer).
            tap = cfg.encoder_sizes().index(cfg.map_size)
            self.encoder_tap = 3 * (tap + 1)
            self.posterior = nn.Conv2d(cfg.encoder_channels[tap], 2 * cfg.map_channels, 1)

        start = cfg.decoder_start_channels * cfg.decoder_start ** 2
        norm = [nn.ReLU(), nn.BatchNorm1d(start)] if cfg.decoder_linear_norm else []
        self.expand = nn.Sequential(nn.Linear(cfg.z_dim, start), *norm,
                                    nn.Unflatten(1, (cfg.decoder_start_channels, cfg.decoder_start,
                                                     cfg.decoder_start)))
        pad = cfg.kernel // 2
        layers = []
        channels = cfg.decoder_start_channels
        for size, out in zip(cfg.decoder_sizes, cfg.decoder_channels):
            if cfg.map_channels and len(layers) == self._decoder_tap():
                channels += cfg.map_channels  # the blocks below the map read the map beside the features
            if cfg.decoder_upsample == "shuffle":
                # Sub-pixel conv: each cell of the smaller map writes its own 2 x 2 block, so the output can
                # change from one character cell to the next (a bilinear resize smears it over several).
                grow = [nn.Conv2d(channels, 4 * out, cfg.kernel, padding=pad), nn.PixelShuffle(2)]
            else:
                grow = [nn.Upsample(size=(size, size), mode="bilinear", align_corners=False),
                        nn.Conv2d(channels, out, cfg.kernel, padding=pad)]
            layers += [*grow, nn.ReLU(), BatchNorm2d(out)]
            channels = out
        for i, out in enumerate(cfg.head_channels):
            if i:
                layers += [nn.ReLU(), BatchNorm2d(channels)] if cfg.head_norm else [nn.ReLU()]
            last = i == len(cfg.head_channels) - 1
            layers.append(nn.Conv2d(channels, out + (last and cfg.pad_head), cfg.head_kernel,
                                    padding=cfg.head_kernel // 2))
            channels = out
        self.decoder = nn.Sequential(*layers)
        if cfg.map_channels:
            # p(map | z) from the decoder's features at map_size, which depend on z alone.
            features = cfg.decoder_channels[cfg.decoder_sizes.index(cfg.map_size)]
            self.prior = nn.Conv2d(features, 2 * cfg.map_channels, 1)
        if cfg.init_std is not None:
            self._init_normal(cfg.init_std)

    def _decoder_tap(self) -> int:
        """Index in `decoder` after the block that makes the map_size features (4 modules per block)."""
        return 4 * (self.cfg.decoder_sizes.index(self.cfg.map_size) + 1)

    def _init_normal(self, std: float) -> None:
        """The prototype's init: weights ~ N(0, std^2), biases 0; BatchNorm keeps its (1, 0)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def init_output_prior(self, counts: torch.Tensor) -> None:
        """Start the last conv's bias at the log frequency of each character in the training grids.

        The untrained decoder then predicts the corpus's character distribution (mostly
        spaces) instead of a uniform one, so the first epochs learn where ink goes rather
        than the space prior; without it a short CPU run ends over-inked.
        """
        head = [m for m in self.decoder if isinstance(m, nn.Conv2d)][-1]
        prior = torch.as_tensor(counts, dtype=torch.float64).flatten() + 1.0
        if prior.numel() != NUM_CHARS:
            raise ValueError(f"expected {NUM_CHARS} character counts, got {prior.numel()}")
        with torch.no_grad():
            head.bias[:NUM_CHARS].copy_(torch.log(prior / prior.sum()).to(head.bias.dtype))

    def _check(self, codes: torch.Tensor) -> None:
        s = self.cfg.grid
        if codes.dim() != 3 or tuple(codes.shape[1:]) != (s, s):
            raise ValueError(f"expected codes of shape [B, {s}, {s}], got {list(codes.shape)}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"expected integer character codes (uint8 or long), got {codes.dtype}")

    def encode(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, clamped log-variance) [B, latent_dim], fp32, of the flat latent [z, map] of integer code
        grids [B, S, S]."""
        self._check(codes)
        if self.embed is None:  # the one-hot is made in the dtype the first conv runs in (no cast pass)
            device = codes.device.type
            x = one_hot(codes, torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32)
        else:
            flat = _Lookup.apply(self.embed.weight, codes.reshape(-1).long())
            x = flat.view(*codes.shape, -1).permute(0, 3, 1, 2)
        if not self.cfg.map_channels:
            h = self.encoder(x)
            logvar = self.logvar(h).float().clamp(self.cfg.logvar_min, self.cfg.logvar_max)
            return self.mu(h).float(), logvar
        features = self.encoder[:self.encoder_tap](x)
        h = self.encoder[self.encoder_tap:](features)
        map_mu, map_logvar = self.posterior(features).float().flatten(1).chunk(2, dim=1)
        mu = torch.cat([self.mu(h).float(), map_mu], dim=1)
        logvar = torch.cat([self.logvar(h).float(), map_logvar], dim=1)
        return mu, logvar.clamp(self.cfg.logvar_min, self.cfg.logvar_max)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """A sample of N(mu, exp(logvar)) that gradients flow through."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def _top(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's features at map_size from the global z [B, z_dim], and p(map | z)'s flat
        (mu, clamped log-variance)."""
        features = self.decoder[:self._decoder_tap()](self.expand(z).contiguous(memory_format=torch.channels_last))
        mu, logvar = self.prior(features).float().flatten(1).chunk(2, dim=1)
        return features, mu, logvar.clamp(self.cfg.logvar_min, self.cfg.logvar_max)

    def _bottom(self, features: torch.Tensor, latent_map: torch.Tensor, last: int | None = None) -> torch.Tensor:
        """The decoder from the map_size features and the latent map, up to module `last` (None: all of it)."""
        m = latent_map.view(len(latent_map), self.cfg.map_channels, self.cfg.map_size, self.cfg.map_size)
        x = torch.cat([features, m.to(features.dtype)], dim=1).contiguous(memory_format=torch.channels_last)
        return self.decoder[self._decoder_tap():last](x)

    def _logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, :NUM_CHARS] if self.cfg.pad_head else logits

    def _decode(self, latent: torch.Tensor, head: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(the decoder's output for flat latents [B, latent_dim], p(map | z)'s flat (mu, log-variance), or
        (None, None) without a map); head=False stops before the last head conv."""
        last = len(self.decoder) if head else -1
        if not self.cfg.map_channels:
            return self.decoder[:last](self.expand(latent).contiguous(memory_format=torch.channels_last)), None, None
        features, mu, logvar = self._top(latent[:, :self.cfg.z_dim])
        return self._bottom(features, latent[:, self.cfg.z_dim:], last), mu, logvar

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Character logits [B, 95, S, S] (in the autocast dtype, if any) of flat latents [B, latent_dim].

        The decoder runs channels-last, like the encoder, so the logits come out
        with their 95 characters contiguous for the softmax and the losses. A padded
        head's 96th channel is dropped here: nothing downstream can choose it.
        """
        return self._logits(self._decode(latent)[0])

    def prior_latent(self, noise: torch.Tensor) -> torch.Tensor:
        """Flat latents from the prior, given standard normal noise [B, latent_dim]: z = its first z_dim
        entries, and the map drawn from p(map | z) with the rest as its noise."""
        if not self.cfg.map_channels:
            return noise
        z = noise[:, :self.cfg.z_dim]
        _, mu, logvar = self._top(z)
        return torch.cat([z, mu + torch.exp(0.5 * logvar) * noise[:, self.cfg.z_dim:]], dim=1)

    def forward(self, codes: torch.Tensor, head: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fp32 log-probabilities [B, 95, S, S], mu, logvar); eval mode decodes the posterior means.

        mu and logvar are those of a standard-normal KL: for the map, the posterior is
        whitened by the prior p(map | z) at the sampled z, ((mu_q - mu_p) / sigma_p,
        logvar_q - logvar_p), which leaves KL(q || p) = KL(N(mu, exp(logvar)) || N(0, I)).
        head=False returns the input of the last head conv (`self.decoder[-1]`) in place of the
        log-probabilities, for a loss that applies that conv itself (asciiray.train.head_loss).
        """
        mu, logvar = self.encode(codes)
        latent = self.reparameterize(mu, logvar) if self.training else mu
        x, prior_mu, prior_logvar = self._decode(latent, head)
        out = log_softmax_chars(self._logits(x)) if head else x
        if not self.cfg.map_channels:
            return out, mu, logvar
        k = self.cfg.z_dim
        map_mu = (mu[:, k:] - prior_mu) * torch.exp(-0.5 * prior_logvar)
        map_logvar = logvar[:, k:] - prior_logvar
        return out, torch.cat([mu[:, :k], map_mu], dim=1), torch.cat([logvar[:, :k], map_logvar], dim=1)

    @classmethod
    def from_checkpoint(cls, uri: str, device: torch.device | str = "cpu") -> VAE:
        """A trained VAE in eval mode from a checkpoint, a run (its latest checkpoint) or an exported model,
        local or s3://; its sizes come from the checkpoint, its weights from safetensors."""
        from asciiray import checkpoint

        model = checkpoint.load_model(uri, "vae", lambda model: cls(VAEConfig(**model)),
                                      "pass a run or checkpoint of `asciiray train`, or a model of `asciiray export`")
        return model.to(device).eval()


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of a model."""
    return sum(p.numel() for p in model.parameters())


def describe(name: str) -> str:
    """One line about a preset: its name, grid, latent size and parameter count."""
    cfg = get_preset(name)
    return f"{name}: grid {cfg.grid}x{cfg.grid}, z {cfg.z_dim}, {count_parameters(VAE(cfg)):,} parameters"
