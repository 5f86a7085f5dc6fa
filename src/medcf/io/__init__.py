"""Saving and loading: model directories, atomic writes, restricted loads.

The package: ``medcf.io`` (model directories, atomic writes, ``SavableModule``),
``medcf.io.config`` (strict typed configs from JSON), ``medcf.io.weights``
(safetensors header checks), ``medcf.io.outputs`` (the output policy of every
command), ``medcf.io.files`` (regular files only, capped archive members) and
``medcf.io.unpickle`` (the one restricted unpickler). Public names of all of
them that other modules use are importable from ``medcf.io``.

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

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medcf.errors import CheckpointError
from medcf.io.config import config_from_dict, config_to_dict  # noqa: F401 (re-exported)
from medcf.io.outputs import (  # noqa: F401 (re-exported)
    check_output,
    staged_output_dir,
    unique_stems,
    user_umask,
    write_output_dir,
)
from medcf.io.weights import check_against, read_weights_header

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
        os.chmod(tmp, 0o666 & ~user_umask())  # mkstemp (and safetensors) make 0600: give the user's umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def json_safe(obj: Any) -> Any:
    """Containers of plain values for strict JSON: non-finite floats as None, tuples as lists.

    Example:
        >>> json_safe({"fid": float("nan"), "range": (0.0, float("inf"))})
        {'fid': None, 'range': [0.0, None]}
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda p: torch.save(obj, p))


def atomic_write_dir(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Fill a temporary sibling directory, then swap it in for ``path``.

    The previous directory (if any) is removed only after the new one is in place.
    """
    with staged_dir(path) as tmp:
        fill(tmp)
    return Path(path)


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """``with staged_dir(p) as tmp:`` write into ``tmp`` (a hidden sibling); on success it
    replaces ``p`` whole (modes set from the user's umask), on any error it is removed and
    ``p`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = None
    try:
        yield tmp
        _apply_umask(tmp)
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old.exists() or old.is_symlink()) and not path.exists():
            os.replace(old, path)
        raise
    if old is not None:
        if old.is_symlink() or not old.is_dir():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)


def _apply_umask(root: Path) -> None:
    """Modes of a staged folder's contents as if created under the user's umask.

    ``mkdtemp`` makes 0700 and some writers (safetensors) 0600 regardless of the umask.
    """
    mask = user_umask()
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask, follow_symlinks=False)
        for name in files:
            p = os.path.join(folder, name)
            if not os.path.islink(p):
                executable = os.stat(p).st_mode & 0o100
                os.chmod(p, (0o777 if executable else 0o666) & ~mask)


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
    """The tensors of ``MODEL_DIR/model.safetensors``; its header is checked first (truncation, sizes)."""
    path = Path(model_dir) / WEIGHTS_NAME
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    read_weights_header(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt weights file ({first_line(e)})") from e


def _skeleton(cls: type[T], config: Any, header: dict[str, Any]) -> T | None:
    """The model built on the meta device (no memory), or None if it cannot be built there."""
    try:
        with torch.device("meta"):
            return cls.from_config(config, header)
    except Exception:  # a model whose construction needs real tensors: checked after the real build
        return None


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
        weights = model_dir / WEIGHTS_NAME
        spec = read_weights_header(weights)  # truncated/corrupt: one line, before anything is built
        skeleton = _skeleton(cls, config, header)  # sizes come from the config: check them on no memory
        if skeleton is not None:
            check_against(spec, skeleton.state_dict(), where=str(weights), what=cls.__name__)
            del skeleton
        model = cls.from_config(config, header)
        check_against(spec, model.state_dict(), where=str(weights), what=cls.__name__)
        state = load_weights(model_dir)
        model.load_state_dict(state, strict=True)
        for name, p in model.named_parameters():
            if p.is_floating_point() and not torch.isfinite(p).all():
                raise CheckpointError(f"{weights}: parameter {name} holds NaN or infinite values")
        model.loaded_from = model_dir  # where it came from (e.g. medcf.eval.ood finds ood.json there)
        return model.to(device).eval()

    @classmethod
    def from_config(cls: type[T], config: Any, header: dict[str, Any]) -> T:
        """Build an uninitialised model from its config (override when more is needed)."""
        return cls(config)


def load_of_kind(cls: type[T], path: str | os.PathLike, *, made_by: str,
                 device: str | torch.device = "cpu") -> T:
    """``cls.load(path)`` in eval mode; a checkpoint of another kind is a one-line error that
    names the command making the right one (``made_by``).

    Example:
        >>> G = load_of_kind(DCGANGenerator, "runs/gan", made_by="medcf train gan")  # doctest: +SKIP
    """
    header = read_header(path)
    if header["kind"] != cls.kind:
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint, expected a "
                              f"'{cls.kind}' ({made_by})")
    return cls.load(header["path"], device=device)
