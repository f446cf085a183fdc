"""Exported models: a self-contained directory the inference API loads with no run, Ray or corpus.

    model.safetensors   the weights, as in the checkpoint
    config.json         format, model config, grid, charset, training metadata (asciiray.checkpoint reads it)
    README.md           a model card: what it is, how it was trained, its final validation metrics

The directory is written whole somewhere else first and then moved (or copied to S3) into place, so a
failed export leaves nothing at its destination.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from asciiray import charset, checkpoint, storage
from asciiray.errors import UserError
from asciiray.inference import TrainedVAE
from asciiray.models import count_parameters

FORMAT_VERSION = 1


def export_config(vae: TrainedVAE) -> dict[str, Any]:
    meta = vae.meta
    training = {k: v for k, v in meta.items() if k not in ("kind", "preset", "model", "history", "exported")}
    return {
        "format": checkpoint.EXPORT_FORMAT, "format_version": FORMAT_VERSION,
        "kind": meta["kind"], "preset": meta.get("preset"), "model": meta["model"], "grid": vae.grid,
        "charset": {"alphabet": charset.ALPHABET, "code": "ord(c) - 32", "space": charset.SPACE,
                    "placement": "centred: top (S - height) // 2, left (S - width) // 2"},
        "training": {**training, "exported_from": meta.get("exported_from", vae.uri)},
    }


def model_card(vae: TrainedVAE, name: str) -> str:
    """README.md of an exported model."""
    meta = vae.meta
    metrics = meta.get("metrics") or {}
    rows = "\n".join(f"| `{k}` | {v:.4f} |" for k, v in sorted(metrics.items())
                     if k.startswith("val/") and isinstance(v, (int, float)))
    cfg = vae.model.cfg
    return f"""# {name}

A variational autoencoder of ASCII art made with asciiray: it reads and writes pieces of printable ASCII
that fit a {cfg.grid}x{cfg.grid} character grid, through a {cfg.z_dim}-dimensional latent space.

- preset: `{meta.get('preset')}`, {count_parameters(vae.model):,} parameters (full config in `config.json`)
- trained on: `{meta.get('corpus')}`, {meta.get('epoch')} epochs, {meta.get('step')} steps
- exported from: `{meta.get('exported_from', vae.uri)}`

## Final validation metrics

| metric | value |
| --- | --- |
{rows or '| (none recorded) | |'}

## Use

```bash
asciiray sample {name} -n 8 --png samples.png
asciiray interpolate {name} a.txt b.txt --steps 8 --gif morph.gif
asciiray explore {name} --files a.txt b.txt c.txt
```

```python
from asciiray.inference import TrainedVAE
vae = TrainedVAE.load("{name}")
print(vae.sample(1, temperature=0.8, seed=0).texts[0])
```
"""


def export(vae: TrainedVAE, out: str, half: bool = False) -> None:
    """Write `vae` as an exported model directory at `out` (local or s3://), which must not exist yet;
    `half`: fp16 weights."""
    if storage.exists(out):
        raise UserError(f"{out} already exists: export into a new directory")
    name = out.rstrip("/").rsplit("/", 1)[-1]
    if storage.is_s3(out):
        with tempfile.TemporaryDirectory(prefix="asciiray-export-") as tmp:
            _write(vae, Path(tmp), name, half)
            storage.copy_dir(tmp, out)
        return
    target = Path(storage.resolve(out))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    except OSError as exc:
        raise UserError(f"{out}: {exc.strerror}") from None
    try:
        _write(vae, tmp, name, half)
        tmp.chmod(0o755)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write(vae: TrainedVAE, directory: Path, name: str, half: bool) -> None:
    checkpoint.save_weights(directory, vae.model, half)
    (directory / checkpoint.EXPORT_FILE).write_text(json.dumps(export_config(vae), indent=2))
    (directory / "README.md").write_text(model_card(vae, name))
