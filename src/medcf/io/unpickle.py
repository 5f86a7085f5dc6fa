"""One restricted unpickler for every untrusted pickle medcf reads.

Official StyleGAN2-ADA snapshots and the LPIPS weight files are pickles. This
module never runs ``pickle.load``: it interprets the opcode stream itself
(decoded by :func:`pickletools.genops`, which only parses) and builds plain
data. Nothing a file names is ever imported or called. What a file may build:

* plain values and containers (``None``, bools, numbers, text, bytes, list,
  tuple, dict, set, frozenset); dict keys and set items must be flat atoms;
* the globals a reader allows (``allowed``), each mapped to a local handler
  (:class:`Global`) that validates its arguments: any other global, and the
  ``INST``/``OBJ``/extension/out-of-band-buffer opcodes, stop the load;
* numpy dtypes only from plain numeric type strings (``'f4'``, ``'i8'`` ...);
  their pickled state is checked, never applied with ``__setstate__``;
* numpy arrays and scalars whose byte counts equal shape x itemsize, copied
  from the file's own bytes; ``BUILD`` is refused on anything but these two
  placeholders (so never on dtypes already built, tensors or other objects).

Budgets (:class:`Limits`) are checked before anything is allocated: bytes
and elements of arrays/tensors/storages (a storage reused by many tensors is
charged once per tensor), integer sizes, mark nesting, and, after the stream
ends, an iterative walk that refuses cycles, nesting deeper than
``max_depth`` and structures whose size, counting every shared reference as
a copy, exceeds ``max_nodes`` (so later recursive walks cannot explode).
Every refusal is one :class:`~medcf.errors.UnsafeFileError` line naming the
file and the reason.

Example:
    >>> allowed = {("collections", "OrderedDict"): ORDERED_DICT, **NUMPY_ARRAYS}
    >>> safe_loads(pickle.dumps({"w": np.ones(2)}), where="w.pkl", allowed=allowed)  # doctest: +SKIP
    {'w': array([1., 1.])}
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickletools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medcf.errors import MedcfError, UnsafeFileError

GiB = 2**30
NUMERIC_TYPESTRS = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})
_ATOMS = (type(None), bool, int, float, complex, str, bytes, bytearray, np.generic, np.dtype, np.ndarray,
          torch.Tensor)
_KEY_ATOMS = (type(None), bool, int, float, str, bytes)
_REFUSED_OPS = {"INST", "OBJ", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"}
MAX_INT_BITS = 128           # the legacy torch magic number needs 80


@dataclass(frozen=True)
class Limits:
    """What one load may cost; every bound is checked before the allocation it guards."""

    max_bytes: int = 4 * GiB          # array/tensor/storage bytes allocated by the whole load
    max_elements: int = 2**30         # array/tensor elements allocated by the whole load
    max_nodes: int = 5_000_000        # values in the result, every shared reference counted as a copy
    max_depth: int = 200              # container nesting (and pickle MARK nesting)
    max_ndim: int = 32                # dimensions of one array/tensor


class Context:
    """The running load: where (for messages), its limits and what it has spent so far."""

    def __init__(self, where: str, limits: Limits):
        self.where, self.limits = where, limits
        self.bytes = self.elements = 0

    def refuse(self, reason: str) -> UnsafeFileError:
        """The one-line error for ``reason`` (raise it)."""
        return UnsafeFileError(f"{self.where}: {reason}")

    def charge(self, nbytes: int, nelements: int, what: str) -> None:
        """Spend from the byte/element budget; refuses before the caller allocates."""
        self.bytes += nbytes
        self.elements += nelements
        if self.bytes > self.limits.max_bytes:
            raise self.refuse(f"{what} would take the load past its budget of {self.limits.max_bytes} bytes")
        if self.elements > self.limits.max_elements:
            raise self.refuse(f"{what} would take the load past its budget of {self.limits.max_elements} elements")

    def numel(self, shape: Any, what: str) -> int:
        """Element count of a shape of non-negative ints, refused before it can exceed the budget."""
        if not isinstance(shape, (tuple, list)) or len(shape) > self.limits.max_ndim \
                or not all(type(s) is int and s >= 0 for s in shape):
            raise self.refuse(f"{what}: malformed shape {str(shape)[:60]}")
        n = 1
        for s in shape:
            n *= s
            if n > self.limits.max_elements:
                raise self.refuse(f"{what}: shape {str(tuple(shape))[:60]} exceeds the element budget "
                                  f"({self.limits.max_elements})")
        return n


@dataclass(frozen=True)
class Global:
    """An allowed global. ``call`` serves ``REDUCE``, ``new`` serves ``NEWOBJ``; both get (ctx, args)."""

    name: str
    call: Callable[[Context, tuple], Any] | None = None
    new: Callable[[Context, tuple], Any] | None = None


class Stub:
    """A placeholder a single ``BUILD`` may complete; replaced by ``resolve()`` in the result."""

    def build(self, ctx: Context, state: Any) -> None:
        raise ctx.refuse(f"BUILD (setting object state) on {type(self).__name__} is not allowed")

    def resolve(self, ctx: Context) -> Any:
        return self


# ----------------------------------------------------------------------------- numpy, data only


class DTypeStub(Stub):
    """``numpy.dtype(typestr, align, copy)``: plain numeric only; BUILD checks the state, never applies it."""

    def __init__(self, ctx: Context, args: tuple):
        if not (1 <= len(args) <= 3 and isinstance(args[0], str) and args[0] in NUMERIC_TYPESTRS):
            raise ctx.refuse(f"numpy dtype {str(args[:1])[:40]} refused (only plain numeric type strings "
                             f"{sorted(NUMERIC_TYPESTRS)})")
        self.dtype, self.built = np.dtype(args[0]), False

    def build(self, ctx: Context, state: Any) -> None:
        ok = (not self.built and isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
              and state[1] in ("<", ">", "|", "=") and state[2] is None and state[3] is None
              and state[4] is None and state[5] in (-1, self.dtype.itemsize)
              and state[6] in (-1, self.dtype.alignment) and state[7] == 0
              and (len(state) == 8 or state[8] is None))
        if not ok:
            raise ctx.refuse(f"numpy dtype state {str(state)[:60]} refused (only plain numeric dtypes)")
        if state[1] == ">":
            self.dtype = self.dtype.newbyteorder(">")
        self.built = True

    def resolve(self, ctx: Context) -> np.dtype:
        return self.dtype


def _dtype(ctx: Context, value: Any, what: str) -> np.dtype:
    if isinstance(value, DTypeStub):
        return value.dtype
    raise ctx.refuse(f"{what}: dtype is {type(value).__name__}, expected a numeric numpy dtype")


def array_from_bytes(ctx: Context, raw: Any, dtype: np.dtype, shape: Any, fortran: bool, what: str) -> np.ndarray:
    """A new array of ``shape`` from exactly ``numel * itemsize`` file bytes (budget charged first)."""
    n = ctx.numel(shape, what)
    if not isinstance(raw, (bytes, bytearray)):
        raise ctx.refuse(f"{what}: array data is {type(raw).__name__}, expected raw bytes (object arrays refused)")
    nbytes = n * dtype.itemsize
    if len(raw) != nbytes:
        raise ctx.refuse(f"{what}: {len(raw)} data bytes for shape {tuple(shape)} of {dtype} ({nbytes} expected)")
    ctx.charge(nbytes, n, what)
    flat = np.frombuffer(raw, dtype=dtype, count=n) if n else np.empty(0, dtype=dtype)
    return flat.reshape(tuple(shape), order="F" if fortran else "C").copy(order="K")


class ArrayStub(Stub):
    """``numpy.core.multiarray._reconstruct(ndarray, ...)``: allocates nothing until BUILD supplies data."""

    def __init__(self, ctx: Context, args: tuple):
        if not (args and isinstance(args[0], Global) and args[0].name == "numpy.ndarray"):
            raise ctx.refuse("numpy _reconstruct: only plain numpy.ndarray is allowed")
        self.array: np.ndarray | None = None

    def build(self, ctx: Context, state: Any) -> None:
        if self.array is not None or not isinstance(state, tuple) or len(state) not in (4, 5):
            raise ctx.refuse(f"numpy array state {str(state)[:60]} refused")
        shape, dtype, fortran, raw = state[-4:]
        self.array = array_from_bytes(ctx, raw, _dtype(ctx, dtype, "numpy array"), shape, bool(fortran),
                                      "numpy array")

    def resolve(self, ctx: Context) -> np.ndarray:
        if self.array is None:
            raise ctx.refuse("numpy array without data (no BUILD)")
        return self.array


def _frombuffer(ctx: Context, args: tuple) -> np.ndarray:
    if len(args) != 4 or args[3] not in ("C", "F"):
        raise ctx.refuse("numpy _frombuffer: malformed arguments")
    buf, dtype, shape, order = args
    return array_from_bytes(ctx, buf, _dtype(ctx, dtype, "numpy array"), shape, order == "F", "numpy array")


def _scalar(ctx: Context, args: tuple) -> np.generic:
    if len(args) != 2:
        raise ctx.refuse("numpy scalar: malformed arguments")
    return array_from_bytes(ctx, args[1], _dtype(ctx, args[0], "numpy scalar"), (), False, "numpy scalar")[()]


def _ordered_dict(ctx: Context, args: tuple) -> collections.OrderedDict:
    out: collections.OrderedDict = collections.OrderedDict()
    if args:
        if len(args) != 1 or not isinstance(args[0], list):
            raise ctx.refuse("OrderedDict: only a list of (key, value) pairs is allowed")
        for pair in args[0]:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise ctx.refuse("OrderedDict: item is not a (key, value) pair")
            _set_item(ctx, out, pair[0], pair[1])
    return out


def _set(ctx: Context, args: tuple) -> set:
    items = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else () if not args else None
    if items is None:
        raise ctx.refuse("set: only a list of items is allowed")
    out: set = set()
    for item in items:
        out.add(_key(ctx, item))
    return out


def _empty_dict(ctx: Context, args: tuple) -> dict:
    if args:
        raise ctx.refuse("dict subclass: unexpected constructor arguments")
    return {}


def _encode(ctx: Context, args: tuple) -> bytes:
    """``_codecs.encode(text, 'latin1')``: how protocols 0-2 store bytes."""
    if not (len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], str)
            and args[1].replace("-", "").lower() == "latin1"):
        raise ctx.refuse("_codecs.encode: only latin-1 encoding of text is supported")
    return args[0].encode("latin-1")


def _bytes(ctx: Context, args: tuple) -> bytes:
    if args:
        raise ctx.refuse("bytes: only the empty bytes object is built this way")
    return b""


ndarray = Global("numpy.ndarray")
# bytes as protocols 0-2 write them (``_codecs.encode``; ``bytes()`` for b"")
BYTES_COMPAT = {("_codecs", "encode"): Global("_codecs.encode", call=_encode),
                ("builtins", "bytes"): Global("builtins.bytes", call=_bytes)}
ORDERED_DICT = Global("collections.OrderedDict", call=_ordered_dict, new=lambda ctx, a: _ordered_dict(ctx, ()))
PLAIN_DICT = Global("dict", call=_empty_dict, new=_empty_dict)
SET = Global("builtins.set", call=_set)
NUMPY_DTYPE = Global("numpy.dtype", call=DTypeStub)
NUMPY_SCALARS = {(m, "scalar"): Global("numpy scalar", call=_scalar)
                 for m in ("numpy.core.multiarray", "numpy._core.multiarray")}
NUMPY_ARRAYS = {
    **{(m, "_reconstruct"): Global("numpy _reconstruct", call=ArrayStub)
       for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): Global("numpy _frombuffer", call=_frombuffer)
       for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): ndarray,
    ("numpy", "dtype"): NUMPY_DTYPE,
    **BYTES_COMPAT,
}


# ----------------------------------------------------------------------------- the interpreter


def _key(ctx: Context, key: Any) -> Any:
    if isinstance(key, _KEY_ATOMS) or (isinstance(key, tuple) and all(isinstance(k, _KEY_ATOMS) for k in key)):
        return key
    raise ctx.refuse(f"dict key / set item of type {type(key).__name__} refused (only flat plain values)")


def _set_item(ctx: Context, target: Any, key: Any, value: Any) -> None:
    if not isinstance(target, dict):
        raise ctx.refuse(f"SETITEM on {type(target).__name__} refused (only dicts)")
    target[_key(ctx, key)] = value


def _int(ctx: Context, value: Any) -> Any:
    if type(value) is int and value.bit_length() > MAX_INT_BITS:
        raise ctx.refuse(f"integer of {value.bit_length()} bits refused (limit {MAX_INT_BITS})")
    return value


def _lookup(ctx: Context, allowed: Mapping[tuple[str, str], Global], module: Any, name: Any, purpose: str) -> Global:
    if not (isinstance(module, str) and isinstance(name, str)):
        raise ctx.refuse("malformed global reference")
    py3 = _compat_pickle.NAME_MAPPING.get((module, name)) or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
    target = allowed.get((module, name)) or allowed.get(py3)
    if target is None:
        alias = f" (Python 3: '{'.'.join(py3)}')" if py3 != (module, name) else ""
        raise ctx.refuse(f"refusing to load global '{module}.{name}'{alias} (not part of {purpose}; "
                         "nothing was executed)")
    return target


def safe_load(file: io.BytesIO, *, ctx: Context, allowed: Mapping[tuple[str, str], Global],
              purpose: str = "the expected format",
              persistent_load: Callable[[Context, Any], Any] | None = None) -> Any:
    """Interpret one pickle from ``file`` (left just past its STOP) and return its checked value."""
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        nonlocal stack
        if not marks:
            raise ctx.refuse("corrupt pickle (no MARK on the stack)")
        items, stack = stack, marks.pop()
        return items

    try:
        for op, arg, _pos in pickletools.genops(file):
            name = op.name
            if name in ("PROTO", "FRAME"):
                if name == "PROTO" and arg > 5:
                    raise ctx.refuse(f"pickle protocol {arg} is not supported")
            elif name in _REFUSED_OPS:
                raise ctx.refuse(f"pickle opcode {name} refused (not used by plain data)")
            elif name == "MARK":
                if len(marks) >= ctx.limits.max_depth:
                    raise ctx.refuse(f"pickle nesting deeper than {ctx.limits.max_depth} refused")
                marks.append(stack)
                stack = []
            elif name == "STOP":
                break
            elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"):
                stack.append(_int(ctx, arg))
            elif name in ("FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES",
                          "SHORT_BINBYTES", "BINBYTES8", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                          "BINUNICODE8"):
                stack.append(arg)
            elif name == "BYTEARRAY8":
                stack.append(bytearray(arg))
            elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
                stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "EMPTY_SET":
                stack.append(set())
            elif name == "LIST":  # pop_mark() rebinds `stack`: call it before appending
                items = pop_mark()
                stack.append(items)
            elif name == "TUPLE":
                items = pop_mark()
                stack.append(tuple(items))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                if len(stack) < n:
                    raise ctx.refuse("corrupt pickle (stack underflow)")
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif name == "DICT":
                items, d = pop_mark(), {}
                for i in range(0, len(items) - 1, 2):
                    _set_item(ctx, d, items[i], items[i + 1])
                stack.append(d)
            elif name == "FROZENSET":
                items = pop_mark()
                stack.append(frozenset(_key(ctx, v) for v in items))
            elif name == "APPEND":
                value = stack.pop()
                if not isinstance(stack[-1], list):
                    raise ctx.refuse(f"APPEND on {type(stack[-1]).__name__} refused (only lists)")
                stack[-1].append(value)
            elif name == "APPENDS":
                items = pop_mark()
                if not isinstance(stack[-1], list):
                    raise ctx.refuse(f"APPENDS on {type(stack[-1]).__name__} refused (only lists)")
                stack[-1].extend(items)
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                _set_item(ctx, stack[-1], key, value)
            elif name == "SETITEMS":
                items = pop_mark()
                for i in range(0, len(items) - 1, 2):
                    _set_item(ctx, stack[-1], items[i], items[i + 1])
            elif name == "ADDITEMS":
                items = pop_mark()
                if not isinstance(stack[-1], set):
                    raise ctx.refuse(f"ADDITEMS on {type(stack[-1]).__name__} refused (only sets)")
                stack[-1].update(_key(ctx, v) for v in items)
            elif name == "POP":
                if stack:
                    stack.pop()
                else:
                    pop_mark()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise ctx.refuse(f"corrupt pickle (memo entry {arg} missing)")
                stack.append(memo[arg])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name == "GLOBAL":
                module, _, gname = str(arg).partition(" ")
                stack.append(_lookup(ctx, allowed, module, gname, purpose))
            elif name == "STACK_GLOBAL":
                gname, module = stack.pop(), stack.pop()
                stack.append(_lookup(ctx, allowed, module, gname, purpose))
            elif name == "REDUCE":
                args, fn = stack.pop(), stack[-1]
                if not isinstance(fn, Global) or fn.call is None or not isinstance(args, tuple):
                    raise ctx.refuse(f"calling {getattr(fn, 'name', type(fn).__name__)} is not allowed")
                stack[-1] = fn.call(ctx, args)
            elif name in ("NEWOBJ", "NEWOBJ_EX"):
                kwargs = stack.pop() if name == "NEWOBJ_EX" else {}
                args, cls = stack.pop(), stack.pop()
                if not isinstance(cls, Global) or cls.new is None or not isinstance(args, tuple) or kwargs:
                    raise ctx.refuse(f"creating {getattr(cls, 'name', type(cls).__name__)} is not allowed")
                stack.append(cls.new(ctx, args))
            elif name == "BUILD":
                state, target = stack.pop(), stack[-1]
                if not isinstance(target, Stub):
                    raise ctx.refuse(f"BUILD (setting object state) on {type(target).__name__} is not allowed")
                target.build(ctx, state)
            elif name in ("PERSID", "BINPERSID"):
                pid = arg if name == "PERSID" else stack.pop()
                if persistent_load is None:
                    raise ctx.refuse(f"unexpected persistent id {str(pid)[:60]!r}")
                stack.append(persistent_load(ctx, pid))
            else:  # pragma: no cover - every opcode of protocols 0-5 is handled above
                raise ctx.refuse(f"pickle opcode {name} is not supported")
        else:
            raise ctx.refuse("corrupt or truncated pickle (no STOP)")
        if len(stack) != 1 or marks:
            raise ctx.refuse("corrupt pickle (stack not empty at STOP)")
    except MedcfError:
        raise
    except RecursionError:
        raise ctx.refuse("pickle nested too deeply") from None
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, EOFError,
            UnicodeDecodeError, RuntimeError) as e:
        raise ctx.refuse(f"corrupt or truncated pickle ({type(e).__name__}: {str(e)[:80]})") from None
    return finalize(ctx, stack[0])


def _children(obj: Any) -> list[Any] | None:
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, Stub):
        return []
    children = getattr(obj, "__safe_children__", None)
    return list(children()) if callable(children) else None


def finalize(ctx: Context, root: Any) -> Any:
    """Resolve placeholders and check the result: no cycles, depth and tree size within limits.

    Iterative post-order walk; a shared object is processed once but its size is
    counted at every reference, so a "billion laughs" structure is refused here.
    Objects other than builtin containers may expose ``__safe_children__()``
    (their children must be dicts or lists, updated in place).
    """
    lim = ctx.limits
    done: dict[int, Any] = {}          # id -> resolved value
    size: dict[int, int] = {}          # id -> node count if every reference were a copy
    keep: list[Any] = []               # keeps originals alive so ids stay unique
    on_path: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(root, 0, False)]
    while stack:
        obj, depth, expanded = stack.pop()
        oid = id(obj)
        if not expanded:
            if isinstance(obj, _ATOMS) or oid in done:
                continue
            if isinstance(obj, Global):
                raise ctx.refuse(f"a bare reference to {obj.name} is not data")
            if oid in on_path:
                raise ctx.refuse("refusing a self-referencing (cyclic) structure")
            if depth >= lim.max_depth:
                raise ctx.refuse(f"nesting deeper than {lim.max_depth} refused")
            kids = _children(obj)
            if kids is None:
                continue  # a reader's own leaf type (tensor storage, ...)
            on_path.add(oid)
            stack.append((obj, depth, True))
            stack.extend((k, depth + 1, False) for k in kids)
            continue
        on_path.discard(oid)
        keep.append(obj)

        def res(v: Any) -> Any:
            return done.get(id(v), v)

        total = 1 + sum(size.get(id(v), 1) for v in _children(obj))
        if total > lim.max_nodes:
            raise ctx.refuse(f"structure of more than {lim.max_nodes} values when shared references are "
                             "expanded refused")
        if isinstance(obj, dict):
            for k in obj:
                obj[k] = res(obj[k])
            out = obj
        elif isinstance(obj, list):
            obj[:] = [res(v) for v in obj]
            out = obj
        elif isinstance(obj, tuple):
            out = tuple(res(v) for v in obj)
        elif isinstance(obj, (set, frozenset)):
            out = obj
        elif isinstance(obj, Stub):
            out = obj.resolve(ctx)
        else:
            out = obj
        done[oid], size[oid] = out, total
    return done.get(id(root), root)


def safe_loads(data: bytes, *, where: str, allowed: Mapping[tuple[str, str], Global],
               purpose: str = "the expected format", limits: Limits | None = None,
               persistent_load: Callable[[Context, Any], Any] | None = None) -> Any:
    """Restricted unpickling of ``data`` (one pickle); see the module docstring for what is allowed."""
    ctx = Context(where, limits or Limits())
    return safe_load(io.BytesIO(data), ctx=ctx, allowed=allowed, purpose=purpose, persistent_load=persistent_load)


# ----------------------------------------------------------------------------- tensors


def strided_copy(ctx: Context, flat: torch.Tensor, offset: Any, size: Any, stride: Any, what: str) -> torch.Tensor:
    """A contiguous copy of ``flat.as_strided(size, stride, offset)`` after exact bounds checks.

    Python integers throughout (no overflow); the view must lie inside ``flat`` and may
    not have more elements than it (expanded/broadcast tensors are refused).
    """
    ints_ok = (type(offset) is int and offset >= 0 and isinstance(size, tuple) and isinstance(stride, tuple)
               and len(size) == len(stride) and all(type(s) is int and s >= 0 for s in stride))
    if not ints_ok:
        raise ctx.refuse(f"{what}: malformed size/stride/offset")
    n = ctx.numel(size, what)
    if n > max(flat.numel(), 1):
        raise ctx.refuse(f"{what}: has more elements than its storage (expanded tensors are not supported)")
    if n:
        last = offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True))
        if last >= flat.numel():
            raise ctx.refuse(f"{what}: size/stride/offset out of bounds of its storage "
                             f"(last element {last}, storage has {flat.numel()})")
    elif offset > flat.numel():
        raise ctx.refuse(f"{what}: offset out of bounds of its storage")
    ctx.charge(n * flat.element_size(), n, what)
    if n == 0:
        return torch.empty(size, dtype=flat.dtype)
    return flat.as_strided(size, stride, offset).clone(memory_format=torch.contiguous_format)


def check_empty(ctx: Context, value: Any, what: str) -> None:
    """Hooks / tensor state / metadata arguments must be absent or empty (nothing to apply)."""
    if value is None or (isinstance(value, (dict, list, tuple)) and not value):
        return
    raise ctx.refuse(f"{what} is not supported (must be empty)")
