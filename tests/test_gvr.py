"""Generative Visual Rationales: analytic toy, compositions, generator-agnostic use, CLI and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from _cli import run_cli, strict_json
from medcf.counterfactual.gvr import GVR, GVRConfig
from medcf.encoders.gan_encoder import GANEncoder
from medcf.errors import CheckpointError, MedcfError
from medcf.generators.dcgan import DCGANConfig, DCGANGenerator


class Identity(nn.Module):
    """An identity-like generator: z [B, 16] is the 4x4 image."""

    img_channels, img_resolution = 1, 4

    def decode(self, z):
        return z.view(-1, 1, 4, 4)


class Flatten(nn.Module):
    """Its exact encoder."""

    def encode(self, x):
        return x.flatten(1)


class Linear(nn.Module):
    """One sigmoid logit w . x + b."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w, self.b = nn.Parameter(w.clone()), b

    def forward(self, x):
        return (x.flatten(1) @ self.w + self.b).unsqueeze(1)


def _toy(magnitudes: torch.Tensor, offsets, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.rand(16, generator=g) > 0.5, 1.0, -1.0)
    w = magnitudes * sign
    x = torch.rand(len(offsets), 1, 4, 4, generator=g) * 0.2 - 0.1
    x = x - torch.tensor(offsets).view(-1, 1, 1, 1) * sign.view(1, 1, 4, 4)   # pushed to class 0
    return Linear(w, -0.3), x


def test_analytic_toy_reaches_the_closed_form_boundary_point():
    # |w_i| equal: Adam's per-coordinate steps stay on the line x + a * w, so the optimum under the
    # latent and image penalties is the orthogonal projection onto the boundary w.x + b = 0:
    # x* = x - s(x) / ||w||^2 * w
    clf, x = _toy(torch.full((16,), 0.5), [0.4, 0.2, 0.8])
    s = clf(x)[:, 0].detach()
    assert (s < 0).all()
    gvr = GVR(generator=Identity(), encoder=Flatten(), classifier=clf,
              config=GVRConfig(step_size=0.01, max_steps=500, refine_steps=20))
    cf = gvr.explain(x, torch.ones(3, dtype=torch.long))
    w = clf.w.detach()
    closed = x - (s / (w @ w)).view(3, 1, 1, 1) * w.view(1, 1, 4, 4)
    assert torch.allclose(cf.counterfactual, closed, atol=1e-5)
    assert cf.info["found"] == [True, True, True]
    assert torch.allclose(cf.prob_counterfactual, torch.full((3,), 0.5), atol=1e-5)
    assert torch.equal(cf.path[0], x)                                   # identity: frame 0 is the input
    assert torch.allclose(cf.difference, (closed - x), atol=1e-5)       # G(z*) - G(z0)
    # more distant queries need more steps
    steps = cf.info["steps"]
    assert steps[1] < steps[0] < steps[2]


def test_general_linear_classifier_stops_at_take_at():
    mags = torch.linspace(0.1, 1.0, 16)
    clf, x = _toy(mags, [0.5, 1.0], seed=1)
    gvr = GVR(generator=Identity(), encoder=Flatten(), classifier=clf,
              config=GVRConfig(step_size=0.02, max_steps=400, take_at=0.9, refine_steps=24))
    cf = gvr.explain(x, 1)
    s = clf(cf.counterfactual)[:, 0].detach()
    assert cf.info["found"] == [True, True]
    assert (s >= math.log(9.0) - 1e-6).all() and (s < math.log(9.0) + 1e-3).all()   # just past take_at
    # the penalties pull back toward x: the change is no larger than a plain step along sign(w) would need
    assert torch.isfinite(torch.tensor(cf.info["latent_distance"])).all()


def test_already_at_target_stays_at_the_start():
    clf, x = _toy(torch.full((16,), 0.5), [0.4])
    gvr = GVR(generator=Identity(), encoder=Flatten(), classifier=clf, config=GVRConfig(max_steps=5))
    cf = gvr.explain(x, 0)                                               # class 0 already holds
    assert cf.info["steps"] == [0] and torch.equal(cf.counterfactual, x) and cf.path.shape[0] == 1


class Blurry(nn.Module):
    """A generator that cannot render the input exactly: a smoothed linear map of z."""

    img_channels, img_resolution = 1, 4

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 16)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(16) * 0.5 + 0.03)

    def decode(self, z):
        return torch.tanh(self.lin(z)).view(-1, 1, 4, 4)


def test_residual_composition_keeps_what_the_generator_cannot_render():
    clf, x = _toy(torch.full((16,), 0.5), [0.3, 0.6], seed=2)
    G = Blurry()
    gen = GVR(generator=G, encoder=Flatten(), classifier=clf, config=GVRConfig(max_steps=300))
    res = GVR(generator=G, encoder=Flatten(), classifier=clf,
              config=GVRConfig(max_steps=300, compose="residual"))
    cf_g, cf_r = gen.explain(x, 1), res.explain(x, 1)
    g0 = G.decode(x.flatten(1)).detach()
    assert torch.allclose(cf_g.path[0], g0) and not torch.allclose(g0, x, atol=1e-2)
    assert torch.equal(cf_r.path[0], x)                                  # residual: starts at the input
    assert cf_g.info["found"] == [True, True] and cf_r.info["found"] == [True, True]
    # residual frames are x + G(z) - G(z0): the difference map is G(z*) - G(z0) in both modes
    assert torch.allclose(cf_r.difference, (cf_r.counterfactual - x).mean(1, keepdim=True), atol=1e-6)
    assert torch.allclose(cf_g.difference, (cf_g.counterfactual - g0).mean(1, keepdim=True), atol=1e-6)


def test_encoder_of_another_generator_is_refused():
    cfg = DCGANConfig(resolution=16, z_dim=8, base_channels=8, max_channels=16)
    G, other = DCGANGenerator(cfg, seed=0), DCGANGenerator(cfg, seed=1)
    E = GANEncoder.for_generator(other, base_channels=8, max_channels=16)
    clf = Linear(torch.zeros(256), 0.0)
    with pytest.raises(CheckpointError, match="not this one"):
        GVR(generator=G, encoder=E, classifier=clf)
    with pytest.raises(ValueError, match="space"):
        GVRConfig(space="z+")


def test_runs_on_stylegan2_in_w_plus_and_w():
    from medcf.encoders import StyleGANEncoder
    from medcf.generators.stylegan2 import (
        Generator,
        GeneratorConfig,
        MappingConfig,
        SynthesisConfig,
    )

    G = Generator(GeneratorConfig(z_dim=8, w_dim=8, img_resolution=16, img_channels=1,
                                  mapping=MappingConfig(num_layers=2),
                                  synthesis=SynthesisConfig(channel_base=256, channel_max=16)), seed=0).eval()
    E = StyleGANEncoder.for_generator(G, base_channels=8, max_channels=16, hidden=32, head_channels=4).eval()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():  # a bias that puts both reconstructions well below the boundary
        start = 0.05 * G.decode(E(x)).flatten(1).sum(1)
    clf = Linear(torch.full((256,), 0.05), -float(start.max()) - 4.0)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    for space in ("native", "w+", "w"):
        gvr = GVR(generator=G, encoder=E, classifier=clf, config=GVRConfig(max_steps=3, step_size=0.002, space=space))
        cf = gvr.explain(x, 1)
        assert cf.counterfactual.shape == (2, 1, 16, 16) and cf.path.shape[1:] == (2, 1, 16, 16)
        assert cf.path.shape[0] == 4 and torch.isfinite(cf.path).all()         # 3 steps, never crossing
        # the target logit rises along the optimisation path
        assert (cf.path_probs[-1] >= cf.path_probs[0]).all(), space
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())        # G untouched
    assert all(p.requires_grad for p in G.parameters())                            # flags restored
    gan_cfg = DCGANConfig(resolution=16, z_dim=8, base_channels=8, max_channels=16)
    Gd = DCGANGenerator(gan_cfg)
    with pytest.raises(MedcfError, match="W\\+ latents"):
        GVR(generator=Gd, encoder=GANEncoder.for_generator(Gd, base_channels=8), classifier=clf,
            config=GVRConfig(space="w")).explain(x, 1)


# ----------------------------------------------------------------------------- the CLI

RES = 32


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from medcf.classifiers import ResNetClassifier, ResNetConfig
    from medcf.data import SynthConfig, write_synthetic
    from medcf.generators.autoencoder import VAE, AutoencoderConfig

    root = tmp_path_factory.mktemp("gvr")
    clf = ResNetClassifier(ResNetConfig(in_channels=1, resolution=RES, class_names=("normal", "cardiomegaly"),
                                        num_outputs=2, head="softmax", widths=(4, 8), blocks=(1, 1)), seed=0)
    with torch.no_grad():
        clf.fc.weight.normal_(0, 2.0, generator=torch.Generator().manual_seed(0))
    clf.save(root / "classifier")
    cfg = DCGANConfig(resolution=RES, z_dim=8, base_channels=4, max_channels=8)
    G, other = DCGANGenerator(cfg, seed=0), DCGANGenerator(cfg, seed=1)
    G.save(root / "gan" / "model")
    GANEncoder.for_generator(G, base_channels=4, max_channels=8).save(root / "enc" / "model")
    GANEncoder.for_generator(other, base_channels=4, max_channels=8).save(root / "other-enc")
    VAE(AutoencoderConfig(resolution=RES, channels=1, widths=(4, 8)), seed=0).save(root / "vae")
    write_synthetic(SynthConfig(resolution=RES), 12, root / "data", seed=0, progress=False)
    return root


def _explain(capsys, runs, out, *extra):
    return run_cli(capsys, "explain", "--method", "gvr", "--classifier", runs / "classifier", "--images",
                   runs / "data", "--limit", "2", "--out", out, "--no-progress", *extra)


def test_cli_explain_writes_files(runs, tmp_path, capsys):
    code, out, err = _explain(capsys, runs, tmp_path / "out", "--generator", runs / "gan", "--encoder",
                              runs / "enc", "--max-steps", "4", "--compose", "residual")
    assert code == 0, err
    recs = [strict_json(p) for p in sorted((tmp_path / "out").glob("*.json"))]
    assert len(recs) == 2
    for rec in recs:
        assert rec["method"] == "gvr" and rec["settings"]["compose"] == "residual"
        assert rec["settings"]["max_steps"] == 4 and 1 <= len(rec["path_probs"]) <= 5


@pytest.mark.parametrize("case, words", [
    ("other-encoder", "not this one"),
    ("no-encoder", "--encoder"),
    ("vae-generator", "'vae'"),
    ("encoder-kind", "gan-encoder"),
])
def test_cli_bad_inputs_are_one_line_errors(runs, tmp_path, capsys, case, words):
    args = {"other-encoder": ("--generator", runs / "gan", "--encoder", runs / "other-enc"),
            "no-encoder": ("--generator", runs / "gan"),
            "vae-generator": ("--generator", runs / "vae", "--encoder", runs / "enc"),
            "encoder-kind": ("--generator", runs / "gan", "--encoder", runs / "vae")}[case]
    code, _, err = _explain(capsys, runs, tmp_path / "out", *args)
    assert code == 2, err
    assert words in err and len(err.strip().splitlines()) == 1, err


def test_benchmark_prepare_hook_trains_once_and_builds(runs, tmp_path):
    from medcf.counterfactual.gvr import build_gvr
    from medcf.train.gan_prepare import prepare_gvr

    profile = {"steps": 1, "n_critic": 1, "batch_size": 4, "z_dim": 8, "base_channels": 4, "encoder_steps": 1,
               "encoder_batch_size": 4, "explain": {"max_steps": 3, "compose": "residual"}}
    kw = prepare_gvr(runs / "data", tmp_path / "m", classifier_dir=runs / "classifier", task="cardiomegaly",
                     profile=profile, device="cpu", seed=0, progress=False)
    assert kw["max_steps"] == 3 and kw["compose"] == "residual"
    again = prepare_gvr(runs / "data", tmp_path / "m", classifier_dir=runs / "classifier", task="cardiomegaly",
                        profile=profile, device="cpu", seed=0, progress=False)
    assert again == kw                                                   # the cached stages are reused
    gvr = build_gvr(runs / "classifier", **kw)
    x = torch.zeros(1, 1, RES, RES)
    assert gvr.explain(x).path.shape[0] <= 4


def test_explain_leaves_no_gradients_on_the_models():
    clf, x = _toy(torch.full((16,), 0.5), [0.4])
    G = Blurry()
    GVR(generator=G, encoder=Flatten(), classifier=clf, config=GVRConfig(max_steps=5)).explain(x, 1)
    assert clf.w.grad is None and all(p.grad is None for p in G.parameters())
