"""Typed configs from JSON: strict types and finite numbers, checked before a model is built.

``config_from_dict(Cls, data)`` rebuilds a (possibly nested) frozen dataclass from
parsed JSON. Every field is checked against its annotation before the dataclass
(and its own ``__post_init__`` range checks) runs:

* ``int`` accepts only integers (not ``true``, not ``3.0``); ``float`` accepts
  integers and floats, and only finite ones (``NaN``/``Infinity`` are refused);
* ``bool`` only ``true``/``false``; ``str`` only strings; ``Literal`` only its values;
* ``tuple[...]`` from JSON lists (element types checked), ``X | None``, unions,
  nested dataclasses (also inside tuples); unknown fields are refused;
* other annotations (``dict``, ``Any`` ...) pass through with lists made tuples,
  numbers still required finite.

Every problem is one :class:`~medcf.errors.CheckpointError` line naming the file
and the field.

Example:
    >>> config_from_dict(ClassifierConfig, {"resolution": 64, "channels": 1}, where="m/config.json")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from medcf.errors import CheckpointError

_MAX_DEPTH = 32


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def config_from_dict(cls: type, data: Any, *, where: str = "config") -> Any:
    """Rebuild the frozen dataclass ``cls`` from JSON data, checking every field's type."""
    return _dataclass(cls, data, where, where, 0)


def _dataclass(cls: type, data: Any, where: str, field: str, depth: int) -> Any:
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: {field}: expected an object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CheckpointError(f"{where}: unknown field(s) {unknown} for {cls.__name__}")
    prefix = "" if field == where else f"{field}."
    kwargs = {name: _value(hints.get(name, Any), value, where, f"{prefix}{name}", depth + 1)
              for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid {cls.__name__}: {_first_line(e)}") from e


def _bad(where: str, field: str, expected: str, value: Any) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return CheckpointError(f"{where}: {field}: expected {expected}, got {shown}")


def _value(tp: Any, value: Any, where: str, field: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"{where}: {field}: nested deeper than {_MAX_DEPTH}")
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return _plain(value, where, field, depth)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise _bad(where, field, _name(tp), value)
        errors = []
        for arg in options:
            if arg is type(None):
                continue
            try:
                return _value(arg, value, where, field, depth)
            except CheckpointError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else _bad(where, field, _name(tp), value)
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in typing.get_args(tp)):
            return value
        raise _bad(where, field, f"one of {list(typing.get_args(tp))}", value)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, where, field, depth)
    if tp is bool:
        if type(value) is bool:
            return value
        raise _bad(where, field, "true or false", value)
    if tp is int:
        if type(value) is int:
            return value
        raise _bad(where, field, "an integer", value)
    if tp is float:
        if type(value) in (int, float) and math.isfinite(value):
            return float(value)
        raise _bad(where, field, "a finite number", value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _bad(where, field, "a string", value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _bad(where, field, "a list", value)
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], v, where, f"{field}[{i}]", depth + 1) for i, v in enumerate(value))
        if args and args != ((),):
            if len(args) != len(value):
                raise _bad(where, field, f"a list of {len(args)} items", value)
            return tuple(_value(a, v, where, f"{field}[{i}]", depth + 1)
                         for i, (a, v) in enumerate(zip(args, value, strict=True)))
        return _plain(value, where, field, depth)
    return _plain(value, where, field, depth)


def _plain(value: Any, where: str, field: str, depth: int) -> Any:
    """Untyped JSON: lists become tuples (dicts are kept as they are), numbers must be finite."""
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"{where}: {field}: nested deeper than {_MAX_DEPTH}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(where, field, "a finite number", value)
    if isinstance(value, list):
        return tuple(_plain(v, where, f"{field}[{i}]", depth + 1) for i, v in enumerate(value))
    if isinstance(value, dict):
        for k, v in value.items():
            _plain(v, where, f"{field}.{k}", depth + 1)
    return value


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
