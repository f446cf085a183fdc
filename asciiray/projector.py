"""The latent space in TensorBoard's projector: validation pieces' mu, their labels, their pictures.

tensorboardX writes the projector files (tensors, metadata, sprite, projector_config.pbtxt) into a
fresh local directory, which is then copied into the log directory (local or S3), so a second
call replaces the first instead of appending to its config.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np
import torch

from asciiray import charset, storage
from asciiray.errors import UserError
from asciiray.inference import TrainedVAE
from asciiray.pictures import thumbnails

TAG = "validation_mu"
HEADER = ["category", "labels", "id", "source"]
SPRITE = 64
# TensorBoard's front end shows sprite sheets up to this many pixels a side.
MAX_SPRITE_SHEET = 8192


def default_logdir(vae: TrainedVAE) -> str:
    """The run's TensorBoard directory, where `asciiray train` writes its scalars."""
    if vae.run_uri is None:
        raise UserError(f"{vae.uri} is an exported model, with no run around it: pass --logdir")
    return storage.join(vae.run_uri, "tensorboard")


def _cell(value: str) -> str:
    return " ".join(value.split()) or "-"


def write_projector(vae: TrainedVAE, logdir: str, max_pieces: int = 1000) -> int:
    """Write the first `max_pieces` validation pieces (in id order) of the model's corpus; returns how many."""
    from tensorboardX import SummaryWriter

    if max_pieces < 1:
        raise UserError(f"max pieces = {max_pieces}: embed at least one piece")
    pieces = vae.corpus_pieces()[:max_pieces]
    if not pieces:
        raise UserError(f"the corpus {vae.meta['corpus']} has no validation piece that fits the model's grid")
    texts = [p.text for p in pieces]
    mu = vae.encode(texts)
    codes = np.stack([charset.encode(t, vae.grid) for t in texts])
    size = min(SPRITE, MAX_SPRITE_SHEET // math.ceil(math.sqrt(len(pieces))))
    metadata = [[_cell(p.labels[0] if p.labels else ""), _cell("/".join(p.labels)), p.id[:12], _cell(p.source)]
                for p in pieces]
    with tempfile.TemporaryDirectory(prefix="asciiray-projector-") as tmp:
        with SummaryWriter(logdir=tmp) as writer:
            writer.add_embedding(mu, metadata=metadata, label_img=torch.from_numpy(thumbnails(codes, size)),
                                 global_step=int(vae.meta.get("epoch", 0)), tag=TAG, metadata_header=HEADER)
        storage.copy_dir(tmp, logdir)
    return len(pieces)
