"""Probe a training recipe quickly: the VAE's own step in one process, no Ray, scored on train and validation.

For exploring recipes and architectures on a CPU before a real run
(`benchmarks/model_quality.py` measures the real command). The step is the
loop's own `TrainStep` (as in `gpu_check.py`); batches are drawn
at random from the run's training pieces (as `asciiray lr-find` draws them);
the learning-rate schedule is the run's. Prints one JSON line: steps, CPU
seconds per sample (one thread, so loaded machines compare), val and train
ink metrics (z = mu) and a validation curve at each quarter of the steps.

Options are the run's own config keys (`key=value`, flat names as in a
config file); `model.FIELD=JSON` overrides a field of the preset's VAEConfig;
`steps=N` sets the budget in steps instead of `epochs`; a `corpus` that is a
folder of .txt files is built into a temporary corpus first, as `asciiray
train` builds it:

    .venv/bin/python benchmarks/recipe_probe.py epochs=10
    .venv/bin/python benchmarks/recipe_probe.py epochs=10 'model.decoder_upsample="bilinear"'
    .venv/bin/python benchmarks/recipe_probe.py max_pieces=100 epochs=200 batch_size=32 kl_coeff=0 roll_std=0
    .venv/bin/python benchmarks/recipe_probe.py corpus=benchmarks/data/realart steps=430
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from asciiray import charset, corpus, data
from asciiray.embedded import DEFAULT_CORPUS
from asciiray.metrics import score
from asciiray.models import get_preset
from asciiray.train import schedule
from asciiray.train.local import LocalVAETask
from asciiray.train.options import DEFAULT_MAX_STEPS
from asciiray.train.step import TrainStep, make_adam
from gpu_check import vae_setup  # this directory's


def value(text: str) -> object:
    """A JSON value, or the text itself (so `lr_schedule=cosine` needs no quotes)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        return
    if bad := [arg for arg in sys.argv[1:] if "=" not in arg]:
        raise SystemExit(f"recipe_probe: {bad[0]!r} is not key=value; see --help")
    pairs = dict(arg.split("=", 1) for arg in sys.argv[1:])
    epochs = float(pairs.pop("epochs")) if "epochs" in pairs else None
    steps = int(pairs.pop("steps")) if "steps" in pairs else None
    model_fields = {k.removeprefix("model."): json.loads(v) for k, v in pairs.items() if k.startswith("model.")}
    options = {k: value(v) for k, v in pairs.items() if not k.startswith("model.")}
    run = train(options, model_fields, epochs, steps)
    with torch.no_grad():
        val_scores, train_scores = score(run.model, run.val.split(256)), score(run.model, run.grids[:512].split(256))
    print(json.dumps({
        "args": sys.argv[1:], "steps": run.steps, "epochs": round(run.epochs, 2), "train_pieces": len(run.grids),
        "val_pieces": len(run.val), "cpu_ms_per_sample": round(1000 * run.cpu_seconds / run.steps / run.batch_size, 2),
        "parameters": sum(p.numel() for p in run.model.parameters()),
        **{f"val_{k}": round(v, 3) for k, v in val_scores.items() if k != "nonspace_acc"},
        "train_ink_f1": round(train_scores["ink_f1"], 3),
        "curve (step, val ink_f1, ink_ratio, near_collapse)": run.curve,
    }))


@dataclass
class Probe:
    """A recipe trained in-process: the model, its pieces (uint8 grids) and what the training cost."""

    model: torch.nn.Module
    grids: torch.Tensor
    val: torch.Tensor
    steps: int
    epochs: float
    batch_size: int
    cpu_seconds: float
    curve: list[list[float]]


def train(options: dict[str, object], model_fields: dict[str, object] | None = None, epochs: float | None = None,
          steps: int | None = None, points: int = 4) -> Probe:
    """Train the recipe of `options` (flat config keys) for `steps`, or else `epochs` (default: the config's
    budget: its n_epochs, else its max_steps, else the default step budget), on one thread.

    The model is the preset's with `model_fields` laid over it; the validation curve is scored at
    `points` evenly spaced steps. A `corpus` that is a folder of .txt files is built first, as
    `asciiray train` builds it.
    """
    options = {"corpus": DEFAULT_CORPUS, "storage_path": "unused", "run_name": "probe", **options}
    with tempfile.TemporaryDirectory() as scratch:
        if not corpus.is_corpus(str(options["corpus"])):
            corpus.build_from(str(options["corpus"]), scratch)
            options["corpus"] = scratch
        return _train(options, model_fields or {}, epochs, steps, points)


def _train(options: dict[str, object], model_fields: dict[str, object], epochs: float | None, steps: int | None,
           points: int) -> Probe:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    cfg, job, grids = vae_setup(options, "32")
    model_config = get_preset(cfg.model.preset, **model_fields)
    val = torch.from_numpy(charset.encode_many(data.validation_pieces(
        cfg.data.corpus, model_config.grid, cfg.data.validation_prop, 0, cfg.data.max_pieces), model_config.grid))

    torch.manual_seed(cfg.optim.seed)
    task = LocalVAETask(job, device, grids)
    task.model_config = model_config
    model = task.build_model()
    optimizer = make_adam(list(model.parameters()), cfg.optim.learning_rate, device)
    train_step = TrainStep(task.step, model, optimizer, torch.amp.GradScaler("cpu", enabled=False),
                           cfg.optim.grad_clip, nullcontext, device)
    steps_per_epoch = -(-len(grids) // cfg.data.batch_size)
    epochs = epochs or cfg.optim.n_epochs
    total = steps or (max(1, round(epochs * steps_per_epoch)) if epochs else cfg.optim.max_steps or DEFAULT_MAX_STEPS)
    batches, curve = iter(task.batches("train", 0)), []
    started = time.process_time()
    for step in range(total):
        model.train()
        schedule.set_learning_rate(optimizer, cfg.optim, step, total)
        train_step(next(batches), step // steps_per_epoch)
        if points and (step + 1) % max(1, total // points) == 0:
            with torch.no_grad():
                s = score(model, val.split(256))
            curve.append([step + 1, round(s["ink_f1"], 3), round(s["ink_ratio"], 2), round(s["near_collapse"], 3)])
    return Probe(model, grids, val, total, total / steps_per_epoch, cfg.data.batch_size,
                 time.process_time() - started, curve)


if __name__ == "__main__":
    main()
