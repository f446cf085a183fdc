"""Checkpoints a training run writes: weights and metadata (asciiray.checkpoint) plus the training state.

`state.pt` holds the optimizer and grad scaler, read back with `weights_only=True`,
so loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from asciiray.checkpoint import (META_FILE, MODEL_FILE, latest_in, load_meta, load_weights,  # noqa: F401
                                 opened, save_weights)

STATE_FILE = "state.pt"


def save(directory: str | Path, model: torch.nn.Module, meta: dict[str, Any],
         training_state: dict[str, Any] | None = None) -> None:
    """Write one checkpoint into an existing local directory."""
    directory = Path(directory)
    save_weights(directory, model)
    if training_state is not None:
        torch.save(training_state, directory / STATE_FILE)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_training_state(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
