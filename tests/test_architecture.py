"""The import arrows of docs/ARCHITECTURE.md, checked on every module: cli -> workflows -> core -> leaves."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LEAVES = {"asciiray.charset", "asciiray.errors"}
CORE = {"asciiray.config", "asciiray.storage", "asciiray.runtime", "asciiray.corpus", "asciiray.embedded",
        "asciiray.data", "asciiray.models", "asciiray.render", "asciiray.pictures", "asciiray.losses",
        "asciiray.metrics", "asciiray.checkpoint", "asciiray.pretrained"}
WORKFLOWS = {"asciiray.train", "asciiray.tune", "asciiray.inference", "asciiray.explore", "asciiray.export",
             "asciiray.projector", "asciiray.jobs", "scrape"}
LAYERS = [("leaf", LEAVES), ("core", CORE), ("workflow", WORKFLOWS), ("cli", {"asciiray.cli"})]


def layer(module: str) -> int:
    """Index in LAYERS of the group a dotted module name belongs to (the longest matching prefix)."""
    best, found = -1, None
    for i, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), i
    assert found is not None, f"{module} is in no layer of docs/ARCHITECTURE.md: add it there and here"
    return found


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted([*ROOT.glob("asciiray/**/*.py"), *ROOT.glob("scrape/**/*.py")]):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, module: str) -> set[str]:
    """Project modules imported anywhere in the file (top level or inside functions)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules() else base for a in node.names}
    return {m for m in found if m.split(".")[0] in ("asciiray", "scrape") and m != "asciiray"}


def test_every_import_points_down_the_layers():
    wrong = []
    for module, path in modules().items():
        if module in ("asciiray", "asciiray.__main__"):
            continue
        own = layer(module)
        for target in imports(path, module):
            if layer(target) > own:
                wrong.append(f"{module} ({LAYERS[own][0]}) imports {target} ({LAYERS[layer(target)][0]})")
    assert not wrong, "imports against docs/ARCHITECTURE.md:\n" + "\n".join(wrong)


def test_workflows_keep_to_their_rooms():
    """train/ runs training and knows nothing of searching or of using a trained model; the inference API
    knows nothing of training; scrape/ is independent of asciiray."""
    rules = {"asciiray.train": ("asciiray.tune", "asciiray.inference", "asciiray.export", "asciiray.projector"),
             "asciiray.inference": ("asciiray.train", "asciiray.tune"),
             "asciiray.explore": ("asciiray.train", "asciiray.tune"),
             "scrape": ("asciiray",)}
    wrong = [f"{module} imports {target}"
             for module, path in modules().items()
             for owner, banned in rules.items() if module == owner or module.startswith(owner + ".")
             for target in imports(path, module) if target.startswith(banned)]
    assert not wrong, "\n".join(wrong)
