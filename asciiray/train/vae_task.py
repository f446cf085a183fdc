"""The ASCII-art VAE as a `Task` of the shared training loop: its model, batches, loss and metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from asciiray import config
from asciiray.charset import pair_text
from asciiray.train.job import Job
from asciiray.train.loop import Task
from asciiray.train.options import TrainConfig


class VAETask(Task):
    """The VAE on the run's corpus: cross entropy, KL and the optional image and where terms, scored by ink_f1."""

    shown_metrics = ("loss", "ce", "kl", "kl_map", "image", "char_acc", "ink_f1", "ink_ratio", "near_collapse")

    def __init__(self, job: Job, device: torch.device) -> None:
        super().__init__(job, device)
        from asciiray import data
        from asciiray.losses import char_weights
        from asciiray.models import make_renderer

        loss = self.cfg.loss
        self.model_config = model_config(self.cfg)
        # Ray Data materialised the corpus (asciiray.data.datasets): its grids fit in memory.
        plan = job.plan
        self.keeps_shards = plan is not None and ((plan.train + plan.val) * self.model_config.grid ** 2
                                                  <= data.MATERIALIZE_BYTES)
        self.weight = char_weights(torch.tensor(plan.char_freq), loss.char_weights_scaling, loss.space_deemph,
                                   torch.tensor(plan.grid_counts(self.model_config.grid))).to(device)
        self.renderer = make_renderer(loss.renderer, loss.font_res, loss.font_zoom).to(device)
        self.renderer.requires_grad_(False).eval()
        self.sample: torch.Tensor | None = None
        # The loss terms and metric sums of the decoder's output; torch.compile'd under --compile.
        self.terms = self.loss_terms
        # Without the image and where terms nothing reads the log-probabilities, so on a CPU a 1x1 head conv is
        # applied inside the cross entropy (asciiray.train.head_loss), whose chunks a GPU would run as hundreds of
        # small kernels; a compiled step fuses its own tail instead.
        self.fused_head = loss.image_recon_loss_coeff == 0 and not loss.where_coeff and device.type == "cpu"
        self.tau: tuple[int, torch.Tensor] | None = None

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
        from asciiray.charset import NUM_CHARS
        from asciiray.train import head_loss

        head = unwrapped(model).decoder[-1]
        if self.fused_head and head_loss.applies(head):
            out = model(codes, head=False)
            ce, pred = head_loss.head_cross_entropy(out[0], head, codes, NUM_CHARS, self.weight,
                                                    self.cfg.loss.ce_label_smoothing)
            return self.loss_terms(out, codes, self.tau_of(epoch), ce, pred)
        return self.terms(model(codes), codes, self.tau_of(epoch))

    def tau_of(self, epoch: int) -> torch.Tensor:
        """The epoch's Gumbel tau as a 0-dim tensor on the device, made once per epoch (a fill, not a host
        copy), so a compiled loss sees a new value rather than a new constant and does not recompile."""
        from asciiray.losses import gumbel_tau

        if self.tau is None or self.tau[0] != epoch:
            self.tau = (epoch, torch.full((), gumbel_tau(epoch, self.cfg.loss.gumbel_tau_r), device=self.device))
        return self.tau[1]

    def loss_terms(self, out: tuple[torch.Tensor, torch.Tensor, torch.Tensor], codes: torch.Tensor,
                   tau: torch.Tensor, ce: torch.Tensor | None = None,
                   pred: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss and metric sums of the model's output (logp, mu, logvar) for input codes; `ce` and the
        predicted codes `pred` when the fused head computed them (out[0] is then the head's input)."""
        from asciiray.losses import compute_losses, where_loss
        from asciiray.metrics import metric_pair, prediction_sums

        loss = self.cfg.loss
        terms = compute_losses(out, codes, weight=self.weight, label_smoothing=loss.ce_label_smoothing,
                               renderer=self.renderer, tau=tau, kl_coeff=loss.kl_coeff,
                               ce_recon_loss_scale=loss.ce_recon_loss_scale,
                               image_recon_loss_coeff=loss.image_recon_loss_coeff, image_kind=loss.image_loss,
                               global_dims=self.model_config.z_dim, kl_map_coeff=loss.kl_map_coeff, ce=ce)
        if loss.where_coeff:
            terms["where"] = where_loss(out[0], codes)
            terms["loss"] = terms["loss"] + loss.where_coeff * terms["where"]
        stats = {k: metric_pair(v.detach().double() * len(codes), len(codes)) for k, v in terms.items()}
        stats.update(prediction_sums(out[0].detach().argmax(dim=1) if pred is None else pred, codes))
        return terms["loss"], stats

    def compiled(self, model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
        # The values that change during a run (tau) reach the compiled loss as tensors.
        self.terms = torch.compile(self.loss_terms, backend=backend)
        self.fused_head = False
        return super().compiled(model, backend)

    def epoch_values(self, epoch: int) -> dict[str, float]:
        from asciiray.losses import gumbel_tau

        return {"tau": gumbel_tau(epoch, self.cfg.loss.gumbel_tau_r)}

    def show(self, model: torch.nn.Module, writer: Any, epoch: int) -> str | None:
        if self.sample is None:
            return None
        from asciiray.pictures import pairs_picture

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

    def initial_weights(self, model: torch.nn.Module) -> None:
        if self.cfg.model.init_from:
            from asciiray import checkpoint

            with checkpoint.opened(self.cfg.model.init_from) as d:
                checkpoint.load_weights(d, model)

    def meta(self) -> dict[str, Any]:
        return {"kind": "vae", "preset": self.cfg.model.preset, "model": dataclasses.asdict(self.model_config),
                "corpus": self.cfg.data.corpus, "char_freq": self.job.plan.char_freq,
                "config": config.to_dict(self.cfg)}


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def model_config(cfg: TrainConfig) -> Any:
    """The run's VAE sizes: its preset, with the head padded under --pad-head and --init-std's init."""
    from asciiray.models import get_preset

    init = {"init_std": cfg.model.init_std} if cfg.model.init_std is not None else {}
    return get_preset(cfg.model.preset, pad_head=cfg.model.pad_head, **init)
