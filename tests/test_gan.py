"""DCGAN backbone + its encoder (GVR's backbone): shapes, gradient penalty, training, resume, CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from _cli import run_cli
from medcf.encoders.gan_encoder import GANEncoder, load_gan_encoder
from medcf.errors import CheckpointError, ShapeError
from medcf.generators.dcgan import DCGANConfig, DCGANCritic, DCGANGenerator, load_dcgan_generator
from medcf.train.gan import gradient_penalty, train_gan
from medcf.train.gan_encoder import train_gan_encoder

CFG = DCGANConfig(resolution=16, channels=1, z_dim=8, base_channels=8, max_channels=16)
TINY = dict(batch_size=4, z_dim=8, base_channels=8, max_channels=16, progress=False, log_every=1,
            sample_every=2, checkpoint_every=2)


class _Images(Dataset):
    """Smooth random 16 px images with labels (labels must be ignored by GAN training)."""

    def __init__(self, n: int = 12):
        g = torch.Generator().manual_seed(0)
        base = torch.rand(n, 1, 4, 4, generator=g) * 2 - 1
        self.x = nn.functional.interpolate(base, size=16, mode="bilinear", align_corners=False)

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return {"image": self.x[i], "label": torch.tensor(i % 2)}


def _state(m: nn.Module) -> dict:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_shapes_range_and_per_sample_outputs():
    G, D = DCGANGenerator(CFG, seed=0), DCGANCritic(CFG, seed=1)
    assert CFG.widths() == [16, 16, 8]                         # 4x4, 8x8, 16x16 stages
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    x = G(z)
    assert x.shape == (3, 1, 16, 16) and x.abs().max() < 1
    assert D(x).shape == (3,)
    assert torch.allclose(G(z[:1]), x[:1], atol=1e-6)           # GroupNorm: no batch dependence
    G.eval()
    assert torch.allclose(G.decode(z), x, atol=1e-6)            # the same in eval mode
    assert G.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 16, 16)
    with pytest.raises(ShapeError, match=r"\[B, 8\]"):
        G(torch.zeros(2, 5))
    with pytest.raises(ShapeError):
        D(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        DCGANConfig(resolution=48)


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    before = torch.random.get_rng_state()
    a, b, c = DCGANGenerator(CFG, seed=0), DCGANGenerator(CFG, seed=0), DCGANGenerator(CFG, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_normal_init_draws_the_listed_layers_in_module_order():
    from medcf.generators.layers import normal_init_

    net = nn.Sequential(nn.Linear(3, 4), nn.GroupNorm(2, 4), nn.Conv2d(1, 2, 3), nn.Conv3d(1, 1, 1),
                        nn.ConvTranspose2d(2, 1, 3))
    conv3d = net[3].weight.detach().clone()
    normal_init_(net, torch.Generator().manual_seed(5), std=0.5)
    g = torch.Generator().manual_seed(5)
    for i in (0, 2, 4):                                            # Linear, Conv2d, ConvTranspose2d in order
        assert torch.equal(net[i].weight, torch.randn(net[i].weight.shape, generator=g) * 0.5)
        assert not net[i].bias.any()
    assert torch.equal(net[3].weight, conv3d)                       # not a listed layer: untouched
    assert torch.equal(net[1].weight, torch.ones(4)) and not net[1].bias.any()
    normal_init_(net, torch.Generator().manual_seed(5), layers=(nn.Conv2d,))
    assert torch.equal(net[2].weight, torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(5)) * 0.02)
    # DCGAN's generator: its first layer (fc) takes the first N(0, 0.02) draws of its seed
    fc = DCGANGenerator(CFG, seed=3).fc
    assert torch.equal(fc.weight, torch.randn(fc.weight.shape, generator=torch.Generator().manual_seed(3)) * 0.02)


def test_write_step_grid_names_the_step_and_lays_out_rows(tmp_path):
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from medcf.train.recipe_common import write_step_grid

    images = torch.stack([torch.full((1, 2, 2), v) for v in (-1.0, 0.0, 1.0, 0.5)])   # [4, 1, 2, 2]
    out = write_step_grid(SimpleNamespace(step=12, run_dir=tmp_path), images, rows=2)
    assert out == {"samples_png": "samples/0000012.png"}
    png = np.asarray(Image.open(tmp_path / "samples" / "0000012.png"))
    # 2 rows x 2 columns of 2x2 tiles; value v -> round((v + 1) * 127.5)
    assert png.shape == (4, 4) and png[0, 0] == 0 and png[0, 2] == 128 and png[2, 0] == 255 and png[3, 3] == 191


def test_gradient_penalty_linear_critic_is_norm_of_w_minus_one_squared():
    # D(x) = <w, x>: the gradient is w at every interpolate, so GP = (||w|| - 1)^2 exactly
    lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        lin[1].weight.copy_(torch.tensor([[1.0, 2.0, 2.0, 0.0]]))   # ||w|| = 3
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    assert gradient_penalty(lin, real, fake).item() == pytest.approx(4.0)


def test_gradient_penalty_quadratic_critic_by_hand():
    # D(x) = 0.5 * sum(x^2): grad = x_hat = eps * real + (1 - eps) * fake
    class Quad(nn.Module):
        def forward(self, x):
            return 0.5 * x.flatten(1).square().sum(1)

    real = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 2.0]]]])   # [2, 1, 2, 2]
    fake = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    eps = torch.tensor([0.5, 0.25])
    # sample 0: x_hat = (0.5, 0.5, 0, 0), ||.|| = sqrt(0.5); sample 1: x_hat = (0, 0, 0, 0.5), ||.|| = 0.5
    expected = ((0.5 ** 0.5 - 1) ** 2 + (0.5 - 1) ** 2) / 2
    assert gradient_penalty(Quad(), real, fake, eps=eps).item() == pytest.approx(expected, rel=1e-6)


def test_gradient_penalty_reaches_the_critic_parameters():
    D = DCGANCritic(CFG, seed=0)
    gp = gradient_penalty(D, torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16),
                          generator=torch.Generator().manual_seed(0))
    gp.backward()
    grads = [p.grad for p in D.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("loss", ["wgan-gp", "ns"])
def test_training_steps_are_finite_and_write_the_run(loss, tmp_path):
    res = train_gan(_Images(), tmp_path / "run", loss=loss, steps=2, n_critic=2, **TINY)
    G = load_dcgan_generator(res.model_dir)
    assert res.steps == 4 and all(torch.isfinite(p).all() for p in G.parameters())
    assert DCGANCritic.load(tmp_path / "run" / "critic").config == G.config
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["0000002.png", "0000004.png"]
    for key in ("loss_D", "loss_G"):
        assert key in res.stats and res.stats[key] == res.stats[key]   # logged, not NaN
    assert ("gp" in res.stats) == (loss == "wgan-gp")


def test_save_load_round_trip(tmp_path):
    G, D = DCGANGenerator(CFG, seed=3).eval(), DCGANCritic(CFG, seed=4).eval()
    E = GANEncoder.for_generator(G, base_channels=8, max_channels=16).eval()
    G.save(tmp_path / "g"), D.save(tmp_path / "d"), E.save(tmp_path / "e")
    z = torch.randn(2, 8)
    x = G(z)
    assert torch.equal(load_dcgan_generator(tmp_path / "g")(z), x)
    assert torch.equal(DCGANCritic.load(tmp_path / "d")(x), D(x))
    assert torch.equal(load_gan_encoder(tmp_path / "e", generator=G)(x), E(x))
    with pytest.raises(CheckpointError, match="dcgan-generator"):
        load_dcgan_generator(tmp_path / "d")


def test_resume_continues_exactly(tmp_path):
    kw = dict(loss="wgan-gp", n_critic=2, **TINY)
    train_gan(_Images(), tmp_path / "full", steps=3, **kw)
    train_gan(_Images(), tmp_path / "part", steps=1, **kw)
    train_gan(_Images(), tmp_path / "part", steps=3, resume=True, **kw)
    a, b = load_dcgan_generator(tmp_path / "full"), load_dcgan_generator(tmp_path / "part")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


def test_encoder_matches_its_generator_and_trains(tmp_path):
    G = DCGANGenerator(CFG, seed=0).eval()
    E = GANEncoder.for_generator(G, base_channels=8, max_channels=16)
    assert (E.config.z_dim, E.config.resolution) == (8, 16)
    assert E.encode(torch.zeros(3, 1, 16, 16)).shape == (3, 8)
    E.check_generator(G)
    with pytest.raises(CheckpointError, match="not this one"):
        E.check_generator(DCGANGenerator(CFG, seed=1))
    with pytest.raises(CheckpointError, match="z of size 8"):
        E.check_generator(DCGANGenerator(DCGANConfig(resolution=16, z_dim=4, base_channels=8), seed=0))
    G.save(tmp_path / "g")
    before = _state(G)
    res = train_gan_encoder(tmp_path / "g", tmp_path / "enc", data=_Images(), steps=3, batch_size=4,
                            base_channels=8, max_channels=16, val_samples=8, progress=False, log_every=1)
    assert set(res.val) == {"latent_mse", "image_l1", "real_l1"}
    assert all(v == v and v >= 0 for v in res.val.values())
    trained = load_gan_encoder(res.model_dir, generator=G)
    assert trained.config.generator_path == str(tmp_path / "g")
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())   # G untouched


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from medcf.data import SynthConfig, write_synthetic

    root = tmp_path_factory.mktemp("gan-data")
    write_synthetic(SynthConfig(resolution=32), 16, root / "data", seed=0, progress=False)
    return root / "data"


def test_cli_trains_gan_and_encoder(folder, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "gan", "--data", folder, "--out", tmp_path / "gan",
                             "--resolution", "16", "--steps", "1", "--n-critic", "1", "--batch-size", "4",
                             "--z-dim", "8", "--base-channels", "8", "--no-progress")
    assert code == 0, err
    assert "gan:" in out and (tmp_path / "gan" / "model" / "config.json").is_file()
    code, out, err = run_cli(capsys, "train", "gan-encoder", "--generator", tmp_path / "gan", "--out",
                             tmp_path / "enc", "--steps", "1", "--batch-size", "4", "--no-progress")
    assert code == 0, err
    assert load_gan_encoder(tmp_path / "enc", generator=load_dcgan_generator(tmp_path / "gan"))


def test_cli_errors_are_one_line(folder, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "gan", "--data", folder, "--out", tmp_path / "a", "--loss", "hinge",
                           "--no-progress")
    assert code == 2 and "--loss" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "train", "gan", "--data", tmp_path / "missing", "--out", tmp_path / "b",
                           "--no-progress")
    assert code == 2 and "not found" in err and len(err.strip().splitlines()) == 1
    DCGANCritic(CFG).save(tmp_path / "critic")
    code, _, err = run_cli(capsys, "train", "gan-encoder", "--generator", tmp_path / "critic", "--out",
                           tmp_path / "c", "--no-progress")
    assert code == 2 and "dcgan-critic" in err and len(err.strip().splitlines()) == 1


def test_cli_help_has_examples(capsys):
    for cmd in ("gan", "gan-encoder", "vagan"):
        code, out, _ = run_cli(capsys, "train", cmd, "--help")
        assert code == 0 and "Example" in out and f"medcf train {cmd}" in out
