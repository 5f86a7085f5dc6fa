"""An explainer's settings as text: typed ``FIELD=VALUE`` parsing and a listing, derived
from its config dataclass (the CLI's ``--set`` and ``--list-options`` use these, so a new
config field is a new option without touching the CLI).

Types understood: ``bool`` (true/false, yes/no, on/off, 1/0), ``int``, ``float`` (``inf``
too), ``str``, ``tuple[int, ...]`` (comma-separated) and any of them ``| None``
(``none``).

Example:
    >>> from medcf.counterfactual.latent_shift import LatentShiftConfig
    >>> parse_setting(LatentShiftConfig, "take_at=0.999")
    ('take_at', 0.999)
    >>> parse_setting(LatentShiftConfig, "max_change=none")
    ('max_change', None)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from medcf.counterfactual.checkpoints import setting_error

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One settable field of an explainer config."""

    name: str
    kinds: tuple[type, ...]     # the accepted types, without NoneType
    optional: bool              # None ("none") accepted
    default: Any
    item: type | None = None    # tuple[item, ...]: the item type

    @property
    def type_name(self) -> str:
        names = [f"tuple[{self.item.__name__}, ...]" if k is tuple and self.item else k.__name__
                 for k in self.kinds]
        return " | ".join(names + (["None"] if self.optional else []))


def _setting(name: str, hint: Any, default: Any) -> Setting:
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in args
    kinds, item = [], None
    for a in args:
        if a is type(None):
            continue
        origin = typing.get_origin(a)
        if origin is tuple:
            kinds.append(tuple)
            sub = [s for s in typing.get_args(a) if s is not Ellipsis]
            item = sub[0] if sub else str
        elif isinstance(a, type):
            kinds.append(a)
    return Setting(name, tuple(kinds), optional, default, item)


def settings_of(config_class: type) -> dict[str, Setting]:
    """Every field of a config dataclass as a ``Setting`` (name -> setting, in field order)."""
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"settings_of: expected a dataclass type, got {config_class!r}")
    hints = typing.get_type_hints(config_class)
    out = {}
    for f in dataclasses.fields(config_class):
        default = f.default if f.default is not dataclasses.MISSING else None
        out[f.name] = _setting(f.name, hints.get(f.name, str), default)
    return out


def _convert(s: Setting, text: str) -> Any:
    low = text.strip().lower()
    if s.optional and low in ("none", "null"):
        return None
    for kind in s.kinds:  # the first type that reads the text
        try:
            if kind is bool:
                if low in _TRUE or low in _FALSE:
                    return low in _TRUE
                continue
            if kind is int:
                return int(low)
            if kind is float:
                v = float(low)
                if math.isnan(v):
                    continue
                return v
            if kind is tuple:
                parts = [p for p in text.split(",") if p.strip()]
                return tuple((s.item or str)(p.strip()) for p in parts)
            if kind is str:
                return text
        except ValueError:
            continue
    raise ValueError(f"expected {s.type_name}, got {text!r}")


def parse_setting(config_class: type, text: str) -> tuple[str, Any]:
    """``"FIELD=VALUE"`` -> ``(field, typed value)`` for ``config_class``; a one-line
    ``MedcfError`` (``err.param == "set"``) names an unknown field or a value of the wrong type."""
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name:
        raise setting_error("set", f"expected FIELD=VALUE, got {text!r}")
    known = settings_of(config_class)
    if name not in known:
        raise setting_error("set", f"{name!r} is not a setting of {config_class.__name__}; "
                            f"known: {', '.join(known)}")
    try:
        return name, _convert(known[name], value)
    except ValueError as e:
        raise setting_error("set", f"{name}: {e}") from None


def describe_settings(config_class: type) -> list[str]:
    """One line per setting: ``name  type  (default ...)``, for ``--list-options``."""
    rows = settings_of(config_class).values()
    width = max((len(s.name) for s in rows), default=0)
    return [f"{s.name:<{width}}  {s.type_name}  (default {s.default!r})" for s in rows]


__all__ = ["Setting", "describe_settings", "parse_setting", "settings_of"]
