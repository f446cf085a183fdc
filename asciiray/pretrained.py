"""The model shipped inside the package, so the art commands work before anything is trained.

`pretrained` names it wherever a checkpoint is asked for. It is an exported model
(`asciiray export`'s layout: config.json, fp16 model.safetensors, README.md with its model
card), so it loads offline, from safetensors and JSON alone.
"""

from __future__ import annotations

from pathlib import Path

NAME = "pretrained"
DIRECTORY = Path(__file__).parent / "data" / "pretrained"


def resolve(uri: str) -> str:
    """The shipped model's directory for the name `pretrained`; any other URI unchanged."""
    return str(DIRECTORY) if uri == NAME else uri
