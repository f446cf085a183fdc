"""The convolutional VAE of S x S character grids, and its size presets.

Encoder: one-hot [B, 95, S, S] -> stride-2 convs (ReLU + BatchNorm) -> flatten
-> linear heads for mu and a clamped log-variance. Decoder: linear -> C x n x n
-> bilinear-upsample + conv blocks up to S x S -> head convs to 95 logits.
Every size is a field of `VAEConfig`, so a checkpoint's `meta.json` rebuilds
its model exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from asciiray import config
from asciiray.charset import DEFAULT_GRID, NUM_CHARS
from asciiray.config import option
from asciiray.errors import UserError
from asciiray.render import one_hot


@dataclass
class VAEConfig:
    """Every size of the model; validated on construction."""

    grid: int = option(DEFAULT_GRID, "side S of the S x S character grid")
    z_dim: int = option(512, "size of the latent vector")
    kernel: int = option(5, "kernel size of the encoder and decoder convs (odd)")
    embed_dim: int = option(0, "0: the encoder's first conv reads the one-hot grid; n: it reads a learned "
                               "n-dim embedding of each character (a cheap, bias-free 1x1 conv on the one-hot)")
    encoder_channels: list[int] = option([32, 64, 128, 256], "output channels of the stride-2 encoder convs")
    decoder_start: int = option(8, "spatial size the decoder's linear layer unflattens to")
    decoder_start_channels: int = option(8, "channels the decoder's linear layer unflattens to")
    decoder_sizes: list[int] = option([12, 16, 32, 64], "spatial size after each upsample + conv block")
    decoder_channels: list[int] = option([64, 64, 64, 64], "output channels of each upsample + conv block")
    head_channels: list[int] = option([NUM_CHARS, NUM_CHARS], "output channels of the head convs; last is 95")
    head_kernel: int = option(5, "kernel size of the head convs (odd)")
    logvar_min: float = option(-10.0, "lower clamp of the encoder's log-variance")
    logvar_max: float = option(10.0, "upper clamp of the encoder's log-variance")

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
        if self.decoder_sizes[-1] != self.grid:
            raise bad(f"the last of decoder_sizes {self.decoder_sizes} must equal grid = {self.grid}")
        if self.head_channels[-1] != NUM_CHARS:
            raise bad(f"the last of head_channels {self.head_channels} must be {NUM_CHARS}, one per character")
        if self.logvar_min >= self.logvar_max:
            raise bad(f"logvar_min = {self.logvar_min} must be below logvar_max = {self.logvar_max}")

    def encoder_size(self) -> int:
        """Spatial side of the encoder's last feature map (each conv halves it, rounding up)."""
        size = self.grid
        for _ in self.encoder_channels:
            size = (size - 1) // 2 + 1
        return size


PRESETS: dict[str, VAEConfig] = {
    # The prototype's shapes: z = 512, 5x5 kernels, 8x8x8 -> 12 -> 16 -> 32 -> 64, conv 64->95, conv 95->95.
    "seed": VAEConfig(),
    # Trains on 2 CPU cores: characters enter through an embedding, and the 64 x 64 layers stay narrow,
    # because the 95 x 64 x 64 logits and their log-softmax already dominate a step.
    "small": VAEConfig(z_dim=64, kernel=3, embed_dim=8, encoder_channels=[16, 32, 32, 64], decoder_start=8,
                       decoder_start_channels=16, decoder_sizes=[16, 32, 64], decoder_channels=[32, 16, 8],
                       head_channels=[NUM_CHARS], head_kernel=1),
    # A 16 x 16 grid for tests.
    "tiny": VAEConfig(grid=16, z_dim=16, kernel=3, encoder_channels=[8, 16], decoder_start=4,
                      decoder_start_channels=8, decoder_sizes=[8, 16], decoder_channels=[16, 16],
                      head_channels=[NUM_CHARS], head_kernel=1),
}


def get_preset(name: str, **overrides: object) -> VAEConfig:
    """A fresh copy of a preset, with some fields replaced."""
    return config.from_preset(PRESETS, name, "model", **overrides)


def log_softmax_chars(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the 95 characters (dim 1) without copying channels-last logits."""
    if logits.is_contiguous():
        return F.log_softmax(logits, dim=1)
    return F.log_softmax(logits.permute(0, 2, 3, 1), dim=-1).permute(0, 3, 1, 2)


class VAE(nn.Module):
    """Variational autoencoder of code grids; forward returns fp32 log-probabilities."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        pad = cfg.kernel // 2
        # A lookup equals a bias-free 1x1 conv on the one-hot, without its 95 channels.
        self.embed = nn.Embedding(NUM_CHARS, cfg.embed_dim) if cfg.embed_dim else None
        layers: list[nn.Module] = []
        channels = cfg.embed_dim or NUM_CHARS
        for out in cfg.encoder_channels:
            layers += [nn.Conv2d(channels, out, cfg.kernel, stride=2, padding=pad), nn.ReLU(), nn.BatchNorm2d(out)]
            channels = out
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        flat = channels * cfg.encoder_size() ** 2
        self.mu = nn.Linear(flat, cfg.z_dim)
        self.logvar = nn.Linear(flat, cfg.z_dim)

        start = cfg.decoder_start_channels * cfg.decoder_start ** 2
        self.expand = nn.Sequential(nn.Linear(cfg.z_dim, start),
                                    nn.Unflatten(1, (cfg.decoder_start_channels, cfg.decoder_start,
                                                     cfg.decoder_start)))
        layers = []
        channels = cfg.decoder_start_channels
        for size, out in zip(cfg.decoder_sizes, cfg.decoder_channels):
            layers += [nn.Upsample(size=(size, size), mode="bilinear", align_corners=False),
                       nn.Conv2d(channels, out, cfg.kernel, padding=pad), nn.ReLU(), nn.BatchNorm2d(out)]
            channels = out
        for i, out in enumerate(cfg.head_channels):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Conv2d(channels, out, cfg.head_kernel, padding=cfg.head_kernel // 2))
            channels = out
        self.decoder = nn.Sequential(*layers)

    def _check(self, codes: torch.Tensor) -> None:
        s = self.cfg.grid
        if codes.dim() != 3 or tuple(codes.shape[1:]) != (s, s):
            raise ValueError(f"expected codes of shape [B, {s}, {s}], got {list(codes.shape)}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"expected integer character codes (uint8 or long), got {codes.dtype}")

    def encode(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, clamped log-variance) [B, z], fp32, of integer code grids [B, S, S]."""
        self._check(codes)
        x = one_hot(codes) if self.embed is None else self.embed(codes.long()).permute(0, 3, 1, 2)
        h = self.encoder(x)
        logvar = self.logvar(h).float().clamp(self.cfg.logvar_min, self.cfg.logvar_max)
        return self.mu(h).float(), logvar

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """A sample of N(mu, exp(logvar)) that gradients flow through."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Character logits [B, 95, S, S] (in the autocast dtype, if any) of latents [B, z].

        The decoder runs channels-last, like the encoder, so the logits come out
        with their 95 characters contiguous for the softmax and the losses.
        """
        return self.decoder(self.expand(z).contiguous(memory_format=torch.channels_last))

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fp32 log-probabilities [B, 95, S, S], mu, logvar); eval mode decodes z = mu."""
        mu, logvar = self.encode(codes)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return log_softmax_chars(self.decode(z).float()), mu, logvar

    @classmethod
    def from_checkpoint(cls, uri: str, device: torch.device | str = "cpu") -> VAE:
        """A trained VAE in eval mode from a checkpoint, a run (its latest checkpoint) or an exported model,
        local or s3://; its sizes come from the checkpoint, its weights from safetensors."""
        from asciiray import checkpoint

        model = checkpoint.load_model(uri, "vae", lambda model: cls(VAEConfig(**model)),
                                      "pass a run or checkpoint of `asciiray train`, or a model of `asciiray export`")
        return model.to(device).eval()

    @torch.no_grad()
    def sample(self, n: int, device: torch.device | str | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """fp32 log-probabilities [n, 95, S, S] decoded from z ~ N(0, I); call in eval mode."""
        device = device if device is not None else next(self.parameters()).device
        z = torch.randn(n, self.cfg.z_dim, device=device, generator=generator)
        return log_softmax_chars(self.decode(z).float())


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of a model."""
    return sum(p.numel() for p in model.parameters())


def describe(name: str) -> str:
    """One line about a preset: its name, grid, latent size and parameter count."""
    cfg = get_preset(name)
    return f"{name}: grid {cfg.grid}x{cfg.grid}, z {cfg.z_dim}, {count_parameters(VAE(cfg)):,} parameters"
