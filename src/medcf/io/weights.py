"""The safetensors weights of a model directory, checked before anything is built or loaded.

:func:`read_weights_header` parses only the header of ``model.safetensors`` (8-byte
length + JSON) and checks it against the file: a regular file, a header of sane
size, known dtypes, non-negative shapes, and every tensor's byte range inside
the file with exactly shape x itemsize bytes, so a truncated or padded file is
a one-line :class:`~medcf.errors.CheckpointError` (``medcf info`` uses this
without reading the tensors). :func:`check_against` compares that header with
the tensors a model expects (names, shapes, dtypes) before the weights are read.

Example:
    >>> spec = read_weights_header("runs/clf/model/model.safetensors")     # doctest: +SKIP
    >>> spec.tensors["fc.weight"]                                          # doctest: +SKIP
    TensorSpec(dtype='F32', shape=(2, 64))
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from medcf.errors import CheckpointError, UnsafeFileError
from medcf.io.files import check_regular_file

MAX_HEADER_BYTES = 100 * 2**20      # safetensors' own limit
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
TORCH_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                torch.bool: "BOOL"}


@dataclass(frozen=True)
class TensorSpec:
    dtype: str                # safetensors dtype name, e.g. "F32"
    shape: tuple[int, ...]


@dataclass(frozen=True)
class WeightsHeader:
    """What a safetensors file declares: tensors, string metadata, sizes."""

    tensors: dict[str, TensorSpec]
    metadata: dict[str, str]
    file_bytes: int

    @property
    def parameters(self) -> int:
        total = 0
        for spec in self.tensors.values():
            n = 1
            for s in spec.shape:
                n *= s
            total += n
        return total


def read_weights_header(path: str | os.PathLike) -> WeightsHeader:
    """Parse and check the header of a safetensors file (the tensors are not read)."""
    path = Path(path)
    try:
        size = check_regular_file(path, what="weights file")
    except UnsafeFileError as e:
        raise CheckpointError(str(e)) from None

    def bad(reason: str) -> CheckpointError:
        return CheckpointError(f"{path}: corrupt weights file ({reason})")

    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise bad("shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise bad(f"header length {n} exceeds the file")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad(f"header is not JSON: {str(e)[:60]}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("__metadata__ is not a string map")
    data_bytes = size - 8 - n
    tensors, ends = {}, []
    for name, entry in header.items():
        ok = (isinstance(entry, dict) and entry.get("dtype") in DTYPE_SIZES
              and isinstance(entry.get("shape"), list) and all(type(s) is int and s >= 0 for s in entry["shape"])
              and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
              and all(type(o) is int and o >= 0 for o in entry["data_offsets"]))
        if not ok:
            raise bad(f"malformed entry for tensor {name[:60]!r}")
        begin, end = entry["data_offsets"]
        numel = 1
        for s in entry["shape"]:
            numel *= s
        if end < begin or end - begin != numel * DTYPE_SIZES[entry["dtype"]]:
            raise bad(f"tensor {name[:60]!r}: byte range does not match its shape and dtype")
        if end > data_bytes:
            raise bad(f"tensor {name[:60]!r} ends at byte {end}, the data has {data_bytes} (truncated?)")
        tensors[name] = TensorSpec(entry["dtype"], tuple(entry["shape"]))
        ends.append(end)
    if data_bytes != max(ends, default=0):
        raise bad(f"{data_bytes - max(ends, default=0)} bytes after the last tensor")
    return WeightsHeader(tensors=tensors, metadata=meta, file_bytes=size)


def check_against(header: WeightsHeader, expected: dict[str, torch.Tensor], *, where: str, what: str) -> None:
    """One-line error unless the file holds exactly ``expected``'s names, shapes and dtypes."""
    missing = sorted(set(expected) - set(header.tensors))
    unexpected = sorted(set(header.tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where}: weights do not match {what} (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    for name, t in expected.items():
        spec = header.tensors[name]
        if spec.shape != tuple(t.shape):
            raise CheckpointError(f"{where}: {name} has shape {list(spec.shape)} in the file, {what} expects "
                                  f"{list(t.shape)} (config and weights disagree)")
        want = TORCH_DTYPES.get(t.dtype)
        if want is not None and spec.dtype != want:
            raise CheckpointError(f"{where}: {name} is {spec.dtype} in the file, {what} expects {want}")
