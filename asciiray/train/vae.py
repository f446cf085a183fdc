"""Training the ASCII-art VAE: its Task for the shared loop, and its driver."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from asciiray import config
from asciiray.charset import pair_text
from asciiray.train.job import Job
from asciiray.train.loop import Task
from asciiray.train.options import TrainConfig

log = logging.getLogger(__name__)

# The metric that ranks a run's checkpoints (--keep-checkpoints keeps the best): the headline quality figure.
CHECKPOINT_SCORE = ("val/ink_f1", "max")


class VAETask(Task):
    shown_metrics = ("loss", "ce", "kl", "image", "char_acc", "nonspace_acc", "space_collapse")

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
        self.sample: torch.Tensor | None = None

    def build_model(self) -> torch.nn.Module:
        from asciiray.models import VAE

        return VAE(self.model_config)

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
        from asciiray.render import pairs_picture

        model.eval()
        with torch.no_grad():
            logp, _, _ = model(self.sample)
        pair = np.stack([self.sample[0].cpu().numpy(), logp.argmax(1)[0].cpu().numpy()])
        text = pair_text(pair[0], pair[1])
        if writer is not None:
            writer.add_image("val/input_reconstruction", np.asarray(pairs_picture(pair[:1], pair[1:])), epoch,
                             dataformats="HW")
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
