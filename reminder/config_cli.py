"""Command-line flags derived from a config dataclass, so a CLI never restates a field or its default.

Each field ``name`` becomes ``--name`` (underscores as dashes) with the field's default and type: ``bool`` ->
``--name/--no-name``; ``Literal[...]`` -> its choices; ``X | None`` -> an optional ``X``; ``tuple[X, ...]`` or
``list[X]`` -> one or more ``X`` (none allowed where the default is empty). The help text is the comment after the
field in its class, unless ``help`` gives one. ``dict`` fields are left to the caller.

    ap = add_config_args(argparse.ArgumentParser(), SaptConfig, skip=("command",))
    cfg = config_from_args(SaptConfig, ap.parse_args(argv), skip=("command",))
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal


def field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field in ``cls``'s source ({} where the source cannot be read)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m[1]: m[2].strip() for m in re.finditer(r"^\s+(\w+):[^#\n]*#\s*(.*)$", source, re.M)}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _is_tuple(hint: Any) -> bool:
    """``tuple[...]`` or ``tuple[...] | None``."""
    return typing.get_origin(hint) is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(hint))


def _argument(hint: Any, default: Any) -> dict[str, Any]:
    """argparse keywords for a field of type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        return _argument(next(a for a in args if a is not type(None)), default)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"choices": args, "type": type(args[0])}
    if origin in (tuple, list):
        return {"nargs": "+" if default else "*", "type": args[0]}
    if origin is dict or hint is dict:
        raise TypeError("dict fields have no flag: pass them in skip and add your own")
    return {"type": hint}


def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: Iterable[str] = (),
                    help: dict[str, str] | None = None, parsers: dict[str, Callable] | None = None,
                    rename: dict[str, str] | None = None, defaults: dict[str, Any] | None = None,
                    ) -> argparse.ArgumentParser:
    """Add a flag for every field of dataclass ``cls`` but ``skip``. ``parsers``: a parser per field (e.g. fractions);
    ``rename``: field -> flag name (dashes); ``defaults``: defaults other than the field's (e.g. None, filled later)."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls) | (help or {})
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = (defaults or {}).get(f.name, _default(f))
        kwargs = _argument(hints[f.name], default)
        if f.name in (parsers or {}):
            kwargs["type"] = parsers[f.name]
        if isinstance(default, tuple):
            default = list(default)
        flag = "--" + (rename or {}).get(f.name, f.name.replace("_", "-"))
        parser.add_argument(flag, dest=f.name, default=default, help=comments.get(f.name), **kwargs)
    return parser


def config_from_args(cls: type, args: argparse.Namespace, skip: Iterable[str] = (), **extra: Any) -> Any:
    """``cls`` from the parsed flags of :func:`add_config_args` (lists back to tuples where the field is one), plus
    ``extra`` fields."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name in extra or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if isinstance(value, list) and _is_tuple(hints[f.name]):
            value = tuple(value)
        values[f.name] = value
    return cls(**values, **extra)
