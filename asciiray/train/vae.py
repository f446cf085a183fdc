"""Training the ASCII-art VAE: its options, its Task for the shared loop, and its driver."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from asciiray.charset import crop_texts, side_by_side
from asciiray.train.loop import Task
from asciiray.train.options import TrainConfig

log = logging.getLogger(__name__)


class VAETask(Task):
    name = "vae"

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(config, device)
        from asciiray.losses import char_weights
        from asciiray.models import get_preset
        from asciiray.train.renderer import make_renderer

        self.model_config = get_preset(config["preset"])
        self.weight = char_weights(torch.tensor(config["char_freq"]), config["char_weights_scaling"],
                                   config["space_deemph"]).to(device)
        self.renderer = make_renderer(config["renderer"], config["font_res"], config["font_zoom"]).to(device)
        self.renderer.requires_grad_(False).eval()
        self.sample: torch.Tensor | None = None

    def build_model(self) -> torch.nn.Module:
        from asciiray.models import VAE

        return VAE(self.model_config)

    def batches(self, split: str, epoch: int) -> Iterator[torch.Tensor]:
        from asciiray.losses import random_roll

        training = split == "train"
        for codes in self.shard_codes(split):
            if training and self.config["roll_std"] > 0:
                codes = random_roll(codes, self.config["roll_std"])
            if not training and self.sample is None:
                self.sample = codes[:1]
            yield codes

    def step(self, model: torch.nn.Module, codes: torch.Tensor, epoch: int):
        from asciiray.losses import compute_losses, gumbel_tau, reconstruction_sums

        logp, mu, logvar = model(codes)
        terms = compute_losses((logp, mu, logvar), codes, weight=self.weight,
                               label_smoothing=self.config["ce_label_smoothing"], renderer=self.renderer,
                               tau=gumbel_tau(epoch, self.config["gumbel_tau_r"]),
                               kl_coeff=self.config["kl_coeff"],
                               ce_recon_loss_scale=self.config["ce_recon_loss_scale"],
                               image_recon_loss_coeff=self.config["image_recon_loss_coeff"])
        n = codes.new_tensor(len(codes), dtype=torch.float64)
        stats = {k: torch.stack([v.detach().double() * n, n]) for k, v in terms.items()}
        stats.update(reconstruction_sums(logp.detach(), codes))
        return terms["loss"], stats

    def epoch_values(self, epoch: int) -> dict[str, float]:
        from asciiray.losses import gumbel_tau

        return {"tau": gumbel_tau(epoch, self.config["gumbel_tau_r"])}

    def show(self, model: torch.nn.Module, writer: Any, epoch: int) -> str | None:
        if self.sample is None:
            return None
        from asciiray.render import pairs_picture

        model.eval()
        with torch.no_grad():
            logp, _, _ = model(self.sample)
        pair = np.stack([self.sample[0].cpu().numpy(), logp.argmax(1)[0].cpu().numpy()])
        text = side_by_side(*crop_texts(pair))
        if writer is not None:
            writer.add_image("val/input_reconstruction", np.asarray(pairs_picture(pair[:1], pair[1:])), epoch,
                             dataformats="HW")
            writer.add_text("val/input_reconstruction", "    " + text.replace("\n", "\n    "), epoch)
        return text

    def meta(self) -> dict[str, Any]:
        return {"kind": "vae", "preset": self.config["preset"], "model": dataclasses.asdict(self.model_config),
                "corpus": self.config["corpus"], "char_freq": self.config["char_freq"],
                "config": {f.name: self.config[f.name] for f in dataclasses.fields(TrainConfig)}}


def train_func(config: dict[str, Any]) -> None:
    """The Ray Train per-worker entry point."""
    from asciiray.train.loop import run

    run(VAETask, config)


def train(cfg: TrainConfig, explicit: set[str] = frozenset(), callbacks: Sequence[Any] = ()) -> Any:
    """Check everything that can be checked on the driver, then train; returns Ray's Result."""
    from asciiray.models import get_preset
    from asciiray.train import runner
    from asciiray.train.renderer import make_renderer

    def check(cfg: TrainConfig) -> None:
        """A bad preset or --renderer (unknown, or a neural checkpoint of other sizes) fails here, not in a worker."""
        make_renderer(cfg.renderer, cfg.font_res, cfg.font_zoom, grid=get_preset(cfg.preset).grid)

    cfg = runner.prepare(cfg, "vae", explicit, check)
    plan, datasets = runner.corpus_datasets(cfg, get_preset(cfg.preset).grid)
    return runner.launch(train_func, cfg, {"char_freq": plan.char_freq}, datasets, callbacks)
