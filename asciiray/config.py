"""Configs as data: a dataclass is at once the config-file schema and the CLI flags.

Precedence: dataclass defaults < config file (YAML or JSON) < explicit flags.
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


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def _base_type(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field; defaults are shown in --help but never override a config file."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        names = [*meta.get("flags", ()), flag_name(f.name)]
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                              "help": f"{meta.get('help', '')} (default: {default})"}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) in (list, tuple):
            kw["nargs"] = "+"
            kw["type"] = typing.get_args(tp)[0]
        else:
            kw["type"] = tp
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
        parser.add_argument(*names, **kw)


def read_file(path: str | Path) -> dict[str, Any]:
    """A YAML/JSON mapping from disk, or a one-line UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist: pass the path of a YAML file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping of keys to values")
    return data


def build(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Instantiate `cls` from a mapping; an unknown key or a bad value is a UserError."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise UserError(f"{source}: unknown key '{key}'; known keys: {', '.join(sorted(known))}")
        kwargs[name] = _coerce(name, value, _base_type(hints[name]), known[name].metadata, source)
    return cls(**kwargs)


def _coerce(name: str, value: Any, tp: Any, meta: Any, source: str) -> Any:
    if value is None:
        return None
    try:
        if tp is bool and not isinstance(value, bool):
            raise ValueError("expected true or false")
        if typing.get_origin(tp) in (list, tuple):
            inner = typing.get_args(tp)[0]
            value = typing.get_origin(tp)(inner(v) for v in value)
        elif tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError("expected an integer")
            value = tp(value)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: '{name}' = {value!r} is invalid ({exc})") from None
    choices = meta.get("choices")
    if choices and value not in choices:
        raise UserError(f"{source}: '{name}' = {value!r} must be one of {', '.join(map(str, choices))}")
    return value


def from_args(cls: type[T], args: argparse.Namespace, config_file: str | None = None) -> T:
    """Defaults, then the config file, then the flags the user actually gave."""
    values = read_file(config_file) if config_file else {}
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return build(cls, values, source=config_file or "flags")


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
