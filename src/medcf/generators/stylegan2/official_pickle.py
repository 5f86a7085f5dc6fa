"""Read official StyleGAN2-ADA training snapshots (``network-snapshot-*.pkl``) safely.

An official snapshot is a pickle that embeds the official source code and, when
loaded with ``pickle.load``, ``exec``s it. This module never does that. A
restricted unpickler admits only the handful of globals such a file needs and
resolves each to local, data-only code:

* ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`PersistentObject`
  (class name + the module's ``__dict__``; the embedded ``module_src`` is dropped unread);
* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter[_with_state]`` -> tensors;
* ``torch.storage._load_from_bytes`` -> the legacy storage blob is parsed here
  (its own restricted unpickler admits only ``torch.<Type>Storage`` markers);
* ``collections.OrderedDict``, ``dnnlib.util.EasyDict`` (-> dict), ``numpy.dtype``,
  ``numpy[._]core.multiarray.scalar`` (no object dtype), ``builtins.set``,
  ``_codecs.encode`` (latin-1 only, protocol 2 bytes).

Any other global (``os.system``, ``builtins.eval``, ``subprocess.*`` ...) stops
the load with a one-line :class:`~medcf.errors.CheckpointError` naming it,
before anything is called.

Example:
    >>> snap = load_official_pickle("network-snapshot-000100.pkl")    # doctest: +SKIP
    >>> class_name, init_kwargs, state_dict = snap.networks["G_ema"]  # doctest: +SKIP
    >>> convert_stylegan2_pkl("network-snapshot-000100.pkl", "runs/sg2")  # doctest: +SKIP
"""

from __future__ import annotations

import _compat_pickle
import collections
import hashlib
import io
import json
import logging
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from medcf.errors import CheckpointError, MedcfError
from medcf.io import atomic_write_dir, first_line

log = logging.getLogger(__name__)

NETWORK_KEYS = ("G", "D", "G_ema", "augment_pipe")
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy (non-zip) serialization magic number
LEGACY_PROTOCOL = 1001
# Short class names stored by the official persistence module -> official class paths.
OFFICIAL_CLASS_PATHS = {
    "Generator": "training.networks.Generator",
    "Discriminator": "training.networks.Discriminator",
    "AugmentPipe": "training.augment.AugmentPipe",
}
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


# ----------------------------------------------------------------------------- data placeholders


@dataclass
class PersistentObject:
    """What ``_reconstruct_persistent_obj`` would have built, as plain data (code never runs)."""

    class_name: str                 # as stored, e.g. "Generator"
    state: dict[str, Any]           # the module's __dict__ (_parameters, _buffers, _modules, ...)
    version: int | None = None      # persistence format version (6 for stylegan2-ada-pytorch)
    stylegan3: bool = False         # module_src (read as text, never run) is StyleGAN3's network file


class OfficialNetwork(NamedTuple):
    """One network of a snapshot; unpacks as ``(class_name, init_kwargs, state_dict)``."""

    class_name: str                 # official class path, e.g. "training.networks.Generator"
    init_kwargs: dict[str, Any]     # official constructor kwargs (plain dicts)
    state_dict: dict[str, torch.Tensor]  # official names, official order


@dataclass(frozen=True)
class OfficialSnapshot:
    """The parsed snapshot: networks present (not None) and the dataset kwargs."""

    networks: dict[str, OfficialNetwork]
    training_set_kwargs: dict[str, Any] | None = None
    other_keys: tuple[str, ...] = field(default=())


class _StorageType:
    """Marker for ``torch.<Type>Storage`` inside a storage blob (never called)."""

    def __init__(self, name: str):
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


class _StorageRef(NamedTuple):
    key: str
    dtype: torch.dtype
    numel: int
    view: tuple[int, int] | None     # (offset, size) of a legacy storage view


@dataclass
class _Storage:
    """A deserialized storage: a flat 1-D tensor."""

    data: torch.Tensor


# ----------------------------------------------------------------------------- restricted unpicklers


class _Refusing(pickle.Unpickler):
    """Base: every global is refused unless ``allowed`` maps it; persistent ids refused."""

    allowed: dict[tuple[str, str], Any] = {}

    def __init__(self, file: io.BytesIO, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        target = self.allowed.get((module, name))
        if target is None:
            py3 = _compat_pickle.NAME_MAPPING.get((module, name))
            py3 = py3 or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
            alias = f" (Python 3: '{'.'.join(py3)}')" if py3 != (module, name) else ""
            raise CheckpointError(
                f"{self.where}: refusing to load global '{module}.{name}'{alias} (not part of an official "
                f"StyleGAN2-ADA snapshot; nothing was executed)")
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self.where}: unexpected persistent id {str(pid)[:60]!r} in pickle")


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise CheckpointError("persistent object: meta is not a {'type': 'class', ...} dict")
    name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(name, str) or not isinstance(state, dict):
        raise CheckpointError("persistent object: meta lacks a class_name string or a state dict")
    version = meta.get("version")
    src = meta.get("module_src")
    sg3 = isinstance(src, str) and "design_lowpass_filter" in src  # StyleGAN3's networks_stylegan3.py
    return PersistentObject(class_name=name, state=dict(state), version=version if isinstance(version, int) else None,
                            stylegan3=sg3)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"tensor: storage is {type(storage).__name__}, expected a serialized storage")
    ints = (storage_offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else None
    if ints is None or len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in ints):
        raise CheckpointError("tensor: malformed size/stride/offset")
    if int(np.prod(size, dtype=np.int64)) > max(storage.data.numel(), 1):
        raise CheckpointError("tensor: has more elements than its storage (expanded tensors are not supported)")
    try:
        view = storage.data.as_strided(size, stride, storage_offset)
    except RuntimeError as e:
        raise CheckpointError(f"tensor: size/stride out of bounds of its storage ({first_line(e)})") from e
    return view.clone(memory_format=torch.contiguous_format)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None,
                       state: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"parameter: data is {type(data).__name__}, expected a tensor")
    return data


def _encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for bytes: latin-1 text only."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise CheckpointError("_codecs.encode: only latin-1 encoding of text is supported")
    return text.encode("latin-1")


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes) \
            or len(data) != dtype.itemsize:
        raise CheckpointError("numpy scalar: only plain numeric scalars are supported")
    return np.frombuffer(data, dtype=dtype)[0]


def _load_from_bytes(blob: Any) -> _Storage:
    if not isinstance(blob, bytes):
        raise CheckpointError("storage: _load_from_bytes argument is not bytes")
    return _parse_legacy_storage(blob)


class _OuterUnpickler(_Refusing):
    allowed = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("dnnlib.util", "EasyDict"): dict,
        ("dnnlib", "EasyDict"): dict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_from_bytes,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
        ("builtins", "set"): set,
        ("__builtin__", "set"): set,
        ("_codecs", "encode"): _encode,
    }


class _PlainUnpickler(_Refusing):
    """No globals at all (magic number, protocol, sys info, key list of a storage blob)."""


class _BlobUnpickler(_Refusing):
    """The storage object of a legacy blob: only ``torch.<Type>Storage`` markers and storage ids."""

    allowed = {("torch", name): _StorageType(name) for name in _STORAGE_DTYPES}

    def persistent_load(self, pid: Any) -> _StorageRef:
        ok = (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
              and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)
              and pid[4] >= 0)
        if not ok:
            raise CheckpointError(f"{self.where}: malformed storage id {str(pid)[:80]!r}")
        view = pid[5]
        if view is not None:
            if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int) for v in view[1:])):
                raise CheckpointError(f"{self.where}: malformed storage view {str(view)[:80]!r}")
            view = (view[1], view[2])
        return _StorageRef(pid[2], pid[1].dtype, pid[4], view)


def _parse_legacy_storage(blob: bytes) -> _Storage:
    """Torch's legacy format: 5 pickles (magic, protocol, sys info, object, keys) + raw data per key."""
    where = "storage blob"
    f = io.BytesIO(blob)
    try:
        magic = _PlainUnpickler(f, where).load()
        proto = _PlainUnpickler(f, where).load()
        sys_info = _PlainUnpickler(f, where).load()
        if magic != LEGACY_MAGIC or proto != LEGACY_PROTOCOL:
            raise CheckpointError(f"{where}: not torch's legacy storage format (magic/protocol mismatch)")
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise CheckpointError(f"{where}: only little-endian storages are supported")
        obj = _BlobUnpickler(f, where).load()
        keys = _PlainUnpickler(f, where).load()
    except CheckpointError:
        raise
    except Exception as e:  # truncated or corrupt inner pickles
        raise CheckpointError(f"{where}: corrupt ({type(e).__name__}: {first_line(e)})") from e
    if not isinstance(obj, _StorageRef) or not isinstance(keys, list) or obj.key not in keys:
        raise CheckpointError(f"{where}: does not hold exactly a storage")
    raw = {}
    for key in keys:
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{where}: truncated data of storage {key!r}")
        (count,) = struct.unpack("<q", head)
        nbytes = count * torch.empty(0, dtype=obj.dtype).element_size()
        if count < 0 or nbytes > len(blob) - f.tell():
            raise CheckpointError(f"{where}: storage {key!r} claims {count} elements beyond the data")
        raw[key] = f.read(nbytes)
    if f.read(1):
        raise CheckpointError(f"{where}: trailing bytes after the storage data")
    data = raw[obj.key]
    flat = (torch.frombuffer(bytearray(data), dtype=obj.dtype) if data
            else torch.empty(0, dtype=obj.dtype))
    if flat.numel() != obj.numel:
        raise CheckpointError(f"{where}: storage has {flat.numel()} elements, its id says {obj.numel}")
    if obj.view is not None:
        offset, size = obj.view
        if offset < 0 or size < 0 or offset + size > flat.numel():
            raise CheckpointError(f"{where}: storage view out of bounds")
        flat = flat[offset:offset + size]
    return _Storage(flat)


# ----------------------------------------------------------------------------- reading snapshots


def restricted_loads(data: bytes, *, where: str = "pickle") -> Any:
    """Unpickle ``data`` with the restricted unpickler; networks come back as PersistentObject."""
    if data[:4] == b"PK\x03\x04":
        raise CheckpointError(f"{where}: is a zip archive (torch.save?), not an official StyleGAN2 pickle")
    if data[:1] != b"\x80":
        raise CheckpointError(f"{where}: not a pickle file of protocol 2 or later")
    try:
        return _OuterUnpickler(io.BytesIO(data), where).load()
    except CheckpointError as e:
        msg = str(e)
        raise CheckpointError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    except Exception as e:
        raise CheckpointError(f"{where}: corrupt or truncated pickle ({type(e).__name__}: {first_line(e)})") from e


def _plain(value: Any, where: str) -> Any:
    """Nested dicts/lists with numpy scalars made Python numbers; networks are refused here."""
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (PersistentObject, torch.Tensor, _Storage)):
        raise CheckpointError(f"{where}: expected plain data, found {type(value).__name__}")
    return value


def network_state_dict(node: PersistentObject, *, where: str = "network") -> dict[str, torch.Tensor]:
    """Official ``state_dict()``: own parameters, own persistent buffers, then children as ``name.``."""
    out: dict[str, torch.Tensor] = {}

    def walk(obj: Any, prefix: str) -> None:
        if not isinstance(obj, PersistentObject):
            raise CheckpointError(f"{where}: submodule {prefix.rstrip('.') or '<root>'} is "
                                  f"{type(obj).__name__}, not a persistent module")
        st = obj.state
        params, buffers, modules = st.get("_parameters"), st.get("_buffers"), st.get("_modules")
        if not all(isinstance(d, dict) for d in (params, buffers, modules)):
            raise CheckpointError(f"{where}: module {prefix.rstrip('.') or '<root>'} ({obj.class_name}) "
                                  f"lacks _parameters/_buffers/_modules")
        skip = st.get("_non_persistent_buffers_set") or set()
        for kind, table in (("parameter", params), ("buffer", buffers)):
            for name, t in table.items():
                if t is None or (kind == "buffer" and name in skip):
                    continue
                if not isinstance(t, torch.Tensor):
                    raise CheckpointError(f"{where}: {kind} {prefix}{name} is {type(t).__name__}, not a tensor")
                out[prefix + name] = t
        for name, child in modules.items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(node, "")
    return out


def official_network(node: PersistentObject, *, where: str = "network") -> OfficialNetwork:
    """(official class path, constructor kwargs, state dict) of one persistent network."""
    init_args = node.state.get("_init_args", ())
    if init_args not in ((), [], None):
        raise CheckpointError(f"{where}: positional constructor arguments are not supported")
    init_kwargs = _plain(node.state.get("_init_kwargs") or {}, f"{where}._init_kwargs")
    if not isinstance(init_kwargs, dict):
        raise CheckpointError(f"{where}: _init_kwargs is not a dict")
    if node.stylegan3:
        class_name = f"training.networks_stylegan3.{node.class_name}"  # not supported by medcf: clear error later
    else:
        class_name = OFFICIAL_CLASS_PATHS.get(node.class_name, node.class_name)
    return OfficialNetwork(class_name, init_kwargs, network_state_dict(node, where=where))


def load_official_pickle(path: str | os.PathLike) -> OfficialSnapshot:
    """Parse an official snapshot without executing anything it contains."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    top = restricted_loads(path.read_bytes(), where=str(path))
    if not isinstance(top, dict):
        raise CheckpointError(f"{path}: top level is {type(top).__name__}, expected a snapshot dict")
    networks = {}
    for key in NETWORK_KEYS:
        node = top.get(key)
        if node is None:
            continue
        if not isinstance(node, PersistentObject):
            raise CheckpointError(f"{path}: '{key}' is {type(node).__name__}, not an official network")
        networks[key] = official_network(node, where=f"{path}:{key}")
    if "G" not in networks and "G_ema" not in networks:
        raise CheckpointError(f"{path}: holds neither 'G' nor 'G_ema' (keys: {sorted(map(str, top))})")
    tsk = top.get("training_set_kwargs")
    tsk = _plain(tsk, f"{path}:training_set_kwargs") if isinstance(tsk, dict) else None
    others = tuple(sorted(str(k) for k in top if k not in (*NETWORK_KEYS, "training_set_kwargs")))
    return OfficialSnapshot(networks=networks, training_set_kwargs=tsk, other_keys=others)


# ----------------------------------------------------------------------------- conversion


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def build_network(net: OfficialNetwork, *, where: str) -> torch.nn.Module:
    """A medcf module from an official network (augment pipe here; G/D via ``official.py``)."""
    if net.class_name == OFFICIAL_CLASS_PATHS["AugmentPipe"]:
        from medcf.generators.stylegan2.augment import AugmentPipe
        return AugmentPipe.from_official(net.init_kwargs, net.state_dict)
    try:
        from medcf.generators.stylegan2.official import build_from_official
    except ImportError as e:
        raise MedcfError(f"{where}: StyleGAN2 network conversion is unavailable ({first_line(e)})") from e
    return build_from_official(net.class_name, net.init_kwargs, net.state_dict)


def convert_stylegan2_pkl(pkl_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                          overwrite: bool = False) -> Path:
    """Convert an official snapshot into medcf checkpoint directories.

    Writes ``OUT_DIR/{G,G_ema,D,augment_pipe}/`` (those present in the pickle),
    ``OUT_DIR/training_set_kwargs.json`` and ``OUT_DIR/snapshot.json`` (source,
    sha256, official class names and constructor kwargs). The directory appears
    atomically; an existing non-empty ``OUT_DIR`` is refused unless ``overwrite``.

    Example:
        >>> convert_stylegan2_pkl("network-snapshot-000100.pkl", "runs/sg2")  # doctest: +SKIP
        >>> G = StyleGAN2Generator.load("runs/sg2/G_ema")                      # doctest: +SKIP
    """
    pkl_path, out_dir = Path(pkl_path), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise MedcfError(f"{out_dir}: output directory exists and is not empty (pass --overwrite / overwrite=True to replace it)")
    snap = load_official_pickle(pkl_path)
    modules = {}
    for key, net in snap.networks.items():
        log.info("converting %s (%s, %d tensors)", key, net.class_name, len(net.state_dict))
        modules[key] = build_network(net, where=f"{pkl_path}:{key}")
    digest = hashlib.sha256(pkl_path.read_bytes()).hexdigest()
    summary = {
        "format": "medcf-stylegan2-snapshot", "version": 1,
        "source": pkl_path.name, "source_sha256": digest,
        "networks": {k: {"class_name": n.class_name, "init_kwargs": _json_safe(n.init_kwargs),
                         "medcf_kind": getattr(modules[k], "kind", None)} for k, n in snap.networks.items()},
        "other_keys": list(snap.other_keys),
    }

    def fill(tmp: Path) -> None:
        for key, module in modules.items():
            module.save(tmp / key, meta={"source": pkl_path.name, "official_class": snap.networks[key].class_name})
        (tmp / "training_set_kwargs.json").write_text(
            json.dumps(_json_safe(snap.training_set_kwargs or {}), indent=2) + "\n")
        (tmp / "snapshot.json").write_text(json.dumps(summary, indent=2) + "\n")

    return atomic_write_dir(out_dir, fill)
