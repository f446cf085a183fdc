"""Use a trained VAE: encode, decode, reconstruct, sample and interpolate pieces of ASCII art.

    from asciiray.inference import TrainedVAE
    vae = TrainedVAE.load("runs/my-run")   # a run, a checkpoint, s3://..., or an exported model; CPU or GPU
    print(vae.sample(4, temperature=0.8, seed=1).texts[0])

Methods that make pieces return `Pieces`: the code grids and their texts, cropped to the ink.
A model loaded from a run also knows its corpus, so pieces can be named by id.
"""

from __future__ import annotations

import math
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from asciiray import charset, checkpoint, embedded, storage
from asciiray.errors import UserError
from asciiray.models import VAE

# Pieces encoded or decoded per forward pass.
BATCH = 256
PATHS = ("linear", "slerp")
# A piece id, or the start of one: hex digits of the sha256 of its text.
PIECE_ID = r"[0-9a-f]{6,64}"


@dataclass
class Pieces:
    """Decoded pieces: code grids [N, S, S] (uint8) and their texts."""

    codes: np.ndarray

    @property
    def texts(self) -> list[str]:
        """Each piece's text cropped to its own ink."""
        return [charset.decode(grid) for grid in self.codes]

    @property
    def aligned_texts(self) -> list[str]:
        """The texts cropped to the union of all their ink, so that they line up (frames of a morph)."""
        return charset.crop_texts(self.codes)


@dataclass
class CorpusPiece:
    id: str
    text: str
    labels: list[str]
    source: str


def read_piece(path: str, grid: int) -> str:
    """A piece from a text file, normalised; a one-line UserError when it cannot be one for a grid of this size."""
    try:
        with open(path, encoding="utf-8") as f:
            text = charset.normalize(f.read())
        charset.validate(text)
        charset.encode(text, grid)
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except charset.InvalidPiece as exc:
        raise UserError(f"{path}: {exc} (the model reads printable ASCII that fits {grid}x{grid})") from None
    return text


def check_temperature(temperature: float) -> None:
    if not temperature > 0 or not math.isfinite(temperature):
        raise UserError(f"temperature {temperature} must be a positive number: z ~ N(0, t^2 I), e.g. 1.0")


def mix(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, path: str = "linear") -> torch.Tensor:
    """Latents [K, z] on the way from a [z] to b [z] at fractions t [K]: a straight line, or slerp
    (the great circle, which keeps the norm of prior samples where a line would shrink it)."""
    if path not in PATHS:
        raise UserError(f"path '{path}' is unknown: use one of {', '.join(PATHS)}")
    t = t.to(a.dtype)[:, None]
    if path == "slerp":
        cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
        omega = torch.arccos(cos.clamp(-1.0, 1.0))
        if omega.abs() > 1e-4:
            return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return (1 - t) * a + t * b


class TrainedVAE:
    """A trained VAE in eval mode, with what its checkpoint says about it."""

    def __init__(self, model: VAE, meta: dict[str, Any], uri: str) -> None:
        self.model, self.meta, self.uri = model, meta, uri
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, uri: str, device: str | torch.device | None = None) -> TrainedVAE:
        """From a checkpoint, a run (its latest checkpoint), an exported model, local or s3://;
        on `device` (default: CUDA when present)."""
        try:
            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError:
            raise UserError(f"device '{device}' is unknown: use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device '{device}': this machine has no CUDA GPU; use cpu")
        uri = checkpoint.resolve(uri)
        with checkpoint.opened(uri) as d:
            meta = checkpoint.load_meta(d)
            model = VAE.from_checkpoint(str(d), device)
        return cls(model, meta, uri)

    @property
    def grid(self) -> int:
        return self.model.cfg.grid

    @property
    def z_dim(self) -> int:
        """Size of the flat latent: the global z, and the latent map where the model has one."""
        return self.model.cfg.latent_dim()

    @property
    def corpus_uri(self) -> str | None:
        """The corpus the model was trained on (`embedded`: this install's embedded corpus)."""
        return embedded.resolve(self.meta.get("corpus"))

    @property
    def run_uri(self) -> str | None:
        """The run directory the checkpoint belongs to (None for an exported model)."""
        return None if self.meta.get("exported") else self.uri.rstrip("/").rsplit("/", 1)[0]

    def codes(self, texts: Sequence[str]) -> np.ndarray:
        """Code grids [N, S, S] of pieces; a piece that is not printable ASCII or does not fit is a UserError."""
        grids = np.zeros((len(texts), self.grid, self.grid), dtype=np.uint8)
        for i, text in enumerate(texts):
            try:
                grids[i] = charset.encode(charset.normalize(text), self.grid)
            except charset.InvalidPiece as exc:
                raise UserError(f"piece {i + 1}: {exc} (the model reads printable ASCII that fits "
                                f"{self.grid}x{self.grid})") from None
        return grids

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Posterior means mu [N, z] (fp32, on the CPU) of pieces."""
        grids = torch.from_numpy(self.codes(texts))
        out = [self.model.encode(chunk.to(self.device))[0].cpu() for chunk in grids.split(BATCH)]
        return torch.cat(out) if out else torch.zeros(0, self.z_dim)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> Pieces:
        """The most likely character of every cell, for latents [N, z]."""
        z = torch.as_tensor(z, dtype=torch.float32)
        out = [self.model.decode(chunk.to(self.device)).argmax(1).to(torch.uint8).cpu() for chunk in z.split(BATCH)]
        return Pieces(torch.cat(out).numpy() if out else np.zeros((0, self.grid, self.grid), np.uint8))

    def reconstruct(self, texts: Sequence[str]) -> Pieces:
        """Deterministic reconstructions: decode(mu)."""
        return self.decode(self.encode(texts))

    def prior(self, n: int, temperature: float = 1.0, seed: int | None = None) -> torch.Tensor:
        """n latents from the prior: z ~ N(0, t^2 I), and a latent map drawn from p(map | z) with its noise
        scaled by t too. The noise is drawn on the CPU, so a seed gives the same latents on any device."""
        check_temperature(temperature)
        if n < 1:
            raise UserError(f"n = {n}: ask for at least one sample")
        generator = torch.Generator()
        generator.manual_seed(seed) if seed is not None else generator.seed()
        noise = torch.randn(n, self.z_dim, generator=generator) * temperature
        with torch.no_grad():
            return self.model.prior_latent(noise.to(self.device)).cpu()

    def sample(self, n: int, temperature: float = 1.0, seed: int | None = None) -> Pieces:
        """n new pieces decoded from the prior, scaled by `temperature`."""
        return self.decode(self.prior(n, temperature, seed))

    def interpolate(self, a: str, b: str, steps: int = 8, path: str = "linear") -> Pieces:
        """`steps` frames from piece a to piece b in latent space; the first and last are their reconstructions."""
        if steps < 2:
            raise UserError(f"steps = {steps}: an interpolation has at least 2 frames (its two ends)")
        za, zb = self.encode([a, b])
        z = mix(za, zb, torch.linspace(0, 1, steps), path)
        z[0], z[-1] = za, zb
        return self.decode(z)

    def piece(self, ref: str) -> tuple[str, str]:
        """(name, text) of a piece given as a text file, or as the id (prefix) of a piece of the model's corpus."""
        if os.path.exists(ref) or not re.fullmatch(PIECE_ID, ref):
            return os.path.basename(ref.rstrip("/")) or ref, read_piece(ref, self.grid)
        found = self.corpus_piece(ref)
        return found.id[:12], found.text

    def corpus_pieces(self, held_out: bool = True) -> list[CorpusPiece]:
        """Pieces of the corpus the model was trained on that fit its grid, in id order: its validation
        split, or all of them."""
        from asciiray import data

        uri = self.corpus_uri
        if not uri or not storage.exists(uri):
            raise UserError(f"the corpus of {self.uri} ({uri or 'none recorded'}) is not reachable: "
                            f"pass pieces as text files")
        prop = self.meta["config"]["data"]["validation_prop"] if held_out else None
        table = data.fitting_pieces(uri, self.grid, prop).select(["id", "text", "labels", "source"])
        return [CorpusPiece(r["id"], r["text"], list(r["labels"] or []), r["source"]) for r in table.to_pylist()]

    def score(self, n: int = 0, batch_size: int = 256) -> dict[str, float]:
        """Every metric of `asciiray.metrics` (z = mu) on the validation pieces of the model's run: the same
        corpus, split and --max-pieces sample, the first `n` of them in id order (0: all), so the figures
        match the run's own final val/ ones."""
        from asciiray import data
        from asciiray.metrics import score

        if not self.corpus_uri:
            raise UserError(f"{self.uri} records no corpus to score it on")
        cfg = self.meta["config"]["data"]
        texts = data.validation_pieces(self.corpus_uri, self.grid, cfg["validation_prop"], n, cfg["max_pieces"])
        codes = torch.from_numpy(self.codes(texts)).to(self.device)
        return score(self.model, codes.split(batch_size))

    def corpus_piece(self, piece_id: str) -> CorpusPiece:
        """The corpus piece whose id starts with `piece_id` (at least 6 hex digits, as `corpus show` prints)."""
        if not re.fullmatch(PIECE_ID, piece_id):
            raise UserError(f"{piece_id}: not a piece id (6 to 64 hex digits, as `asciiray corpus show` prints)")
        found = [p for p in self.corpus_pieces(held_out=False) if p.id.startswith(piece_id)]
        if len(found) != 1:
            what = "no piece" if not found else f"{len(found)} pieces"
            raise UserError(f"{piece_id}: not a file, and {what} of corpus {self.meta['corpus']} "
                            f"{'has' if not found else 'have'} that id{'' if not found else ': give more digits'}")
        return found[0]

    def random_corpus_pieces(self, n: int, rng: random.Random) -> list[CorpusPiece]:
        """n pieces of the corpus drawn at random (all of them when there are fewer)."""
        pieces = self.corpus_pieces(held_out=False)
        return rng.sample(pieces, min(n, len(pieces)))
