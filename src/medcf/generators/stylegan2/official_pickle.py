"""Read official StyleGAN2-ADA training snapshots (``network-snapshot-*.pkl``) safely.

An official snapshot is a pickle that embeds the official source code and, when
loaded with ``pickle.load``, ``exec``s it. This module never does that: it reads
the file with medcf's one restricted unpickler (:mod:`medcf.io.unpickle`:
opcode interpreter, byte/element/size/depth budgets, no ``BUILD`` on anything
but numpy placeholders) and admits only the handful of globals such a file
needs, each resolved to local, data-only code:

* ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`PersistentObject`
  (class name + the module's ``__dict__``; the embedded ``module_src`` is dropped unread);
* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter[_with_state]`` -> tensors
  (size/stride/offset checked against the storage; hooks and tensor state must be empty);
* ``torch.storage._load_from_bytes`` -> the legacy storage blob is parsed here
  (its inner pickles admit only ``torch.<Type>Storage`` markers);
* ``collections.OrderedDict``, ``dnnlib.util.EasyDict`` (-> dict), ``numpy.dtype``
  (plain numeric only), ``numpy[._]core.multiarray.scalar``, ``builtins.set``,
  ``_codecs.encode`` (latin-1 only, protocol 2 bytes).

Any other global (``os.system``, ``builtins.eval``, ``subprocess.*`` ...) stops
the load with a one-line :class:`~medcf.errors.UnsafeFileError` naming it,
before anything is called.

Example:
    >>> snap = load_official_pickle("network-snapshot-000100.pkl")    # doctest: +SKIP
    >>> class_name, init_kwargs, state_dict = snap.networks["G_ema"]  # doctest: +SKIP
    >>> convert_stylegan2_pkl("network-snapshot-000100.pkl", "runs/sg2")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from medcf.errors import CheckpointError, MedcfError
from medcf.io import check_output, first_line, write_output_dir
from medcf.io.files import GiB, MiB, read_regular_file
from medcf.io.unpickle import (
    BYTES_COMPAT,
    NUMPY_DTYPE,
    NUMPY_SCALARS,
    ORDERED_DICT,
    PLAIN_DICT,
    SET,
    Context,
    Global,
    Limits,
    check_empty,
    safe_load,
    strided_copy,
)

log = logging.getLogger(__name__)

NETWORK_KEYS = ("G", "D", "G_ema", "augment_pipe")
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy (non-zip) serialization magic number
LEGACY_PROTOCOL = 1001
MAX_SNAPSHOT_BYTES = 4 * GiB
PURPOSE = "an official StyleGAN2-ADA snapshot"
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


def snapshot_limits(nbytes: int) -> Limits:
    """Budget for a snapshot of ``nbytes``: storages + tensors may take at most 4x the file (+1 MiB).

    A well-formed snapshot needs 2x (each storage is copied once, each tensor once).
    """
    return Limits(max_bytes=4 * nbytes + MiB, max_elements=4 * nbytes + MiB)


# ----------------------------------------------------------------------------- data placeholders


@dataclass
class PersistentObject:
    """What ``_reconstruct_persistent_obj`` would have built, as plain data (code never runs)."""

    class_name: str                 # as stored, e.g. "Generator"
    state: dict[str, Any]           # the module's __dict__ (_parameters, _buffers, _modules, ...)
    version: int | None = None      # persistence format version (6 for stylegan2-ada-pytorch)
    stylegan3: bool = False         # module_src (read as text, never run) is StyleGAN3's network file

    def __safe_children__(self) -> tuple[dict[str, Any]]:  # walked by medcf.io.unpickle.finalize
        return (self.state,)


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


@dataclass(frozen=True)
class _StorageRef:
    """The persistent id of a legacy blob's storage."""

    key: str
    dtype: torch.dtype
    numel: int
    view: tuple[int, int] | None     # (offset, size) of a legacy storage view


@dataclass
class _Storage:
    """A deserialized storage: a flat 1-D tensor."""

    data: torch.Tensor


# ----------------------------------------------------------------------------- handlers (data only)


def _reconstruct_persistent_obj(ctx: Context, args: tuple) -> PersistentObject:
    meta = args[0] if len(args) == 1 else None
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise ctx.refuse("persistent object: meta is not a {'type': 'class', ...} dict")
    name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(name, str) or not isinstance(state, dict):
        raise ctx.refuse("persistent object: meta lacks a class_name string or a state dict")
    version = meta.get("version")
    src = meta.get("module_src")
    sg3 = isinstance(src, str) and "design_lowpass_filter" in src  # StyleGAN3's networks_stylegan3.py
    return PersistentObject(class_name=name, state=dict(state), version=version if type(version) is int else None,
                            stylegan3=sg3)


def _rebuild_tensor_v2(ctx: Context, args: tuple) -> torch.Tensor:
    if not 4 <= len(args) <= 7:
        raise ctx.refuse("tensor: malformed _rebuild_tensor_v2 arguments")
    storage, offset, size, stride = args[:4]
    if not isinstance(storage, _Storage):
        raise ctx.refuse(f"tensor: storage is {type(storage).__name__}, expected a serialized storage")
    for extra, what in zip(args[5:], ("tensor backward hooks", "tensor metadata"), strict=False):
        check_empty(ctx, extra, what)
    return strided_copy(ctx, storage.data, offset, size, stride, "tensor")


def _rebuild_parameter(ctx: Context, args: tuple) -> torch.Tensor:
    if not 1 <= len(args) <= 4 or not isinstance(args[0], torch.Tensor):
        raise ctx.refuse("parameter: data is not a tensor")
    for extra, what in zip(args[2:], ("parameter backward hooks", "parameter state"), strict=False):
        check_empty(ctx, extra, what)
    return args[0]


def _load_from_bytes(ctx: Context, args: tuple) -> _Storage:
    if len(args) != 1 or not isinstance(args[0], bytes):
        raise ctx.refuse("storage: _load_from_bytes argument is not bytes")
    return parse_legacy_storage(ctx, args[0])


SNAPSHOT_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"):
        Global("_reconstruct_persistent_obj", call=_reconstruct_persistent_obj),
    ("collections", "OrderedDict"): ORDERED_DICT,
    ("dnnlib.util", "EasyDict"): PLAIN_DICT,
    ("dnnlib", "EasyDict"): PLAIN_DICT,
    ("torch._utils", "_rebuild_tensor_v2"): Global("_rebuild_tensor_v2", call=_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): Global("_rebuild_parameter", call=_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): Global("_rebuild_parameter", call=_rebuild_parameter),
    ("torch.storage", "_load_from_bytes"): Global("_load_from_bytes", call=_load_from_bytes),
    ("numpy", "dtype"): NUMPY_DTYPE,
    **NUMPY_SCALARS,
    ("builtins", "set"): SET,
    **BYTES_COMPAT,
}
_BLOB_GLOBALS = {("torch", name): Global(f"torch.{name}") for name in _STORAGE_DTYPES}


def _storage_id(ctx: Context, pid: Any) -> _StorageRef:
    ok = (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], Global)
          and pid[1].name.startswith("torch.") and isinstance(pid[2], str) and type(pid[4]) is int and pid[4] >= 0)
    if not ok:
        raise ctx.refuse(f"malformed storage id {str(pid)[:80]!r}")
    view = pid[5]
    if view is not None:
        if not (isinstance(view, tuple) and len(view) == 3 and all(type(v) is int and v >= 0 for v in view[1:])):
            raise ctx.refuse(f"malformed storage view {str(view)[:80]!r}")
        view = (view[1], view[2])
    return _StorageRef(pid[2], _STORAGE_DTYPES[pid[1].name[len("torch."):]], pid[4], view)


def parse_legacy_storage(outer: Context, blob: bytes) -> _Storage:
    """Torch's legacy format: 5 pickles (magic, protocol, sys info, object, keys) + raw data per key.

    Shares the outer load's byte budget; the raw data is copied once (charged) and
    its element count must equal the storage id's.
    """
    ctx = Context(f"{outer.where}: storage blob" if outer.where != "storage blob" else outer.where, outer.limits)
    ctx.bytes, ctx.elements = outer.bytes, outer.elements
    f = io.BytesIO(blob)
    magic = safe_load(f, ctx=ctx, allowed={}, purpose="a torch storage")
    proto = safe_load(f, ctx=ctx, allowed={}, purpose="a torch storage")
    sys_info = safe_load(f, ctx=ctx, allowed={}, purpose="a torch storage")
    if magic != LEGACY_MAGIC or proto != LEGACY_PROTOCOL:
        raise ctx.refuse("not torch's legacy storage format (magic/protocol mismatch)")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ctx.refuse("only little-endian storages are supported")
    obj = safe_load(f, ctx=ctx, allowed=_BLOB_GLOBALS, purpose="a torch storage", persistent_load=_storage_id)
    keys = safe_load(f, ctx=ctx, allowed={}, purpose="a torch storage")
    if not isinstance(obj, _StorageRef) or not isinstance(keys, list) or keys != [obj.key]:
        raise ctx.refuse("does not hold exactly one storage")
    head = f.read(8)
    if len(head) != 8:
        raise ctx.refuse(f"truncated data of storage {obj.key!r}")
    (count,) = struct.unpack("<q", head)
    itemsize = torch.empty(0, dtype=obj.dtype).element_size()
    if count < 0 or count * itemsize > len(blob) - f.tell():
        raise ctx.refuse(f"storage {obj.key!r} claims {count} elements beyond the data")
    if count != obj.numel:
        raise ctx.refuse(f"storage has {count} elements, its id says {obj.numel}")
    ctx.charge(count * itemsize, count, "storage")
    data = f.read(count * itemsize)
    if f.read(1):
        raise ctx.refuse("trailing bytes after the storage data")
    flat = torch.frombuffer(bytearray(data), dtype=obj.dtype) if data else torch.empty(0, dtype=obj.dtype)
    if obj.view is not None:
        offset, size = obj.view
        if offset + size > flat.numel():
            raise ctx.refuse("storage view out of bounds")
        flat = flat[offset:offset + size]
    outer.bytes, outer.elements = ctx.bytes, ctx.elements
    return _Storage(flat)


# ----------------------------------------------------------------------------- reading snapshots


def restricted_loads(data: bytes, *, where: str = "pickle", limits: Limits | None = None) -> Any:
    """Unpickle ``data`` with the snapshot allowlist; networks come back as PersistentObject."""
    if data[:4] == b"PK\x03\x04":
        raise CheckpointError(f"{where}: is a zip archive (torch.save?), not an official StyleGAN2 pickle")
    if data[:1] != b"\x80":
        raise CheckpointError(f"{where}: not a pickle file of protocol 2 or later")
    ctx = Context(where, limits or snapshot_limits(len(data)))
    return safe_load(io.BytesIO(data), ctx=ctx, allowed=SNAPSHOT_GLOBALS, purpose=PURPOSE)


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
    return parse_snapshot(read_regular_file(path, max_bytes=MAX_SNAPSHOT_BYTES, what="snapshot"), where=str(path))


def parse_snapshot(data: bytes, *, where: str) -> OfficialSnapshot:
    """:func:`load_official_pickle` on bytes already read (``where`` names them in errors)."""
    path = where
    top = restricted_loads(data, where=where)
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
    check_output(out_dir, overwrite=overwrite, flag="OUT_DIR")  # symlink / non-empty refused; checked again at swap
    data = read_regular_file(pkl_path, max_bytes=MAX_SNAPSHOT_BYTES, what="snapshot")
    snap = parse_snapshot(data, where=str(pkl_path))
    modules = {}
    for key, net in snap.networks.items():
        log.info("converting %s (%s, %d tensors)", key, net.class_name, len(net.state_dict))
        modules[key] = build_network(net, where=f"{pkl_path}:{key}")
    digest = hashlib.sha256(data).hexdigest()
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

    return write_output_dir(out_dir, fill, overwrite=overwrite, flag="OUT_DIR")
