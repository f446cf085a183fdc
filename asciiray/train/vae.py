"""Training the ASCII-art VAE from the driver: checks before Ray starts, lr-find, and the run itself."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from asciiray import config
from asciiray.errors import UserError
from asciiray.train.job import Job
from asciiray.train.local import LocalVAETask
from asciiray.train.options import TrainConfig
from asciiray.train.vae_task import VAETask, model_config

log = logging.getLogger(__name__)

# The metric that ranks a run's checkpoints (--keep-checkpoints keeps the best): the headline quality figure.
CHECKPOINT_SCORE = ("val/ink_f1", "max")


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
