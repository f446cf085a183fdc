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
from asciiray.errors import UserError
from asciiray.train.job import Job
from asciiray.train.loop import Task
from asciiray.train.options import TrainConfig

log = logging.getLogger(__name__)

# The metric that ranks a run's checkpoints (--keep-checkpoints keeps the best): the headline quality figure.
CHECKPOINT_SCORE = ("val/ink_f1", "max")


class VAETask(Task):
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
        self.weight = char_weights(torch.tensor(job.plan.char_freq), loss.char_weights_scaling,
                                   loss.space_deemph).to(device)
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
        loss, grid = cfg.loss, model_config(cfg).grid
        make_renderer(loss.renderer, loss.font_res, loss.font_zoom, grid=grid)
        return grid

    if cfg.model.init_from:
        if cfg.checkpoint.resume:
            raise UserError("--init-from starts a new run from a checkpoint's weights and --resume continues a run: "
                            "drop one of them")
        cfg = config.replace(cfg, init_from=check_init_from(cfg.model.init_from, model_config(cfg)))
    cfg, plan = runner.prepare(cfg, "vae", check, explicit)
    if cfg.optim.learning_rate == "auto":
        test = find_learning_rate(cfg, plan)
        log.info("--learning-rate auto: lr-find suggests %.3g (range test of %d steps from %g to %g); training "
                 "with it", test.suggestion, len(test.lrs), test.min_lr, test.max_lr)
        cfg = config.replace(cfg, learning_rate=test.suggestion)
        runner.write_record(cfg, "vae")
    datasets = runner.corpus_datasets(cfg, plan, get_preset(cfg.model.preset).grid)
    return runner.launch(train_func, cfg, "vae", plan, datasets, CHECKPOINT_SCORE, callbacks)


def check_init_from(uri: str, model_config: Any) -> str:
    """The checkpoint --init-from names (a run directory's latest), checked against the run's model on the driver.

    A renderer checkpoint, another grid size or other shapes are one-line errors before Ray starts.
    """
    from asciiray import checkpoint, pretrained, storage
    from asciiray.models import VAE

    uri = pretrained.resolve(uri)
    if not storage.exists(uri):
        raise UserError(f"--init-from {uri} does not exist: pass a VAE checkpoint, run directory or exported model")
    uri = checkpoint.resolve(uri)
    with checkpoint.opened(uri) as d:
        meta = checkpoint.load_meta(d)
        if meta.get("kind") != "vae":
            raise UserError(f"--init-from {uri} is a {meta.get('kind')} checkpoint: pass a VAE checkpoint "
                            f"(from `asciiray train`)")
        grid = meta["model"]["grid"]
        if grid != model_config.grid:
            raise UserError(f"--init-from {uri} was trained on {grid}x{grid} grids, this run's preset on "
                            f"{model_config.grid}x{model_config.grid}: pass --preset {meta.get('preset')} or "
                            f"another checkpoint")
        try:
            checkpoint.load_weights(d, VAE(model_config))
        except UserError as exc:
            raise UserError(f"--init-from: {exc}; pass --preset {meta.get('preset')}") from None
    return uri


def find_learning_rate(cfg: TrainConfig, plan: Any = None, min_lr: float = 1e-6, max_lr: float = 1.0,
                       steps: int = 200) -> Any:
    """`lr_find.range_test` of the VAE's own loss on the run's training pieces, in this process (no Ray).

    The model starts as the run would (its preset, its seed, --init-from); the batches are the run's
    --batch-size, drawn at random from its training pieces. Without a `plan` (`asciiray lr-find`), the
    corpus is planned here and must be a built one.
    """
    from asciiray import charset, corpus, data
    from asciiray.models import get_preset
    from asciiray.train import lr_find

    lr_find.check_range(min_lr, max_lr, steps)
    grid = get_preset(cfg.model.preset).grid
    if plan is None:
        uri, max_pieces = data.source(cfg.data.corpus, cfg.data.max_pieces)
        if not corpus.is_corpus(uri):
            raise UserError(f"--corpus {uri} is not a built corpus: build it with `asciiray corpus build` first")
        if cfg.model.init_from:
            cfg = config.replace(cfg, init_from=check_init_from(cfg.model.init_from, model_config(cfg)))
        cfg = config.replace(cfg, corpus=uri, max_pieces=max_pieces)
        plan = data.plan(uri, grid, cfg.data.validation_prop, max_pieces)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    texts = data.fitting_pieces(plan.uri, grid, cfg.data.validation_prop, cfg.data.max_pieces or 0,
                                training=True)["text"].to_pylist()
    grids = torch.from_numpy(charset.encode_many(texts, grid))
    torch.manual_seed(cfg.optim.seed)
    task = LocalVAETask(Job(kind="vae", cfg=cfg, run_uri="", precision="32", plan=plan), device, grids)
    model = task.build_model().to(device)
    task.initial_weights(model)
    return lr_find.range_test(lambda m, codes: task.step(m, codes, 0)[0], model, iter(task.batches("train", 0)),
                              min_lr, max_lr, steps, cfg.optim.grad_clip)


class LocalVAETask(VAETask):
    """The VAE task on grids held in this process: endless random batches instead of the run's Ray shards."""

    def __init__(self, job: Job, device: torch.device, grids: torch.Tensor) -> None:
        super().__init__(job, device)
        self.grids = grids

    def shard_codes(self, split: str) -> Iterator[torch.Tensor]:
        size = min(self.cfg.data.batch_size, len(self.grids))
        while True:
            for index in torch.randperm(len(self.grids)).split(size):
                yield self.grids[index].to(self.device)

