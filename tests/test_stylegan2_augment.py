"""ADA AugmentPipe: official reference outputs, closed-form special cases, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medcf.errors import CheckpointError, ShapeError
from medcf.generators.stylegan2.augment import (
    AugmentConfig,
    AugmentPipe,
    filter_bank,
    geometric_filter,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stylegan2_ada"


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _official_pipe() -> AugmentPipe:
    meta = json.loads((FIXTURES / "augment_pipe_bgcf.json").read_text())
    pipe = AugmentPipe.from_official(meta["init_kwargs"], load_file(str(FIXTURES / "augment_pipe_bgcf.safetensors")))
    return pipe


def _x(c: int = 1, seed: int = 0, size: int = 16) -> torch.Tensor:
    return torch.randn(2, c, size, size, generator=torch.Generator().manual_seed(seed)).tanh()


# ----------------------------------------------------------------------------- official references


@pytest.mark.parametrize("key", ["aug_rgb_q10", "aug_rgb_q35", "aug_rgb_q60", "aug_rgb_q85",
                                 "aug_gray_q10", "aug_gray_q85"])
def test_matches_official_debug_percentile(key):
    refs = load_file(str(FIXTURES / "refs_augment.safetensors"))
    pipe = _official_pipe()
    assert pipe.get_p() == pytest.approx(0.37)
    name, q = key.split("_")[1], int(key.split("_q")[1]) / 100
    out = pipe(refs[f"x_{name}"], debug_percentile=q)
    assert out.shape == refs[key].shape
    assert (out - refs[key]).abs().max().item() <= 1e-4


def test_constant_filters_equal_official_buffers():
    buffers = load_file(str(FIXTURES / "augment_pipe_bgcf.safetensors"))
    assert torch.allclose(geometric_filter(), buffers["Hz_geom"], atol=1e-7, rtol=0)
    assert torch.allclose(filter_bank(), buffers["Hz_fbank"], atol=1e-7, rtol=0)
    assert list(AugmentPipe().state_dict()) == ["p", "Hz_geom", "Hz_fbank"]


def test_filter_bank_bands_sum_to_an_impulse():
    # The four bands partition the spectrum: together they pass the signal unchanged.
    total = filter_bank().sum(dim=0).double()
    impulse = torch.zeros_like(total)
    impulse[total.numel() // 2] = 1
    assert torch.allclose(total, impulse, atol=1e-6)


# ----------------------------------------------------------------------------- closed forms


def test_p_zero_geometric_path_is_identity():
    # Up/down-sampling with an orthogonal wavelet reproduces the input when the transform is identity.
    pipe = AugmentPipe(AugmentConfig.preset("bg"))
    x = _x()
    y = pipe(x, generator=torch.Generator().manual_seed(1))
    assert (y - x).abs().max().item() < 1e-4


@pytest.mark.parametrize("op", ["flip", "rot90"])
def test_blit_gives_exact_flips_and_rotations(op):
    cfg = AugmentConfig(xflip=1.0) if op == "flip" else AugmentConfig(rotate90=1.0)
    pipe = AugmentPipe(cfg)
    pipe.set_p(1.0)
    x = _x(size=16)
    y = pipe(x, generator=torch.Generator().manual_seed(3))
    for xi, yi in zip(x, y, strict=True):
        candidates = ([xi, xi.flip(-1)] if op == "flip" else [torch.rot90(xi, k, dims=(-2, -1)) for k in range(4)])
        assert min((yi - c).abs().max().item() for c in candidates) < 1e-4


def test_brightness_and_contrast_are_affine_per_image():
    x = _x()
    pipe = AugmentPipe(AugmentConfig(brightness=1.0))
    pipe.set_p(1.0)
    d = pipe(x, generator=torch.Generator().manual_seed(0)) - x
    assert torch.allclose(d, d.mean(dim=(1, 2, 3), keepdim=True).expand_as(d), atol=1e-6)
    pipe = AugmentPipe(AugmentConfig(contrast=1.0))
    pipe.set_p(1.0)
    y = pipe(x, generator=torch.Generator().manual_seed(0))
    ratio = y / x
    assert torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio), atol=1e-4)
    assert not torch.allclose(y, x)


def test_lumaflip_negates_grayscale():
    pipe = AugmentPipe(AugmentConfig(lumaflip=1.0))
    pipe.set_p(1.0)
    x = _x()
    assert torch.allclose(pipe(x, debug_percentile=0.9), -x, atol=1e-6)   # floor(2q) = 1: flip
    assert torch.allclose(pipe(x, debug_percentile=0.2), x, atol=1e-6)    # floor(2q) = 0: no flip


def test_imgfilter_with_unit_gains_is_identity():
    pipe = AugmentPipe(AugmentConfig(imgfilter=1.0, imgfilter_std=0.0))
    pipe.set_p(1.0)
    x = _x(c=3, size=24)
    assert torch.allclose(pipe(x, generator=torch.Generator().manual_seed(0)), x, atol=1e-5)


def test_cutout_centre_square():
    pipe = AugmentPipe(AugmentConfig(cutout=1.0))
    x = torch.ones(1, 1, 32, 32)
    y = pipe(x, debug_percentile=0.5)  # centre 0.5, size 0.5: pixels 8..23 in both axes are zeroed
    expected = torch.ones(1, 1, 32, 32)
    expected[..., 8:24, 8:24] = 0
    assert torch.equal(y, expected)


def test_seeded_determinism_and_gradients():
    pipe = AugmentPipe(AugmentConfig.preset("bgcfnc"))
    pipe.set_p(0.8)
    x = _x(c=3, size=24).requires_grad_(True)
    a = pipe(x, generator=torch.Generator().manual_seed(5))
    b = pipe(x, generator=torch.Generator().manual_seed(5))
    c = pipe(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- API and errors


def test_save_load_round_trip(tmp_path):
    pipe = AugmentPipe(AugmentConfig.preset("bgc", xint_max=0.2, imgfilter_bands=(1.0, 0.5, 0.0, 1.0)))
    pipe.set_p(0.42)
    pipe.save(tmp_path / "aug")
    loaded = AugmentPipe.load(tmp_path / "aug")
    assert loaded.config == pipe.config and loaded.get_p() == pytest.approx(0.42)
    x = _x()
    assert torch.equal(loaded(x, debug_percentile=0.3), pipe(x, debug_percentile=0.3))


def test_errors_are_clear():
    pipe = AugmentPipe(AugmentConfig.preset("bgc"))
    with pytest.raises(ShapeError, match="channels"):
        pipe(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ShapeError, match=r"\[B, C, H, W\]"):
        pipe(torch.zeros(8, 8))
    with pytest.raises(ShapeError, match="imgfilter needs images larger than 21x21"):
        AugmentPipe(AugmentConfig(imgfilter=1.0))(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="p must be"):
        pipe.set_p(-0.1)
    with pytest.raises(ValueError, match="scale_std"):
        AugmentConfig(scale_std=-1.0)
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        AugmentConfig.preset("xyz")
    with pytest.raises(CheckpointError, match="unsupported constructor argument"):
        AugmentPipe.from_official({"xflip": 1, "bogus": 2}, {})
