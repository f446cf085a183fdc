"""Package a trained model as the one shipped in asciiray (`pretrained`), with its model card.

Takes a checkpoint (of `asciiray train`, or a recipe's `checkpoint/` from
`learning_curve.py`), exports it with fp16 weights into
asciiray/data/pretrained/ (replacing what is there), records `embedded` as its
corpus (so it scores and shows its validation pieces on any install), scores it
here on the first --score-pieces validation pieces, and writes the model card
(README.md) with the corpus, split, how it was trained and those figures.

    .venv/bin/python benchmarks/package_pretrained.py curves/ship/checkpoint --how "learning_curve.py ..."
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from asciiray import embedded, pretrained
from asciiray.export import export
from asciiray.inference import TrainedVAE
from asciiray.models import count_parameters


def card(vae: TrainedVAE, how: str, figures: dict[str, float], n: int) -> str:
    """The model card: what the model is, what it was trained on and how, and what it scores."""
    meta, cfg = vae.meta, vae.model.cfg
    data = meta["config"]["data"]
    loss = meta["config"]["loss"]
    optim = meta["config"]["optim"]
    rows = "\n".join(f"| {k} | {figures[k]:.4f} |" for k in ("ink_f1", "near_collapse", "space_collapse", "char_acc"))
    return f"""# pretrained

The model shipped with asciiray: `asciiray sample`, `interpolate`, `explore` and
`reconstruct` use it when no checkpoint is given, and `asciiray train
--init-from pretrained` fine-tunes from it.

- **Model**: preset `{meta['preset']}`, {count_parameters(vae.model):,} parameters: a global latent z of
  {cfg.z_dim} numbers and a {cfg.map_size}x{cfg.map_size}x{cfg.map_channels} latent map drawn from a learned prior
  p(map | z); {cfg.grid}x{cfg.grid} character grids. Weights stored in fp16.
- **Corpus**: the embedded FIGlet corpus (`asciiray/data/figlet`), all pieces that fit the grid;
  validation split {data['validation_prop']:.0%} of the pieces, chosen by piece id (the split of every run).
- **Training**: {meta['step']:,} steps of batch {data['batch_size']} ({meta['step'] * data['batch_size']:,} samples),
  Adam at {optim['learning_rate']} with a {optim['lr_schedule']} schedule, kl_coeff {loss['kl_coeff']},
  kl_map_coeff {loss['kl_map_coeff']}, space_deemph {loss['space_deemph']}.
- **How**: {how}

## Validation figures

The first {n} validation pieces in id order, z = the posterior mean. At the end of
training the run recorded val ink_f1 {meta['metrics'].get('val/ink_f1', float('nan')):.4f}; these fp16 weights,
scored on a CPU (`TrainedVAE.load("pretrained").score({n})`; a test checks that it
stays within 0.01 of the recorded figure), give:

| metric | value |
| --- | --- |
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="the checkpoint to ship")
    parser.add_argument("--how", required=True, help="the command and machine that trained it, for the card")
    parser.add_argument("--score-pieces", type=int, default=512)
    args = parser.parse_args()

    vae = TrainedVAE.load(args.checkpoint, "cpu")
    vae.meta["corpus"] = embedded.NAME
    vae.meta["exported_from"] = "the checkpoint README.md's How names"  # a path of the training machine means nothing here
    target = pretrained.DIRECTORY
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "pretrained"
        export(vae, str(staged), half=True)
        shipped = TrainedVAE.load(str(staged), "cpu")
        figures = shipped.score(args.score_pieces)
        (staged / "README.md").write_text(card(shipped, args.how, figures, args.score_pieces))
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(staged, target)
    size = sum(f.stat().st_size for f in target.iterdir())
    print(f"shipped {args.checkpoint} as {target} ({size / 2 ** 20:.2f} MiB): "
          + ", ".join(f"{k} {v:.4f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
