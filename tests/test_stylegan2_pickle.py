"""Official StyleGAN2-ADA snapshot pickles: safe parsing, official state dicts, conversion, refusal.

No official pickle is stored anywhere, so the tests build pickles of the official
shape themselves (see the fixture README, "Structure of an official
training-snapshot pickle"): each network is a REDUCE of
``torch_utils.persistence._reconstruct_persistent_obj`` with a meta dict, and each
tensor's storage is a ``torch.storage._load_from_bytes`` blob in torch's legacy
format, assembled here byte by byte.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medcf.errors import CheckpointError
from medcf.generators.stylegan2 import official_pickle as op
from medcf.io.unpickle import Context, Limits

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stylegan2_ada"  # ships with the repository

def _ctx() -> Context:
    return Context("storage blob", Limits())


MAGIC = 0x1950A86A20F9469CFC6C          # from the README: legacy serialization magic
BUFFER_LEAVES = {"resample_filter", "noise_const", "w_avg", "p", "Hz_geom", "Hz_fbank"}


# ----------------------------------------------------------------------------- a pickler of the official shape


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (pickled under that global name)."""


EasyDict.__module__ = "dnnlib.util"


def _never_called(meta):  # pickled as torch_utils.persistence._reconstruct_persistent_obj
    raise AssertionError("the loader must never call the official reconstruct function")


_never_called.__module__ = "torch_utils.persistence"
_never_called.__qualname__ = _never_called.__name__ = "_reconstruct_persistent_obj"


@pytest.fixture
def official_globals(monkeypatch):
    """Make the official global names resolvable for the *pickler* (the loader never imports them)."""
    for name, attrs in {"torch_utils": {}, "torch_utils.persistence": {"_reconstruct_persistent_obj": _never_called},
                        "dnnlib": {}, "dnnlib.util": {"EasyDict": EasyDict}}.items():
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        monkeypatch.setitem(sys.modules, name, mod)


class Persistent:
    """A test-side official persistent module: class name + __dict__-like state."""

    def __init__(self, class_name: str, state: dict, module_src: str = "# official source text\n"):
        self.class_name, self.state, self.module_src = class_name, state, module_src


class Blob:
    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def legacy_blob(t: torch.Tensor, key: str = "94123456") -> bytes:
    """torch's legacy storage format by hand: 5 protocol-2 pickles + int64 count + raw LE data."""
    out = io.BytesIO()
    for obj in (MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(obj, out, protocol=2)
    marker = object()

    class StoragePickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, key, "cpu", t.numel(), None) if obj is marker else None

    StoragePickler(out, protocol=2).dump(marker)
    pickle.dump([key], out, protocol=2)
    flat = t.detach().contiguous().reshape(-1).numpy().astype("<f4")
    out.write(struct.pack("<q", flat.size) + flat.tobytes())
    return out.getvalue()


class SnapshotPickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, Persistent):
            meta = {"type": "class", "version": 6, "module_src": obj.module_src,
                    "class_name": obj.class_name, "state": obj.state}
            return _never_called, (meta,)
        if isinstance(obj, torch.nn.Parameter):
            return torch._utils._rebuild_parameter, (obj.data, True, collections.OrderedDict())
        if isinstance(obj, torch.Tensor):
            return torch._utils._rebuild_tensor_v2, (Blob(obj), 0, tuple(obj.shape), obj.contiguous().stride(),
                                                     False, collections.OrderedDict())
        if isinstance(obj, Blob):
            return torch.storage._load_from_bytes, (legacy_blob(obj.tensor),)
        return NotImplemented


def dump_snapshot(obj, protocol: int) -> bytes:
    out = io.BytesIO()
    SnapshotPickler(out, protocol=protocol).dump(obj)
    return out.getvalue()


def module_tree(class_name: str, state_dict: dict, init_kwargs: dict | None, *, extras: bool = False) -> Persistent:
    """Nested persistent modules whose official state_dict() is ``state_dict`` (official order)."""
    def new_node():
        return {"params": collections.OrderedDict(), "buffers": collections.OrderedDict(),
                "children": collections.OrderedDict()}

    root = new_node()
    for key, value in state_dict.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            node = node["children"].setdefault(part, new_node())
        node["buffers" if leaf in BUFFER_LEAVES else "params"][leaf] = value

    def build(node, name, kwargs):
        params = collections.OrderedDict((k, torch.nn.Parameter(v.clone())) for k, v in node["params"].items())
        buffers = collections.OrderedDict((k, v.clone()) for k, v in node["buffers"].items())
        non_persistent = set()
        if extras:  # things the walk must skip: a None parameter and a non-persistent buffer
            params["unused"] = None
            buffers["scratch"] = torch.full([3], 7.0)
            non_persistent.add("scratch")
        state = {"training": False, "_parameters": params, "_buffers": buffers,
                 "_non_persistent_buffers_set": non_persistent,
                 "_backward_hooks": collections.OrderedDict(), "_forward_hooks": collections.OrderedDict(),
                 "_forward_pre_hooks": collections.OrderedDict(), "_state_dict_hooks": collections.OrderedDict(),
                 "_load_state_dict_pre_hooks": collections.OrderedDict(),
                 "_modules": collections.OrderedDict(
                     (k, build(v, "Layer", {})) for k, v in node["children"].items()),
                 "weight_gain": np.float64(0.125), "_init_args": (), "_init_kwargs": kwargs}
        return Persistent(name, state)

    def easy(d):
        return EasyDict({k: easy(v) if isinstance(v, dict) else v for k, v in d.items()})

    return build(root, class_name, easy(init_kwargs or {}))


def _fixture(name: str):
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    tensors = load_file(str(FIXTURES / f"{name}.safetensors"))
    ordered = {k: tensors[k] for k in meta.get("state_dict_shapes", tensors)}
    return meta, ordered


def snapshot(g_scale: float = 2.0, extras: bool = False, src: str = "# official source text\n") -> dict:
    """An official-shaped snapshot of fixture A: G = fixture * g_scale, G_ema = fixture."""
    g_meta, g_sd = _fixture("generator_A")
    d_meta, d_sd = _fixture("discriminator_A")
    a_meta, a_sd = _fixture("augment_pipe_bgcf")
    g = module_tree("Generator", {k: v * g_scale for k, v in g_sd.items()}, g_meta["init_kwargs"])
    g_ema = module_tree("Generator", g_sd, g_meta["init_kwargs"], extras=extras)
    g_ema.module_src = src
    return {"G": g, "D": module_tree("Discriminator", d_sd, d_meta["init_kwargs"]), "G_ema": g_ema,
            "augment_pipe": module_tree("AugmentPipe", a_sd, a_meta["init_kwargs"]),
            "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "path": "data.zip",
                                    "use_labels": False, "max_size": 100, "xflip": False, "resolution": 32}}


def _exact(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_state_dicts_and_kwargs_equal_the_fixture(tmp_path, official_globals, protocol):
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(dump_snapshot(snapshot(extras=True), protocol))
    snap = op.load_official_pickle(path)
    assert set(snap.networks) == {"G", "D", "G_ema", "augment_pipe"}
    for key, name, scale in (("G_ema", "generator_A", 1.0), ("G", "generator_A", 2.0),
                             ("D", "discriminator_A", 1.0), ("augment_pipe", "augment_pipe_bgcf", 1.0)):
        meta, sd = _fixture(name)
        class_name, init_kwargs, state_dict = snap.networks[key]
        assert class_name == meta["class_name"]
        assert init_kwargs == meta["init_kwargs"] and type(init_kwargs["mapping_kwargs"] if key != "augment_pipe"
                                                             else init_kwargs) is dict
        assert _exact(state_dict, {k: v * scale for k, v in sd.items()}), key  # names, order, values
    assert snap.training_set_kwargs["resolution"] == 32


def test_reads_torch_native_tensor_pickles():
    # torch's own pickling (views with offsets/strides, parameters) goes through the same globals.
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {"view": base[1:, ::2], "param": torch.nn.Parameter(torch.ones(2, 3)), "half": base.half(),
           "long": torch.arange(5), "od": collections.OrderedDict(a=1), "s": {1, 2}}
    for protocol in (2, 3, 4):
        out = op.restricted_loads(pickle.dumps(obj, protocol=protocol))
        assert torch.equal(out["view"], base[1:, ::2]) and out["view"].is_contiguous()
        assert torch.equal(out["param"], torch.ones(2, 3)) and out["half"].dtype == torch.float16
        assert torch.equal(out["long"], torch.arange(5)) and out["s"] == {1, 2}


def test_numpy_1x_scalar_global_is_accepted(tmp_path, official_globals):
    data = dump_snapshot(snapshot(), 2)
    assert b"cnumpy._core.multiarray\nscalar\n" in data
    data = data.replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
    path = tmp_path / "np1.pkl"
    path.write_bytes(data)
    assert len(op.load_official_pickle(path).networks["D"].state_dict) == 37


# ----------------------------------------------------------------------------- refusal of code


def _evil(fn, args) -> object:
    class Evil:
        def __reduce__(self):
            return fn, args
    return Evil()


@pytest.mark.parametrize("maker,global_name", [
    (lambda f: _evil(os.system, (f"touch {f}",)), os.system.__module__ + ".system"),
    (lambda f: _evil(eval, (f"open({str(f)!r}, 'w').write('x')",)), "builtins.eval"),
    (lambda f: _evil(subprocess.check_call, (["touch", str(f)],)), "subprocess.check_call"),
])
@pytest.mark.parametrize("protocol", [2, 4])
def test_code_execution_is_refused(tmp_path, maker, global_name, protocol):
    side_effect = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G": maker(side_effect)}, protocol=protocol))
    with pytest.raises(CheckpointError) as info:
        op.load_official_pickle(path)
    msg = str(info.value)
    assert f"'{global_name}'" in msg and str(path) in msg and "\n" not in msg
    assert not side_effect.exists()


def test_evil_global_inside_a_valid_snapshot_and_module_src_never_runs(tmp_path, official_globals):
    side_effect = tmp_path / "pwned"
    src = f"import os\nos.system('touch {side_effect}')\n"
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(dump_snapshot(snapshot(src=src), 4))
    op.load_official_pickle(ok)  # the embedded module source is data, never executed
    assert not side_effect.exists()
    snap = snapshot()
    snap["training_set_kwargs"]["hook"] = _evil(os.system, (f"touch {side_effect}",))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(dump_snapshot(snap, 4))
    with pytest.raises(CheckpointError, match=r"refusing to load global '\w+\.system'"):
        op.load_official_pickle(bad)
    assert not side_effect.exists()


def test_evil_global_inside_a_storage_blob_is_refused(tmp_path):
    blob = legacy_blob(torch.ones(2)).replace(b"ctorch\nFloatStorage\n", b"cposix\nsystem\n")
    with pytest.raises(CheckpointError, match=r"storage blob: refusing to load global 'posix\.system'"):
        op.parse_legacy_storage(_ctx(), blob)


def test_corrupt_inputs_give_one_line_errors(tmp_path):
    cases = {"missing.pkl": None, "text.pkl": b"hello", "zip.pkl": b"PK\x03\x04rest",
             "trunc.pkl": pickle.dumps({"G": [1, 2, 3]}, protocol=4)[:-5],
             "list.pkl": pickle.dumps([1, 2], protocol=4), "nog.pkl": pickle.dumps({"D": None}, protocol=4)}
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            op.load_official_pickle(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), name
    blob = legacy_blob(torch.ones(4))
    with pytest.raises(CheckpointError, match="storage blob: storage '94123456' claims"):
        op.parse_legacy_storage(_ctx(), blob[:-4])


# ----------------------------------------------------------------------------- conversion


def test_augment_pipe_from_pickle_reproduces_official_outputs(tmp_path, official_globals):
    path = tmp_path / "snap.pkl"
    path.write_bytes(dump_snapshot(snapshot(), 3))
    net = op.load_official_pickle(path).networks["augment_pipe"]
    pipe = op.build_network(net, where="test")
    assert pipe.get_p() == pytest.approx(0.37)
    refs = load_file(str(FIXTURES / "refs_augment.safetensors"))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for q in (10, 35, 60, 85):
            out = pipe(refs["x_rgb"], debug_percentile=q / 100)
            assert (out - refs[f"aug_rgb_q{q}"]).abs().max().item() <= 1e-4
    finally:
        torch.set_num_threads(old)


def test_convert_snapshot_to_medcf_checkpoints(tmp_path, official_globals):
    from medcf.errors import MedcfError
    from medcf.generators.stylegan2.augment import AugmentPipe
    from medcf.io import load_weights, read_header

    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(dump_snapshot(snapshot(), 4))
    out = op.convert_stylegan2_pkl(path, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["D", "G", "G_ema", "augment_pipe", "snapshot.json",
                                                     "training_set_kwargs.json"]
    assert AugmentPipe.load(out / "augment_pipe").get_p() == pytest.approx(0.37)
    assert json.loads((out / "training_set_kwargs.json").read_text())["resolution"] == 32
    summary = json.loads((out / "snapshot.json").read_text())
    assert summary["networks"]["G_ema"]["class_name"] == "training.networks.Generator"
    assert summary["networks"]["D"]["class_name"] == "training.networks.Discriminator"
    for key in ("G", "G_ema", "D"):
        assert read_header(out / key)["kind"] and load_weights(out / key)
    # the converted networks reproduce the official reference outputs of fixture A
    from medcf.generators.stylegan2 import Discriminator, Generator

    g_meta, g_sd = _fixture("generator_A")
    _, d_sd = _fixture("discriminator_A")
    refs = load_file(str(FIXTURES / "refs_A.safetensors"))
    g_ema, g, d = Generator.load(out / "G_ema"), Generator.load(out / "G"), Discriminator.load(out / "D")
    assert _exact(dict(g_ema.state_dict()), g_sd) and _exact(dict(d.state_dict()), d_sd)
    assert _exact(dict(g.state_dict()), {k: v * 2 for k, v in g_sd.items()})
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            img = g_ema(refs["z"], None, noise_mode="const", force_fp32=True)
            logits = d(refs["img_const"], None, force_fp32=True)
    finally:
        torch.set_num_threads(old)
    assert (img - refs["img_const"]).abs().max().item() <= 1e-4
    assert (logits - refs["d_logits"]).abs().max().item() <= 1e-4
    with pytest.raises(MedcfError, match="not empty"):
        op.convert_stylegan2_pkl(path, out)


def test_stylegan3_snapshot_is_refused_clearly(tmp_path, official_globals):
    snap = snapshot(src="def design_lowpass_filter(numtaps, cutoff, width, fs): ...\n")
    path = tmp_path / "sg3.pkl"
    path.write_bytes(dump_snapshot(snap, 4))
    assert op.load_official_pickle(path).networks["G_ema"].class_name == "training.networks_stylegan3.Generator"
    with pytest.raises(CheckpointError, match="networks_stylegan3.Generator' is not supported"):
        op.convert_stylegan2_pkl(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- CLI


def _cli(capsys, *args) -> tuple[int, str, str]:
    from medcf.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code or 0, out.out, out.err


def test_cli_help_has_example(capsys):
    code, out, _ = _cli(capsys, "convert", "stylegan2-pkl", "--help")
    assert code == 0 and "Example: medcf convert stylegan2-pkl" in out


def test_cli_refuses_evil_pickle_in_one_line(tmp_path, capsys):
    side_effect = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G": _evil(os.system, (f"touch {side_effect}",))}, protocol=4))
    code, _, err = _cli(capsys, "convert", "stylegan2-pkl", str(path), str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1 and "refusing to load global" in err and "Traceback" not in err
    assert not side_effect.exists() and not (tmp_path / "out").exists()


def test_cli_converts_a_snapshot(tmp_path, capsys, official_globals):
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(dump_snapshot(snapshot(), 4))
    code, out, _ = _cli(capsys, "convert", "stylegan2-pkl", str(path), str(tmp_path / "out"))
    assert code == 0 and "G_ema" in out
    assert (tmp_path / "out" / "G_ema" / "model.safetensors").is_file()
    code, _, err = _cli(capsys, "convert", "stylegan2-pkl", str(path), str(tmp_path / "out"))
    assert code == 2 and "not empty" in err


def test_tensor_larger_than_its_storage_is_refused():
    storage = op.parse_legacy_storage(_ctx(), legacy_blob(torch.ones(4)))
    assert torch.equal(op._rebuild_tensor_v2(_ctx(), (storage, 1, (3,), (1,))), torch.ones(3))
    with pytest.raises(CheckpointError, match="more elements than its storage"):
        op._rebuild_tensor_v2(_ctx(), (storage, 0, (10**3, 10**3), (0, 0)))
    with pytest.raises(CheckpointError, match="out of bounds"):
        op._rebuild_tensor_v2(_ctx(), (storage, 2, (4,), (1,)))
