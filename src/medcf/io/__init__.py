"""Saving and loading: model directories, atomic writes, restricted loads.

A saved model is a directory::

    MODEL_DIR/config.json        {"format": "medcf", "kind": ..., "class": ..., "config": {...}, "meta": {...}}
    MODEL_DIR/model.safetensors  the state dict

A training run directory holds the latest exported model in ``RUN_DIR/model``;
every loader accepts either. Nothing here unpickles arbitrary objects: weights
are safetensors, training state is read with ``torch.load(weights_only=True)``.

Example:
    >>> clf.save("runs/clf/model")                      # doctest: +SKIP
    >>> clf = ResNetClassifier.load("runs/clf")         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medcf.errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_TAG = "medcf"

T = TypeVar("T", bound="SavableModule")


# ----------------------------------------------------------------------------- atomic writes


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; a crash never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda p: torch.save(obj, p))


def atomic_write_dir(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Fill a temporary sibling directory, then swap it in for ``path``.

    The previous directory (if any) is removed only after the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = None
    try:
        fill(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not path.exists():
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_torch_state(path: str | os.PathLike) -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training state file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or holds disallowed objects
        raise CheckpointError(f"{path}: cannot read training state ({type(e).__name__}: {first_line(e)})") from e


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ----------------------------------------------------------------------------- configs


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type, data: dict[str, Any], *, where: str = "config") -> Any:
    """Rebuild a (possibly nested) frozen dataclass from JSON data; lists become tuples."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CheckpointError(f"{where}: unknown field(s) {unknown} for {cls.__name__}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints.get(name), value, where=f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid {cls.__name__}: {first_line(e)}") from e


def _coerce(tp: Any, value: Any, *, where: str) -> Any:
    if tp is None or value is None:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return config_from_dict(arg, value, where=where)
        return _listy_to_tuple(value)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return config_from_dict(tp, value, where=where)
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(tp)
        if args and dataclasses.is_dataclass(args[0]):
            return tuple(config_from_dict(args[0], v, where=where) for v in value)
        return _listy_to_tuple(value)
    return _listy_to_tuple(value)


def _listy_to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_listy_to_tuple(v) for v in value)
    return value


# ----------------------------------------------------------------------------- model directories


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """Accept a model directory or a run directory (which holds ``model/``)."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / "model" / CONFIG_NAME).is_file():
        return path / "model"
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    raise CheckpointError(f"{path}: not a medcf checkpoint (no {CONFIG_NAME} here or in model/)")


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a model or run directory."""
    model_dir = resolve_model_dir(path)
    try:
        header = json.loads((model_dir / CONFIG_NAME).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{model_dir / CONFIG_NAME}: unreadable ({first_line(e)})") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT_TAG or "kind" not in header:
        raise CheckpointError(f"{model_dir / CONFIG_NAME}: not a medcf checkpoint header")
    header["path"] = str(model_dir)
    return header


def save_model_dir(path: str | os.PathLike, *, kind: str, class_name: str, config: dict[str, Any],
                   state: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> Path:
    """Write config.json + model.safetensors atomically into ``path``."""
    header = {"format": FORMAT_TAG, "kind": kind, "class": class_name, "config": config,
              "meta": meta or {}}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT_TAG, "kind": kind})
        (tmp / CONFIG_NAME).write_text(json.dumps(header, indent=2, sort_keys=False) + "\n")

    return atomic_write_dir(path, fill)


def load_weights(model_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(model_dir) / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt weights file ({first_line(e)})") from e


class SavableModule(nn.Module):
    """An ``nn.Module`` built from one frozen dataclass config, saved as a model directory.

    Subclasses set ``kind`` (the checkpoint kind) and ``config_class`` and take
    the config as their only required constructor argument.
    """

    kind: ClassVar[str] = ""
    config_class: ClassVar[type] = object

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    def checkpoint_meta(self) -> dict[str, Any]:
        """Extra JSON-able facts stored in config.json's ``meta`` (override to add)."""
        return {}

    def save(self, path: str | os.PathLike, *, meta: dict[str, Any] | None = None) -> Path:
        full_meta = {**self.checkpoint_meta(), **(meta or {})}
        return save_model_dir(path, kind=self.kind, class_name=type(self).__name__,
                              config=config_to_dict(self.config), state=self.state_dict(),
                              meta=full_meta)

    @classmethod
    def load(cls: type[T], path: str | os.PathLike, *, device: str | torch.device = "cpu") -> T:
        header = read_header(path)
        model_dir = Path(header["path"])
        if header["kind"] != cls.kind:
            raise CheckpointError(
                f"{model_dir}: is a '{header['kind']}' checkpoint, expected '{cls.kind}'")
        config = config_from_dict(cls.config_class, header.get("config", {}),
                                  where=f"{model_dir / CONFIG_NAME}")
        model = cls.from_config(config, header)
        state = load_weights(model_dir)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{model_dir / WEIGHTS_NAME}: weights do not match {cls.__name__} "
                f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
        return model.to(device).eval()

    @classmethod
    def from_config(cls: type[T], config: Any, header: dict[str, Any]) -> T:
        """Build an uninitialised model from its config (override when more is needed)."""
        return cls(config)
