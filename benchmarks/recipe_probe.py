"""Probe a training recipe quickly: the VAE's own step in one process, no Ray, scored on train and validation.

For exploring recipes and architectures on a CPU before a real run
(`benchmarks/model_quality.py` measures the real command). The step is the
loop's own `TrainStep` (as in `gpu_check.py`); batches are drawn
at random from the run's training pieces (as `asciiray lr-find` draws them);
the learning-rate schedule is the run's. Prints one JSON line: steps, CPU
seconds per sample (one thread, so loaded machines compare), val and train
ink metrics (z = mu) and a validation curve at each quarter of the steps.

Options are the run's own config keys (`key=value`, flat names as in a
config file); `model.FIELD=JSON` overrides a field of the preset's VAEConfig:

    .venv/bin/python benchmarks/recipe_probe.py epochs=10
    .venv/bin/python benchmarks/recipe_probe.py epochs=10 'model.decoder_upsample="bilinear"'
    .venv/bin/python benchmarks/recipe_probe.py max_pieces=100 epochs=200 batch_size=32 kl_coeff=0 roll_std=0
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext

import torch

from asciiray import charset, data
from asciiray.embedded import DEFAULT_CORPUS
from asciiray.metrics import score
from asciiray.models import get_preset
from asciiray.train import schedule
from asciiray.train.step import TrainStep, make_adam
from asciiray.train.vae import LocalVAETask
from gpu_check import vae_setup  # this directory's


def value(text: str) -> object:
    """A JSON value, or the text itself (so `lr_schedule=cosine` needs no quotes)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    pairs = dict(arg.split("=", 1) for arg in sys.argv[1:])
    epochs = float(pairs.pop("epochs", "10"))
    model_fields = {k.removeprefix("model."): json.loads(v) for k, v in pairs.items() if k.startswith("model.")}
    options = {"corpus": DEFAULT_CORPUS, "max_pieces": 3000, "storage_path": "unused", "run_name": "probe",
               **{k: value(v) for k, v in pairs.items() if not k.startswith("model.")}}
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
    total = max(1, round(epochs * steps_per_epoch))
    batches, curve = iter(task.batches("train", 0)), []
    started = time.process_time()
    for step in range(total):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = schedule.learning_rate(cfg.optim.learning_rate, step, total, cfg.optim.lr_schedule,
                                                 cfg.optim.lr_warmup)
        train_step(next(batches), step // steps_per_epoch)
        if (step + 1) % max(1, total // 4) == 0:
            with torch.no_grad():
                s = score(model, val.split(256))
            curve.append([step + 1, round(s["ink_f1"], 3), round(s["ink_ratio"], 2), round(s["near_collapse"], 3)])
    seconds = time.process_time() - started
    with torch.no_grad():
        val_scores, train_scores = score(model, val.split(256)), score(model, grids[:512].split(256))
    print(json.dumps({
        "args": sys.argv[1:], "steps": total, "epochs": epochs, "train_pieces": len(grids), "val_pieces": len(val),
        "cpu_ms_per_sample": round(1000 * seconds / total / cfg.data.batch_size, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        **{f"val_{k}": round(v, 3) for k, v in val_scores.items() if k != "nonspace_acc"},
        "train_ink_f1": round(train_scores["ink_f1"], 3), "curve (step, val ink_f1, ink_ratio, near_collapse)": curve,
    }))


if __name__ == "__main__":
    main()
