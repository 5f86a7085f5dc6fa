"""The in-house StyleGAN2-ADA networks against outputs of NVIDIA's official code.

Reference numbers: tests/fixtures/stylegan2_ada (see its README): official
constructor kwargs, perturbed official state dicts (every tensor distinct,
resample filters non-separable), and tensors computed by the official
``stylegan2-ada-pytorch`` on CPU with one thread. Tolerances follow the README:
1e-5 for ws, 1e-4 for images, logits and intermediates.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medcf.errors import CheckpointError
from medcf.generators.stylegan2 import (
    Discriminator,
    Generator,
    build_from_official,
    config_from_official_kwargs,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stylegan2_ada"  # ships with the repository

WS_TOL, IMG_TOL = 1e-5, 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the references were computed with one thread
    yield
    torch.set_num_threads(old)


def _meta(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _official(name: str):
    meta = _meta(name)
    state = load_file(str(FIXTURES / f"{name}.safetensors"))
    return build_from_official(meta["class_name"], meta["init_kwargs"], state), meta, state


@pytest.fixture(scope="module")
def g_a():
    return _official("generator_A")[0]


@pytest.fixture(scope="module")
def d_a():
    return _official("discriminator_A")[0]


@pytest.fixture(scope="module")
def g_b():
    return _official("generator_B")[0]


@pytest.fixture(scope="module")
def refs_a():
    return load_file(str(FIXTURES / "refs_A.safetensors"))


@pytest.fixture(scope="module")
def refs_b():
    return load_file(str(FIXTURES / "refs_B.safetensors"))


def _maxerr(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ----------------------------------------------------------------------------- naming


@pytest.mark.parametrize("name, cls", [("generator_A", Generator), ("generator_B", Generator),
                                       ("discriminator_A", Discriminator)])
def test_state_dict_keys_order_and_shapes_equal_official(name, cls):
    meta = _meta(name)
    model = cls(config_from_official_kwargs(meta["class_name"], meta["init_kwargs"]))
    sd = model.state_dict()
    assert list(sd) == list(meta["state_dict_shapes"])  # same keys in the same order
    assert {k: list(v.shape) for k, v in sd.items()} == meta["state_dict_shapes"]
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in sd.items()} == meta["state_dict_dtypes"]
    state = load_file(str(FIXTURES / f"{name}.safetensors"))
    model.load_state_dict(state, strict=True)
    for k, v in model.state_dict().items():  # every tensor landed under its own name
        assert torch.equal(v, state[k]), k


def test_build_refuses_mismatching_state_dicts_with_one_line():
    _, meta, state = _official("generator_A")
    bad = dict(state)
    bad["synthesis.b4.conv1.extra"] = bad.pop("synthesis.b4.conv1.bias")
    with pytest.raises(CheckpointError, match="missing .*conv1.bias.*unexpected .*extra") as e:
        build_from_official(meta["class_name"], meta["init_kwargs"], bad)
    assert "\n" not in str(e.value)
    bad = dict(state, **{"mapping.w_avg": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="'mapping.w_avg' has shape \\(3,\\)"):
        build_from_official(meta["class_name"], meta["init_kwargs"], bad)
    with pytest.raises(CheckpointError, match="unsupported official argument.*'bogus'"):
        build_from_official(meta["class_name"], {**meta["init_kwargs"], "bogus": 1}, state)
    with pytest.raises(CheckpointError, match="not supported"):
        build_from_official("training.networks.Nope", meta["init_kwargs"], state)


# ----------------------------------------------------------------------------- mapping


def test_mapping_a(g_a, refs_a):
    z = refs_a["z"]
    with torch.no_grad():
        assert _maxerr(g_a.mapping(z, None), refs_a["ws"]) <= WS_TOL
        assert _maxerr(g_a.mapping(z, None, truncation_psi=0.7), refs_a["ws_trunc07"]) <= WS_TOL
        ws = g_a.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    assert _maxerr(ws, refs_a["ws_trunc05_cutoff2"]) <= WS_TOL


def test_mapping_b_with_label_embedding(g_b, refs_b):
    z, c = refs_b["z"], refs_b["c"]
    seen = {}
    hook = g_b.mapping.embed.register_forward_hook(lambda m, i, o: seen.setdefault("embed", o))
    try:
        with torch.no_grad():
            ws = g_b.mapping(z, c)
    finally:
        hook.remove()
    assert _maxerr(ws, refs_b["ws"]) <= WS_TOL
    assert _maxerr(seen["embed"], refs_b["mapping.embed.out"]) <= IMG_TOL
    with torch.no_grad():
        assert _maxerr(g_b.mapping(z, c, truncation_psi=0.7), refs_b["ws_trunc07"]) <= WS_TOL
        ws = g_b.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4)
    assert _maxerr(ws, refs_b["ws_trunc05_cutoff4"]) <= WS_TOL


# ----------------------------------------------------------------------------- synthesis


def _synthesis_with_blocks(G, ws, **kwargs):
    """Run G.synthesis, capturing each block's (x, img) output."""
    outs = {}
    hooks = [getattr(G.synthesis, f"b{r}").register_forward_hook(
        lambda m, i, o, r=r: outs.__setitem__(r, o)) for r in G.synthesis.block_resolutions]
    try:
        with torch.no_grad():
            img = G.synthesis(ws, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return img, outs


@pytest.mark.parametrize("which", ["A", "B"])
def test_images_and_block_outputs(which, g_a, g_b, refs_a, refs_b):
    G, refs = (g_a, refs_a) if which == "A" else (g_b, refs_b)
    img, outs = _synthesis_with_blocks(G, refs["ws"], noise_mode="const", force_fp32=True)
    assert _maxerr(img, refs["img_const"]) <= IMG_TOL
    checked = 0
    for key, ref in refs.items():
        if key.startswith("synthesis.b"):
            res = int(key.split(".")[1][1:])
            got = outs[res][0] if key.endswith("x_out") else outs[res][1]
            assert _maxerr(got, ref) <= IMG_TOL, key
            checked += 1
    assert checked == 5  # A: x of b4, b8 and img of b4-b16; B: x of b4 and img of b4-b32
    with torch.no_grad():
        img = G.synthesis(refs["ws_trunc07"], noise_mode="const", force_fp32=True)
        assert _maxerr(img, refs["img_trunc07_const"]) <= IMG_TOL
        c = refs["c"] if G.c_dim else None  # the full G(z, c) equals mapping + synthesis
        assert _maxerr(G(refs["z"], c, noise_mode="const", force_fp32=True),
                       refs["img_const"]) <= IMG_TOL
        # the fused (grouped conv) and non-fused modulation paths compute the same function
        for fused in (True, False):
            img = G.synthesis(refs["ws"], noise_mode="const", fused_modconv=fused)
            assert _maxerr(img, refs["img_const"]) <= IMG_TOL


def test_noise_none_a(g_a, refs_a):
    with torch.no_grad():
        img = g_a.synthesis(refs_a["ws"], noise_mode="none", force_fp32=True)
    assert _maxerr(img, refs_a["img_none"]) <= IMG_TOL
    assert _maxerr(refs_a["img_none"], refs_a["img_const"]) > 1e-2  # noise matters here


def test_conv_clamp_b(refs_b):
    meta = _meta("generator_B")
    kwargs = copy.deepcopy(meta["init_kwargs"])
    kwargs["synthesis_kwargs"]["conv_clamp"] = 1.0
    G = build_from_official(meta["class_name"], kwargs,
                            load_file(str(FIXTURES / "generator_B.safetensors")))
    with torch.no_grad():
        img = G.synthesis(refs_b["ws"], noise_mode="const", force_fp32=True)
    assert _maxerr(img, refs_b["img_const_convclamp1"]) <= IMG_TOL
    assert _maxerr(refs_b["img_const_convclamp1"], refs_b["img_const"]) > 1e-2


def test_loaded_filters_are_used(refs_a):
    """Resetting the perturbed filters to the default [1,3,3,1] kernel must change the image."""
    _, meta, state = _official("generator_A")
    default = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    state = {k: (default if k.endswith("resample_filter") else v) for k, v in state.items()}
    G = build_from_official(meta["class_name"], meta["init_kwargs"], state)
    with torch.no_grad():
        img = G.synthesis(refs_a["ws"], noise_mode="const", force_fp32=True)
    assert _maxerr(img, refs_a["img_const"]) > 1e-3


# ----------------------------------------------------------------------------- discriminator


def test_discriminator_a(d_a, refs_a):
    outs = {}
    hook = d_a.b8.register_forward_hook(lambda m, i, o: outs.setdefault("b8", o))
    try:
        with torch.no_grad():
            logits = d_a(refs_a["img_const"], refs_a["c"], force_fp32=True)
    finally:
        hook.remove()
    assert logits.shape == (4, 1)
    assert _maxerr(logits, refs_a["d_logits"]) <= IMG_TOL
    assert _maxerr(outs["b8"][0], refs_a["D.b8.x_out"]) <= IMG_TOL
    with torch.no_grad():
        logits = d_a(refs_a["img_trunc07_const"], refs_a["c"], force_fp32=True)
    assert _maxerr(logits, refs_a["d_logits_trunc07"]) <= IMG_TOL


def test_minibatch_std_uses_official_group_layout(d_a, refs_a):
    """Swapping samples 1 and 2 regroups the batch (pairs {0,2},{1,3} become {0,1},{2,3})."""
    img = refs_a["img_const"][[0, 2, 1, 3]]
    with torch.no_grad():
        logits = d_a(img, refs_a["c"], force_fp32=True)[[0, 2, 1, 3]]
    assert _maxerr(logits, refs_a["d_logits"]) > 1e-3
