"""Learning curves: how a recipe's reconstructions improve with the samples it has trained on.

Each recipe trains in one process with the loop's own step (`TrainStep`, as
`recipe_probe.py` and `gpu_check.py` do), on random batches of the corpus's
training pieces, for a budget in samples; the learning-rate schedule spans the
whole budget. At log-spaced points it scores fixed sets of validation and
training pieces with `asciiray.metrics` (z = the posterior mean) and saves its
state, so a stopped run (`--time-limit`, a kill, a lost machine) resumes from
its last point when started again with the same arguments. At the end each
recipe's model is saved as a checkpoint the art commands load
(`OUT/<recipe>/checkpoint`), and the curves are written as a table
(`OUT/curves.md`) and one picture (`OUT/curves.png`: ink_f1 against samples
seen, log x, one line per recipe and split, then each recipe's reconstructions
of the same validation pieces).

A recipe is a built-in name (RECIPES), or `NAME:key=value,key=value` with the
run's config keys (flat, as in a config file) and `model.FIELD=JSON` for a
field of the preset's VAEConfig:

    .venv/bin/python benchmarks/learning_curve.py --samples 1000000 --out curves    # hours a recipe on 2 cores
    .venv/bin/python benchmarks/learning_curve.py --recipe default --recipe 'wide:model.decoder_channels=[32,32,32]'
    .venv/bin/python benchmarks/learning_curve.py --parallel ...                        # one process per recipe (a GPU; --threads 1 each on a CPU)
    .venv/bin/python benchmarks/learning_curve.py --report-only ...                     # the table so far, no training
    .venv/bin/python benchmarks/learning_curve.py --smoke                               # the same code in seconds
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from asciiray import charset, data
from asciiray.embedded import DEFAULT_CORPUS
from asciiray.metrics import score
from asciiray.models import VAE, VAEConfig, get_preset
from asciiray.train import checkpoint as train_checkpoint
from asciiray.train import schedule
from asciiray.train.job import Job
from asciiray.train.loop import autocast_for
from asciiray.train.options import TrainConfig
from asciiray.train.step import TrainStep, load_adam_state, make_adam
from asciiray.train.local import LocalVAETask

sys.path.insert(0, str(Path(__file__).parent))
from gpu_check import vae_setup  # noqa: E402  (this directory's)

log = logging.getLogger("learning_curve")

# Named recipes: the run's config keys, and `model.` fields over the preset.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "map": {"preset": "small-map", "kl_map_coeff": 1e-5},
}
SMOKE_RECIPES = ["default", "tiny-map:model.map_channels=4,model.map_size=8,kl_map_coeff=1e-5"]
STATE_FILE, CURVE_FILE = "state.pt", "curve.jsonl"


def parse_recipe(text: str) -> tuple[str, dict[str, Any]]:
    """(name, options) of `NAME` or `NAME:key=value,...` (values are JSON where they parse)."""
    name, _, rest = text.partition(":")
    if not rest:
        if name not in RECIPES:
            raise SystemExit(f"--recipe {name}: not a built-in recipe ({', '.join(RECIPES)}); "
                             f"give NAME:key=value,... instead")
        return name, dict(RECIPES[name])
    options: dict[str, Any] = {}
    for pair in split_top_level(rest):
        key, _, value = pair.partition("=")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return name, options


def recipe_setup(values: dict[str, Any], options: dict[str, Any], precision: str
                 ) -> tuple[TrainConfig, Job, torch.Tensor, VAEConfig]:
    """vae_setup of `values` with a recipe's options: its run config keys over `values`, and its `model.` keys
    (prefix dropped) as fields over its preset, in the VAEConfig returned last (the task's model_config)."""
    run = {k: v for k, v in options.items() if not k.startswith("model.")}
    model = {k.removeprefix("model."): v for k, v in options.items() if k.startswith("model.")}
    cfg, job, grids = vae_setup({**values, **run}, precision)
    return cfg, job, grids, get_preset(cfg.model.preset, **model)


def split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets, so `model.decoder_channels=[32,32,32]` stays one pair."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def score_points(budget: int, batch: int, points: int) -> list[int]:
    """Steps after which to score: log-spaced from about 8 batches to the budget, the last one the budget."""
    last = max(1, budget // batch)
    first = min(8, last)
    steps = np.unique(np.round(np.geomspace(first, last, max(2, points))).astype(int))
    return [int(s) for s in steps]


class Curve:
    """One recipe trained toward its budget in samples, scored and checkpointed at its points."""

    def __init__(self, name: str, options: dict[str, Any], args: argparse.Namespace, device: torch.device) -> None:
        self.name, self.args, self.device = name, args, device
        self.dir = Path(args.out) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        values = {"corpus": args.corpus, "max_pieces": args.max_pieces, "storage_path": str(self.dir),
                  "run_name": "curve", "preset": args.preset}
        precision = args.precision if args.precision != "auto" else "bf16" if device.type == "cuda" else "32"
        self.cfg, job, grids, model_config = recipe_setup(values, options, precision)
        self.precision = precision
        self.task = LocalVAETask(job, device, grids.to(device))
        self.task.model_config = model_config
        grid = self.task.model_config.grid
        uri, val_prop, max_pieces = self.cfg.data.corpus, self.cfg.data.validation_prop, self.cfg.data.max_pieces
        val = data.validation_pieces(uri, grid, val_prop, args.score_pieces, max_pieces)
        train = data.fitting_pieces(uri, grid, val_prop, max_pieces, training=True)["text"].to_pylist()
        self.sets = {"val": torch.from_numpy(charset.encode_many(val, grid)),
                     "train": torch.from_numpy(charset.encode_many(train[:args.score_pieces], grid))}
        self.batch = self.cfg.data.batch_size
        self.total_steps = max(1, args.samples // self.batch)
        self.points = set(score_points(args.samples, self.batch, args.points))

    def build(self) -> tuple[VAE, TrainStep, int, float]:
        """The model and its step, from the saved state when there is one: (model, step, steps done, seconds)."""
        torch.manual_seed(self.cfg.optim.seed)
        model = self.task.build_model().to(self.device)
        optimizer = make_adam(list(model.parameters()), self.cfg.optim.learning_rate, self.device)
        scaler = torch.amp.GradScaler(self.device.type, enabled=False)
        done, seconds = 0, 0.0
        state_path = self.dir / STATE_FILE
        if state_path.exists():
            state = torch.load(state_path, map_location=self.device, weights_only=True)
            model.load_state_dict(state["model"])
            load_adam_state(optimizer, state["optimizer"])
            done, seconds = int(state["step"]), float(state["seconds"])
            torch.manual_seed(self.cfg.optim.seed + done)
        else:
            self.task.initial_weights(model)  # init_from=..., e.g. pretrained
        step = TrainStep(self.task.step, model, optimizer, scaler, self.cfg.optim.grad_clip,
                         lambda: autocast_for(self.precision, self.device), self.device)
        return model, step, done, seconds

    def run(self, deadline: float) -> bool:
        """Train to the budget or the deadline (time.monotonic), whichever first; True when the budget is done."""
        model, train_step, done, seconds = self.build()
        if done >= self.total_steps:
            return True
        batches = iter(self.task.batches("train", 0))
        log.info("%s: preset %s, %d of %d steps done", self.name, self.cfg.model.preset, done, self.total_steps)
        started = saved = time.perf_counter()
        model.train()
        while done < self.total_steps:
            schedule.set_learning_rate(train_step.optimizer, self.cfg.optim, done, self.total_steps)
            train_step(next(batches), 0)
            done += 1
            stopping = time.monotonic() > deadline
            if done in self.points or stopping:
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds += time.perf_counter() - started
                self.record(model, done, seconds)
                self.save(model, train_step, done, seconds)
                started = saved = time.perf_counter()
                if stopping:
                    break
            elif time.perf_counter() - saved > self.args.save_every * 60:
                # Between points too, so a kill loses minutes of training, not the samples since the last point.
                seconds += time.perf_counter() - started
                self.save(model, train_step, done, seconds)
                log.info("%s: state saved at step %d", self.name, done)
                started = saved = time.perf_counter()
        self.export(model, done)
        return done >= self.total_steps

    def record(self, model: VAE, done: int, seconds: float) -> None:
        row = {"recipe": self.name, "step": done, "samples": done * self.batch, "seconds": round(seconds, 2)}
        for split, grids in self.sets.items():
            figures = score(model, (b.to(self.device) for b in grids.split(256)))
            row.update({f"{split}/{k}": round(v, 4) for k, v in figures.items()
                        if k in ("ink_f1", "near_collapse", "space_collapse", "char_acc")})
        model.train()
        with open(self.dir / CURVE_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
        log.info("%s: %s samples, val ink_f1 %.3f, near_collapse %.3f, train ink_f1 %.3f", self.name,
                 f"{row['samples']:,}", row["val/ink_f1"], row["val/near_collapse"], row["train/ink_f1"])

    def save(self, model: VAE, train_step: TrainStep, done: int, seconds: float) -> None:
        """The resumable state, written to a temporary name first so a kill never leaves half a file."""
        tmp = self.dir / (STATE_FILE + ".tmp")
        torch.save({"model": model.state_dict(), "optimizer": train_step.optimizer.state_dict(), "step": done,
                    "seconds": seconds}, tmp)
        os.replace(tmp, self.dir / STATE_FILE)

    def export(self, model: VAE, done: int) -> None:
        """The trained model as a checkpoint of `asciiray train`'s format (the art commands load it)."""
        target = self.dir / "checkpoint"
        target.mkdir(exist_ok=True)
        rows = read_curve(self.dir)
        metrics = {k: v for k, v in rows[-1].items() if "/" in k} if rows else {}
        train_checkpoint.save(target, model, {**self.task.meta(), "epoch": 0, "step": done, "history": rows,
                                              "metrics": metrics})


def read_curve(directory: Path) -> list[dict[str, Any]]:
    path = directory / CURVE_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def table(curves: dict[str, list[dict[str, Any]]]) -> str:
    """A markdown table: one row per recipe and point."""
    lines = ["| recipe | samples | seconds | val ink_f1 | val near_collapse | train ink_f1 | train near_collapse |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rows in curves.items():
        for r in rows:
            lines.append(f"| {name} | {r['samples']:,} | {r['seconds']:.0f} | {r['val/ink_f1']:.3f} | "
                         f"{r['val/near_collapse']:.3f} | {r['train/ink_f1']:.3f} | {r['train/near_collapse']:.3f} |")
    return "\n".join(lines)


def plot(curves: dict[str, list[dict[str, Any]]]) -> Image.Image:
    """ink_f1 against samples seen (log x), one colour per recipe, solid validation, dashed training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for i, (name, rows) in enumerate(curves.items()):
        samples = [r["samples"] for r in rows]
        ax.plot(samples, [r["val/ink_f1"] for r in rows], "-o", color=f"C{i}", label=f"{name} val", markersize=3)
        ax.plot(samples, [r["train/ink_f1"] for r in rows], "--", color=f"C{i}", label=f"{name} train")
    ax.set_xscale("log")
    ax.set_xlabel("training samples seen")
    ax.set_ylabel("ink F1 (z = posterior mean)")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def picture(curves: dict[str, list[dict[str, Any]]], out: Path, device: torch.device, n: int) -> Path:
    """The plot over each recipe's reconstructions of the same first `n` validation pieces."""
    from asciiray.inference import TrainedVAE
    from asciiray.pictures import pairs_picture

    parts = [plot(curves)]
    for name in curves:
        ckpt = out / name / "checkpoint"
        if ckpt.exists():
            vae = TrainedVAE.load(str(ckpt), device)
            texts = [p.text for p in vae.corpus_pieces()[:n]]
            names = [f"{name}: validation piece {i + 1}" for i in range(len(texts))]
            parts.append(pairs_picture(vae.codes(texts), vae.reconstruct(texts).codes, names).convert("RGB"))
    canvas = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), "white")
    y = 0
    for part in parts:
        canvas.paste(part, (0, y))
        y += part.height
    path = out / "curves.png"
    canvas.save(path)
    return path


def child_command(args: argparse.Namespace, spec: str) -> list[str]:
    """This script on one recipe, reporting nothing (the parent writes the table and the picture)."""
    command = [sys.executable, __file__, "--recipe", spec, "--no-report", "--samples", str(args.samples),
               "--points", str(args.points), "--out", args.out, "--corpus", args.corpus, "--preset", args.preset,
               "--score-pieces", str(args.score_pieces), "--device", args.device, "--threads", str(args.threads),
               "--save-every", str(args.save_every), "--precision", args.precision]
    if args.max_pieces is not None:
        command += ["--max-pieces", str(args.max_pieces)]
    if args.time_limit:
        command += ["--time-limit", str(args.time_limit)]
    return command


def train_curves(args: argparse.Namespace, specs: list[str], device: torch.device) -> None:
    """Train each recipe toward the budget: here one after the other, or one process each with --parallel."""
    if args.parallel and len(specs) > 1:
        children = [subprocess.Popen(child_command(args, spec)) for spec in specs]
        failed = [spec for spec, child in zip(specs, children) if child.wait() != 0]
        if failed:
            raise SystemExit(f"recipes failed: {', '.join(failed)}")
        return
    deadline = time.monotonic() + args.time_limit * 60 if args.time_limit else math.inf
    for spec in specs:
        name, options = parse_recipe(spec)
        Curve(name, options, args, device).run(deadline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", help="a built-in name or NAME:key=value,... (repeatable; "
                                                          "default: every built-in recipe)")
    parser.add_argument("--samples", type=int, default=1_000_000, help="budget of training samples per recipe")
    parser.add_argument("--points", type=int, default=12, help="log-spaced scoring points")
    parser.add_argument("--out", default="curves", help="directory of the runs' states, curves and picture")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--max-pieces", type=int, default=0, help="pieces of the corpus to use (0: all)")
    parser.add_argument("--preset", default="small", help="the model preset recipes start from")
    parser.add_argument("--score-pieces", type=int, default=512, help="validation and training pieces scored")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per recipe on a CPU")
    parser.add_argument("--precision", choices=["auto", "32", "bf16"], default="auto",
                        help="the step's precision: auto is bf16 on CUDA and fp32 on a CPU (bf16 pays on a CPU "
                             "with AMX)")
    parser.add_argument("--time-limit", type=float, default=0, help="stop (resumably) after this many minutes")
    parser.add_argument("--save-every", type=float, default=10,
                        help="minutes between saves of the resumable state besides the scoring points")
    parser.add_argument("--parallel", action="store_true", help="train the recipes at once, one process each")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the table and picture of the points recorded so far (e.g. while "
                             "the runs go on in the background)")
    parser.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="tiny preset, a few hundred samples: the code paths")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.smoke:
        args.recipe = args.recipe or SMOKE_RECIPES
        args.samples, args.points, args.preset, args.max_pieces, args.score_pieces = 1024, 3, "tiny", 200, 16
    specs = args.recipe or list(RECIPES)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    names = [parse_recipe(spec)[0] for spec in specs]
    if not args.report_only:
        train_curves(args, specs, device)
    if args.no_report:
        return
    out = Path(args.out)
    curves = {name: read_curve(out / name) for name in names}
    text = table(curves)
    (out / "curves.md").write_text(text + "\n")
    print(text)
    print(f"picture: {picture(curves, out, device, 3)}")


if __name__ == "__main__":
    main()
