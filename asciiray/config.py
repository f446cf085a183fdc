"""Configs as data: a dataclass is at once the config-file schema and the CLI flags.

A config is either flat (a dataclass of plain fields) or sectioned (a
dataclass whose fields are section dataclasses, torchtitan-style: `data`,
`model`, `loss`, ...). Every plain field has one flag, `--field-name`, so the
flags stay flat while the config is typed in sections; field names are unique
across sections, which lets config files use either shape:

    loss: {kl_coeff: 1.0e-4}      # sectioned
    loss.kl_coeff: 1.0e-4         # dotted
    kl_coeff: 1.0e-4              # flat, as before sections existed

Precedence: dataclass defaults < config file (YAML or JSON) < explicit flags.
A config is checked when it is built (each section's `__post_init__`), so one
that exists is valid; a mistake is a one-line UserError naming the key.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from asciiray.errors import UserError

T = TypeVar("T")


def option(default: Any, help: str, *, flags: tuple[str, ...] = (), choices: tuple | None = None) -> Any:
    """A config field with its help text, extra flag spellings and allowed values."""
    meta = {"help": help, "flags": flags, "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Section:
    """Base of a config section: its Literal fields are checked, then its own `check`, on construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            tp = value_type(hints[f.name])
            value = getattr(self, f.name)
            if typing.get_origin(tp) is typing.Literal and value not in typing.get_args(tp) and not (
                    value is None and tp is not hints[f.name]):
                raise UserError(f"{flag_name(f.name)} {value!r} is unknown: use one of "
                                f"{', '.join(map(str, typing.get_args(tp)))}")
        self.check()

    def check(self) -> None:
        """Cross-field checks of the section; raise UserError naming the flag and the fix."""


def section(cls: type, help: str) -> Any:
    """A config field holding a section dataclass, built from its defaults."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "section": True})


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def value_type(tp: Any) -> Any:
    """`int | None` -> int; a Literal stays a Literal."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def words(tp: Any) -> tuple:
    """The Literal values a union such as `float | Literal["auto"]` takes besides its scalar type."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return ()
    return tuple(w for a in typing.get_args(tp) if typing.get_origin(a) is typing.Literal for w in typing.get_args(a))


def sections(cls: type) -> dict[str, type]:
    """Section name -> section class of a sectioned config (empty for a flat one)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.metadata.get("section")}


def leaves(cls: type) -> dict[str, tuple[str, dataclasses.Field, Any]]:
    """Every plain field: its flat name -> (dotted path, field, type hint)."""
    out: dict[str, tuple[str, dataclasses.Field, Any]] = {}
    parts = sections(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in parts:
            sub = typing.get_type_hints(parts[f.name])
            for g in dataclasses.fields(parts[f.name]):
                out[g.name] = (f"{f.name}.{g.name}", g, sub[g.name])
        else:
            out[f.name] = (f.name, f, hints[f.name])
    return out


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per plain field, grouped by section in --help; defaults are shown but never override a file."""
    parts = sections(cls)
    groups = {name: parser.add_argument_group(f"{name} options", dataclasses.fields(cls)[i].metadata["help"])
              for i, name in enumerate(f.name for f in dataclasses.fields(cls)) if name in parts}
    for name, (path, f, hint) in leaves(cls).items():
        target = groups.get(path.split(".")[0], parser) if "." in path else parser
        tp = value_type(hint)
        meta = f.metadata
        default = _default(f)
        text = meta.get("help", "")
        if "default" not in text:
            text += f" (default: {default})"
        kw: dict[str, Any] = {"dest": path, "default": argparse.SUPPRESS, "help": text.replace("%", "%%")}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) in (list, tuple):
            kw["nargs"] = "+"
        else:
            # Allowed values are checked when the config is built, so a wrong one is a one-line error.
            choices = typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else meta.get("choices")
            kw["type"] = str  # converted when the config is built: a bad value is a one-line error
            kw["metavar"] = "{" + ",".join(map(str, choices)) + "}" if choices else name.upper()
        target.add_argument(*meta.get("flags", ()), flag_name(name), **kw)


def read_file(path: str | Path) -> dict[str, Any]:
    """A YAML/JSON mapping from disk, or a one-line UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist: pass the path of a YAML file")
    try:
        data = yaml.safe_load(p.read_text())
    except UnicodeDecodeError:
        raise UserError(f"config file {p} is not UTF-8 text: pass a YAML file") from None
    except yaml.YAMLError as exc:
        raise UserError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping of keys to values")
    return data


def dotted(cls: type, values: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Any of the three shapes of a config mapping, as dotted path -> value; an unknown key is a UserError."""
    index = leaves(cls)
    paths = {path for path, _, _ in index.values()}
    parts = sections(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in parts:
            if not isinstance(value, dict):
                raise UserError(f"{source}: '{key}' is a section: give it a mapping of its keys, e.g. "
                                f"{key}: {{{next(iter(f.name for f in dataclasses.fields(parts[name])))}: ...}}")
            for sub, v in value.items():
                out.update(dotted(cls, {f"{name}.{str(sub).replace('-', '_')}": v}, source))
        elif name in paths:
            out[name] = value
        elif name in index:
            out[index[name][0]] = value
        else:
            known = sorted(index) if not parts else sorted(f"{p}" for p in paths)
            raise UserError(f"{source}: unknown key '{key}'; known keys: {', '.join(known)}")
    return out


def build(cls: type[T], values: dict[str, Any], source: str = "config", base: T | None = None) -> T:
    """`cls` (or `base` with some fields replaced) from a mapping in any shape; checked on construction."""
    index = {path: (f, hint) for path, f, hint in leaves(cls).values()}
    coerced = {path: _coerce(flag_name(path.rsplit(".", 1)[-1]) if source == "flags" else f"'{path}'", value,
                             index[path][1], index[path][0].metadata, source)
               for path, value in dotted(cls, values, source).items()}
    current = to_dict(base) if base is not None else None
    parts = sections(cls)
    kwargs: dict[str, Any] = {}
    for name, part in parts.items():
        own = {p.split(".", 1)[1]: v for p, v in coerced.items() if p.startswith(name + ".")}
        start = current[name] if current is not None else {}
        kwargs[name] = _construct(part, {**start, **own}, source)
    flat = {p: v for p, v in coerced.items() if "." not in p}
    if current is not None:
        flat = {**{k: v for k, v in current.items() if k not in parts}, **flat}
    return _construct(cls, {**kwargs, **flat}, source)


def replace(cfg: T, **values: Any) -> T:
    """`cfg` with some fields replaced, by flat or dotted name (`n_epochs=3`, `**{"loss.kl_coeff": 1e-4}`)."""
    return build(type(cfg), values, source="flags", base=cfg)


def _construct(cls: type[T], kwargs: dict[str, Any], source: str) -> T:
    try:
        return cls(**kwargs)
    except UserError as exc:
        raise UserError(str(exc) if source == "flags" else f"{source}: {exc}") from None


def _coerce(name: str, value: Any, hint: Any, meta: Any, source: str) -> Any:
    """`value` as the field's type; `name` is how the error names the key (a flag, or 'section.key')."""
    tp = value_type(hint)
    optional = tp is not hint
    where = "" if source == "flags" else f"{source}: "
    if value is None:
        if optional:
            return None
        raise UserError(f"{where}{name} needs a value (it cannot be empty)")
    if value in words(hint):
        return value
    try:
        if tp is bool and not isinstance(value, bool):
            raise ValueError("expected true or false")
        if typing.get_origin(tp) in (list, tuple):
            if not isinstance(value, (list, tuple)):
                raise ValueError("expected a list")
            inner = typing.get_args(tp)[0]
            value = typing.get_origin(tp)(_scalar(inner, v) for v in value)
        elif typing.get_origin(tp) is typing.Literal:
            if value not in typing.get_args(tp):
                choices = ", ".join(map(str, typing.get_args(tp)))
                raise UserError(f"{where}{name} {value!r} is unknown: use one of {choices}")
        elif tp in (int, float, str):
            value = _scalar(tp, value)
    except (TypeError, ValueError) as exc:
        also = f"; or one of {', '.join(map(str, words(hint)))}" if words(hint) else ""
        raise UserError(f"{where}{name} {value!r} is invalid ({exc}{also})") from None
    choices = meta.get("choices")
    if choices and value not in choices:
        raise UserError(f"{where}{name} {value!r} is unknown: use one of {', '.join(map(str, choices))}")
    return value


def _scalar(tp: type, value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)) or (isinstance(value, bool) and tp is not bool):
        raise ValueError(f"expected a single {tp.__name__}")
    if tp is int and isinstance(value, float) and not value.is_integer():
        raise ValueError("expected an integer")
    if tp is int and isinstance(value, str):
        return int(value)
    return tp(value)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain nested data (JSON/YAML-ready)."""
    return dataclasses.asdict(cfg)


def explicit_keys(cls: type, args: argparse.Namespace, config_file: str | None) -> set[str]:
    """Dotted paths the user set (flags are SUPPRESSed unless given, so the namespace holds only those)."""
    paths = {path for path, _, _ in leaves(cls).values()}
    keys = {k for k in vars(args) if k in paths}
    if config_file:
        keys |= set(dotted(cls, read_file(config_file), config_file))
    return keys


def from_args(cls: type[T], args: argparse.Namespace, config_file: str | None = None) -> T:
    """Defaults, then the config file, then the flags the user actually gave. The file is built on its own
    first, so each mistake is reported where it was made: in the file, or as the flag."""
    paths = {path for path, _, _ in leaves(cls).values()}
    flags = {k: v for k, v in vars(args).items() if k in paths}
    base = build(cls, read_file(config_file), source=config_file) if config_file else None
    return build(cls, flags, source="flags", base=base)


def from_preset(presets: dict[str, T], name: str, what: str, **overrides: object) -> T:
    """A fresh copy of a named preset (a dataclass), with some fields replaced; `what` names it in errors."""
    if name not in presets:
        raise UserError(f"{what} preset '{name}' is unknown: use one of {', '.join(presets)}")
    fields = {f.name for f in dataclasses.fields(presets[name])}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserError(f"{what} config has no field {', '.join(unknown)}: known fields are "
                        f"{', '.join(sorted(fields))}")
    return dataclasses.replace(copy.deepcopy(presets[name]), **overrides)
