"""Training the ASCII-art VAE: its Task for the shared loop, and its driver."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from asciiray.charset import pair_text
from asciiray import config
from asciiray.train.job import Job
from asciiray.train.loop import Task
from asciiray.train.options import TrainConfig

log = logging.getLogger(__name__)

# The metric that ranks a run's checkpoints (--keep-checkpoints keeps the best): the headline quality figure.
CHECKPOINT_SCORE = ("val/ink_f1", "max")


class VAETask(Task):
    shown_metrics = ("loss", "ce", "kl", "image", "char_acc", "ink_f1", "ink_ratio", "near_collapse")

    def __init__(self, job: Job, device: torch.device) -> None:
        super().__init__(job, device)
        from asciiray.losses import char_weights
        from asciiray.models import get_preset, make_renderer

        loss = self.cfg.loss
        self.model_config = get_preset(self.cfg.model.preset)
        self.weight = char_weights(torch.tensor(job.plan.char_freq), loss.char_weights_scaling,
                                   loss.space_deemph).to(device)
        self.renderer = make_renderer(loss.renderer, loss.font_res, loss.font_zoom).to(device)
        self.renderer.requires_grad_(False).eval()
        self.display = make_renderer("discrete", loss.font_res, loss.font_zoom).to(device)
        self.sample: torch.Tensor | None = None

    def build_model(self) -> torch.nn.Module:
        from asciiray.models import VAE

        model = VAE(self.model_config)
        if self.cfg.model.output_prior:
            model.init_output_prior(torch.tensor(self.job.plan.grid_counts(self.model_config.grid)))
        return model

    def batches(self, split: str, epoch: int) -> Iterator[torch.Tensor]:
        from asciiray.losses import random_roll

        training = split == "train"
        for codes in self.shard_codes(split):
            if training and len(codes) < 2:
                # BatchNorm has no variance to estimate from one piece (BatchNorm1d refuses it); the shards
                # are equal, so every worker skips its last batch alike and DDP stays in step.
                continue
            if training and self.cfg.loss.roll_std > 0:
                codes = random_roll(codes, self.cfg.loss.roll_std)
            if not training and self.sample is None:
                self.sample = codes[:1]
            yield codes

    def step(self, model: torch.nn.Module, codes: torch.Tensor, epoch: int):
        from asciiray.losses import compute_losses, gumbel_tau
        from asciiray.metrics import metric_pair, reconstruction_sums

        loss = self.cfg.loss
        logp, mu, logvar = model(codes)
        terms = compute_losses((logp, mu, logvar), codes, weight=self.weight,
                               label_smoothing=loss.ce_label_smoothing, renderer=self.renderer,
                               tau=gumbel_tau(epoch, loss.gumbel_tau_r), kl_coeff=loss.kl_coeff,
                               ce_recon_loss_scale=loss.ce_recon_loss_scale,
                               image_recon_loss_coeff=loss.image_recon_loss_coeff, image_kind=loss.image_loss)
        stats = {k: metric_pair(v.detach().double() * len(codes), len(codes)) for k, v in terms.items()}
        stats.update(reconstruction_sums(logp.detach(), codes))
        return terms["loss"], stats

    def epoch_values(self, epoch: int) -> dict[str, float]:
        from asciiray.losses import gumbel_tau

        return {"tau": gumbel_tau(epoch, self.cfg.loss.gumbel_tau_r)}

    def show(self, model: torch.nn.Module, writer: Any, epoch: int) -> str | None:
        if self.sample is None:
            return None
        from asciiray.render import pair_image

        model.eval()
        with torch.no_grad():
            logp, _, _ = model(self.sample)
        recon = logp.argmax(1)[0]
        text = pair_text(self.sample[0].cpu().numpy(), recon.cpu().numpy())
        if writer is not None:
            image = pair_image(self.sample[0], recon, self.display.atlas)
            writer.add_image("val/input_reconstruction", image, epoch, dataformats="HW")
            writer.add_text("val/input_reconstruction", "    " + text.replace("\n", "\n    "), epoch)
        return text

    def meta(self) -> dict[str, Any]:
        return {"kind": "vae", "preset": self.cfg.model.preset, "model": dataclasses.asdict(self.model_config),
                "corpus": self.cfg.data.corpus, "char_freq": self.job.plan.char_freq,
                "config": config.to_dict(self.cfg)}


def train_func(loop_config: dict[str, Any]) -> None:
    """The Ray Train per-worker entry point."""
    from asciiray.train.loop import run

    run(VAETask, loop_config["job"])


def train(cfg: TrainConfig, explicit: set[str] = frozenset(), callbacks: Sequence[Any] = ()) -> Any:
    """Check everything that can be checked on the driver, then train; returns Ray's Result."""
    from asciiray.models import get_preset, make_renderer
    from asciiray.train import runner

    def check(cfg: TrainConfig) -> int:
        """A neural --renderer of other sizes than the run's fails here, not in a worker; the grid side."""
        loss, grid = cfg.loss, get_preset(cfg.model.preset).grid
        make_renderer(loss.renderer, loss.font_res, loss.font_zoom, grid=grid)
        return grid

    cfg, plan = runner.prepare(cfg, "vae", check, explicit)
    datasets = runner.corpus_datasets(cfg, plan, get_preset(cfg.model.preset).grid)
    return runner.launch(train_func, cfg, "vae", plan, datasets, CHECKPOINT_SCORE, callbacks)


def load(uri_or_dir: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained VAE and its metadata from a checkpoint (local or S3), in eval mode."""
    from asciiray.errors import UserError
    from asciiray.models import VAE, VAEConfig
    from asciiray.train import checkpoint

    with checkpoint.opened(uri_or_dir) as d:
        meta = checkpoint.load_meta(d)
        if meta.get("kind") != "vae":
            raise UserError(f"{uri_or_dir} is a {meta.get('kind')} checkpoint, not a VAE checkpoint")
        model = VAE(VAEConfig(**meta["model"]))
        checkpoint.load_weights(d, model)
    return model.to(device).eval(), meta


def reconstruct(model: torch.nn.Module, codes: np.ndarray) -> np.ndarray:
    """Deterministic reconstructions (z = mu) of code grids [N, S, S], as code grids."""
    device = next(model.parameters()).device
    with torch.no_grad():
        logp, _, _ = model.eval()(torch.from_numpy(codes).to(device))
    return logp.argmax(1).to(torch.uint8).cpu().numpy()


def score_checkpoint(uri_or_dir: str, n: int = 0, batch_size: int = 256,
                     device: str | torch.device = "cpu") -> dict[str, float]:
    """Every metric of `asciiray.metrics` for a checkpoint (z = mu) on its run's validation pieces.

    The pieces are those its run validated on (same corpus, split and --max-pieces
    sample), the first `n` of them in id order (0: all), so the figures match the
    run's own final val/ ones.
    """
    from asciiray import charset, data
    from asciiray.metrics import score

    model, meta = load(uri_or_dir, device)
    grid, cfg = model.cfg.grid, meta["config"]["data"]
    texts = data.validation_pieces(meta["corpus"], grid, cfg["validation_prop"], n, cfg["max_pieces"])
    codes = torch.from_numpy(np.stack([charset.encode(t, grid) for t in texts])).to(device)
    return score(model, codes.split(batch_size))
