"""In-house StyleGAN2-ADA networks: shapes, determinism, gradients, save/load, closed forms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medcf.errors import CheckpointError, MedcfError, ShapeError
from medcf.generators.stylegan2 import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    MappingConfig,
    SynthesisConfig,
    config_from_official_kwargs,
)
from medcf.generators.stylegan2.discriminator import MinibatchStdLayer
from medcf.generators.stylegan2.layers import Conv2dLayer
from medcf.generators.stylegan2.synthesis import SynthesisLayer, modulated_conv2d


def gcfg(arch: str = "skip", c_dim: int = 0, **synth) -> GeneratorConfig:
    return GeneratorConfig(z_dim=16, w_dim=16, c_dim=c_dim, img_resolution=16, img_channels=1,
                           mapping=MappingConfig(num_layers=2),
                           synthesis=SynthesisConfig(channel_base=128, channel_max=16,
                                                     architecture=arch, **synth))


def dcfg(arch: str = "resnet", c_dim: int = 0, **kw) -> DiscriminatorConfig:
    return DiscriminatorConfig(c_dim=c_dim, img_resolution=16, img_channels=1, architecture=arch,
                               channel_base=128, channel_max=16, mbstd_group_size=2,
                               mapping=MappingConfig(num_layers=2, w_avg_beta=None), **kw)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("arch", ["orig", "skip", "resnet"])
@pytest.mark.parametrize("c_dim", [0, 3])
def test_generator_and_discriminator_shapes(arch, c_dim):
    G = Generator(gcfg(arch, c_dim)).eval()
    D = Discriminator(dcfg(arch, c_dim)).eval()
    assert G.num_ws == 6  # two convs per block at 8 and 16, one at 4, plus the last ToRGB
    z = torch.randn(4, 16, generator=_gen(0))
    c = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float() if c_dim else None
    with torch.no_grad():
        img = G(z, c, noise_mode="const")
        logits = D(img, c)
    assert img.shape == (4, 1, 16, 16) and img.dtype == torch.float32
    assert logits.shape == (4, 1)
    assert torch.isfinite(img).all() and torch.isfinite(logits).all()


def test_resnet_generator_has_skip_layers_and_orig_has_one_torgb():
    names = set(Generator(gcfg("resnet")).state_dict())
    assert "synthesis.b8.skip.weight" in names and "synthesis.b8.torgb.weight" not in names
    assert "synthesis.b16.torgb.weight" in names
    names = set(Generator(gcfg("orig")).state_dict())
    assert not any(".skip." in k for k in names)
    assert [k for k in names if k.endswith("torgb.weight")] == ["synthesis.b16.torgb.weight"]


# ----------------------------------------------------------------------------- randomness


def test_constructors_use_their_own_seed_not_the_global_rng():
    state = torch.get_rng_state()
    G1, G2, G3 = Generator(gcfg(), seed=1), Generator(gcfg(), seed=1), Generator(gcfg(), seed=2)
    Discriminator(dcfg(), seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    s1, s2, s3 = G1.state_dict(), G2.state_dict(), G3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(s1["synthesis.b8.conv0.weight"], s3["synthesis.b8.conv0.weight"])


def test_sampling_is_determined_by_the_passed_generator():
    G = Generator(gcfg()).eval()
    with torch.no_grad():
        a = G.sample(3, generator=_gen(5))
        b = G.sample(3, generator=_gen(5))
        c = G.sample(3, generator=_gen(6))
        r1 = G.sample(3, generator=_gen(5), noise_mode="random")
        r2 = G.sample(3, generator=_gen(5), noise_mode="random")
    assert torch.equal(a, b) and torch.equal(r1, r2)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["skip", "resnet", "orig"])
def test_noise_drawn_up_front_equals_each_layer_drawing_its_own(arch):
    """With a generator the synthesis draws every layer's noise first (one torch.compile graph
    break instead of one per layer); the stream must be the one the layers would draw in turn."""
    G = Generator(gcfg(arch)).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)  # initialised to 0: make the noise visible
    ws = G.mapping(torch.randn(3, G.z_dim, generator=_gen(1)), None)
    with torch.no_grad():
        up_front = G.synthesis(ws, noise_mode="random", generator=_gen(7))
        g, x, img = _gen(7), None, None
        for name, start, count in G.synthesis._slices:  # each layer draws from g as it runs
            x, img = getattr(G.synthesis, name)(x, img, ws[:, start:start + count], noise_mode="random",
                                                generator=g)
        const = G.synthesis(ws, noise_mode="const")
    assert torch.equal(up_front, img)
    assert (up_front - const).abs().max() > 1e-4  # the noise does reach the image


# ----------------------------------------------------------------------------- training


def test_gradients_are_finite_and_one_adam_step_keeps_things_finite():
    G, D = Generator(gcfg("skip", 3)).train(), Discriminator(dcfg("resnet", 3)).train()
    z = torch.randn(4, 16, generator=_gen(1))
    c = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    real = torch.rand(4, 1, 16, 16, generator=_gen(2)) * 2 - 1
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99))

    fake = G(z, c, generator=_gen(3))
    loss_g = F.softplus(-D(fake, c)).mean()  # non-saturating generator loss
    opt_g.zero_grad()
    loss_g.backward()
    grads = [p.grad for p in G.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert G.synthesis.b16.conv1.weight.grad.abs().sum() > 0
    assert G.mapping.fc0.weight.grad.abs().sum() > 0
    before = G.synthesis.b8.conv0.weight.detach().clone()
    opt_g.step()
    assert not torch.equal(before, G.synthesis.b8.conv0.weight)

    loss_d = (F.softplus(D(fake.detach(), c)) + F.softplus(-D(real, c))).mean()
    opt_d.zero_grad()
    loss_d.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())
    opt_d.step()
    with torch.no_grad():
        out = D(G(z, c, generator=_gen(3)), c)
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p).all() for p in [*G.parameters(), *D.parameters()])


def test_second_order_gradients_for_r1_and_path_length_regularisers():
    G, D = Generator(gcfg("skip")).train(), Discriminator(dcfg("resnet")).train()
    real = (torch.rand(4, 1, 16, 16, generator=_gen(2)) * 2 - 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
    grad.square().sum().backward()  # R1 penalty needs a gradient of a gradient
    assert D.b16.conv0.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)
    ws = G.mapping(torch.randn(4, 16, generator=_gen(0)), None).detach().requires_grad_(True)
    img = G.synthesis(ws, noise_mode="const")
    (gw,) = torch.autograd.grad((img * torch.randn(img.shape, generator=_gen(5))).sum(), ws, create_graph=True)
    gw.square().sum().backward()  # path-length penalty
    assert G.synthesis.b8.conv0.weight.grad.abs().sum() > 0


def test_w_avg_tracks_the_batch_mean_in_training_mode_only():
    G = Generator(gcfg())
    z = torch.randn(8, 16, generator=_gen(0))
    with torch.no_grad():
        w = G.mapping(z, None, skip_w_avg_update=True)[:, 0]  # [8, w_dim]
        assert torch.equal(G.w_avg, torch.zeros(16))
        G.train().mapping(z, None)
    beta = 0.995  # w_avg <- lerp(mean w, w_avg, beta) = (1 - beta) * mean w when starting at 0
    torch.testing.assert_close(G.w_avg, (1 - beta) * w.mean(0), rtol=1e-5, atol=1e-7)
    tracked = G.w_avg.clone()
    with torch.no_grad():
        G.eval().mapping(z, None)
    assert torch.equal(G.w_avg, tracked)


def test_truncation_closed_form():
    G = Generator(gcfg()).eval()
    G.mapping.w_avg.copy_(torch.randn(16, generator=_gen(4)))
    z = torch.randn(3, 16, generator=_gen(0))
    with torch.no_grad():
        ws = G.mapping(z, None)
        ws0 = G.mapping(z, None, truncation_psi=0.0)
        ws_half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(ws0, G.w_avg.expand_as(ws0))
    assert torch.allclose(ws_half[:, :2], 0.5 * (ws[:, :2] + G.w_avg), atol=1e-6)
    assert torch.equal(ws_half[:, 2:], ws[:, 2:])


# ----------------------------------------------------------------------------- save / load, API


def test_save_load_round_trip_is_identical(tmp_path):
    G, D = Generator(gcfg("resnet", 3), seed=3).eval(), Discriminator(dcfg("skip", 3), seed=4)
    G.mapping.w_avg.normal_(generator=_gen(9))
    G.save(tmp_path / "g")
    D.save(tmp_path / "d")
    G2, D2 = Generator.load(tmp_path / "g"), Discriminator.load(tmp_path / "d")
    assert G2.config == G.config and D2.config == D.config
    z, c = torch.randn(2, 16, generator=_gen(0)), torch.eye(3)[:2]
    with torch.no_grad():
        assert torch.equal(G2(z, c, 0.7, noise_mode="const"), G(z, c, 0.7, noise_mode="const"))
        img = G(z, c, noise_mode="const")
        assert torch.equal(D2.eval()(img, c), D.eval()(img, c))
    with pytest.raises(CheckpointError, match="is a 'stylegan2-discriminator' checkpoint"):
        Generator.load(tmp_path / "d")


def test_decode_broadcasts_w_and_checks_shapes():
    G = Generator(gcfg()).eval()
    w = torch.randn(2, 16, generator=_gen(0))
    with torch.no_grad():
        assert torch.equal(G.decode(w), G.decode(w[:, None].repeat(1, G.num_ws, 1)))
    with pytest.raises(ShapeError, match=r"w: expected \[B, 16\] or \[B, 6, 16\], got \(2, 5, 16\)"):
        G.decode(torch.zeros(2, 5, 16))
    with pytest.raises(MedcfError, match="noise_mode: expected one of"):
        G.decode(w, noise_mode="bogus")


def test_labels_class_index_and_errors():
    G = Generator(gcfg(c_dim=3)).eval()
    with torch.no_grad():
        a = G.sample(2, generator=_gen(1), c=2)
        b = G.sample(2, generator=_gen(1), c=torch.tensor([[0.0, 0, 1], [0, 0, 1]]))
    assert torch.equal(a, b)
    with pytest.raises(ShapeError, match="conditional \\(c_dim=3\\)"):
        G.sample(2)
    with pytest.raises(ShapeError, match="unconditional"):
        Generator(gcfg()).sample(2, c=1)
    with pytest.raises(ShapeError, match="conditional"):
        Discriminator(dcfg(c_dim=3))(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ShapeError, match="img: expected 1 channel"):
        Discriminator(dcfg())(torch.zeros(2, 3, 16, 16))


def test_config_validation_is_one_line():
    with pytest.raises(MedcfError, match="SynthesisConfig.architecture: must be one of"):
        SynthesisConfig(architecture="unet")
    with pytest.raises(MedcfError, match="img_resolution: must be a power of two"):
        GeneratorConfig(img_resolution=24)
    with pytest.raises(CheckpointError, match="synthesis_kwargs: .*architecture"):
        config_from_official_kwargs("training.networks.Generator",
                                    {"z_dim": 8, "synthesis_kwargs": {"architecture": "x"}})


def test_official_kwargs_accept_numpy_scalars_and_flatten_discriminator_sections():
    cfg = config_from_official_kwargs("training.networks.Discriminator", {
        "c_dim": 0, "img_resolution": 32, "img_channels": np.int64(1), "conv_clamp": np.float64(256),
        "block_kwargs": {"freeze_layers": 1}, "mapping_kwargs": {"num_layers": 4},
        "epilogue_kwargs": {"mbstd_group_size": 8}})
    assert cfg.img_channels == 1 and cfg.conv_clamp == 256.0 and cfg.freeze_layers == 1
    assert cfg.mbstd_group_size == 8 and cfg.mapping.num_layers == 4


def test_frozen_discriminator_layers_are_buffers_with_the_same_names():
    frozen, free = Discriminator(dcfg(freeze_layers=2)), Discriminator(dcfg())
    assert list(frozen.state_dict()) != list(free.state_dict())  # buffers come after parameters
    assert set(frozen.state_dict()) == set(free.state_dict())
    params = dict(frozen.named_parameters())
    assert "b16.fromrgb.weight" not in params and "b16.conv0.weight" not in params
    assert "b16.conv1.weight" in params


def test_fp16_blocks_compute_in_fp32_on_cpu():
    G16, G32 = Generator(gcfg(num_fp16_res=2)).eval(), Generator(gcfg()).eval()
    G16.load_state_dict(G32.state_dict())
    z = torch.randn(2, 16, generator=_gen(0))
    with torch.no_grad():
        assert torch.equal(G16(z, noise_mode="const"), G32(z, noise_mode="const"))


# ----------------------------------------------------------------------------- closed forms


def test_minibatch_std_groups_sample_i_with_i_plus_n_over_g():
    # batch 4, group size 2: groups {0, 2} and {1, 3}. Samples 0 and 2 are equal (std 0 ->
    # sqrt(1e-8) = 1e-4); samples 1 and 3 differ by 2 everywhere (std 1).
    x = torch.zeros(4, 2, 3, 3)
    x[1], x[3] = 1.0, -1.0
    x[0] = x[2] = torch.arange(18.0).reshape(2, 3, 3)
    y = MinibatchStdLayer(group_size=2)(x)
    assert y.shape == (4, 3, 3, 3) and torch.equal(y[:, :2], x)
    torch.testing.assert_close(y[:, 2], torch.tensor([1e-4, 1, 1e-4, 1]).view(4, 1, 1).expand(4, 3, 3))
    with pytest.raises(ShapeError, match="3 is not divisible by mbstd_group_size 2"):
        MinibatchStdLayer(group_size=2)(x[:3])


def _naive_upfirdn(x: np.ndarray, f: np.ndarray, up: int, down: int, p0: int, p1: int):
    """Zero-insert, pad, true 2D convolution with f, keep every down-th sample.  x: [H, W]."""
    h, w = x.shape
    u = np.zeros((h * up, w * up))
    u[::up, ::up] = x
    u = np.pad(u, ((p0, p1), (p0, p1)))
    n = f.shape[0]
    out = np.zeros((u.shape[0] - n + 1, u.shape[1] - n + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (u[i:i + n, j:j + n] * f[::-1, ::-1]).sum()
    return out[::down, ::down]


def test_fir_resampling_matches_the_definition_with_an_asymmetric_loaded_filter():
    f = torch.arange(1.0, 17.0).reshape(4, 4) ** 1.5  # no symmetry at all
    f = f / f.sum()
    x = torch.randn(1, 1, 5, 5, generator=_gen(0), dtype=torch.float64).float()
    up = Conv2dLayer(1, 1, 1, up=2)
    down = Conv2dLayer(1, 1, 1, down=2)
    for layer in (up, down):  # identity 1x1 weight (gain 1 for one input channel), no bias
        layer.load_state_dict({"weight": torch.ones(1, 1, 1, 1), "bias": torch.zeros(1),
                               "resample_filter": f})
    with torch.no_grad():
        got_up = up(x)[0, 0].double().numpy()
        got_down = down(x)[0, 0].double().numpy()
    fn, xn = f.double().numpy(), x[0, 0].double().numpy()
    # centred padding for a 4-tap filter: up by 2 -> (2, 1) and gain 4; down by 2 -> (1, 1)
    np.testing.assert_allclose(got_up, 4 * _naive_upfirdn(xn, fn, 2, 1, 2, 1), atol=1e-5)
    np.testing.assert_allclose(got_down, _naive_upfirdn(xn, fn, 1, 2, 1, 1), atol=1e-5)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_matches_the_per_sample_definition(up, demodulate):
    f = torch.arange(1.0, 17.0).reshape(4, 4) ** 1.5
    f = f / f.sum()
    layer = SynthesisLayer(3, 5, 4, resolution=6 * up, up=up, use_noise=False)
    layer.load_state_dict({**layer.state_dict(), "resample_filter": f})
    x = torch.randn(2, 3, 6, 6, generator=_gen(0))
    weight = torch.randn(5, 3, 3, 3, generator=_gen(1))
    styles = torch.randn(2, 3, generator=_gen(2))
    expected = []
    for b in range(2):  # modulate, demodulate, convolve one sample at a time
        wb = weight * styles[b].view(1, 3, 1, 1)
        if demodulate:
            wb = wb / (wb.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        xb = x[b:b + 1]
        if up == 1:
            expected.append(F.conv2d(xb, wb, padding=1))
        else:  # FIR up-sample first (pad 3, 2), then a true convolution (flipped kernel)
            ups = torch.stack([torch.from_numpy(4 * _naive_upfirdn(
                xb[0, i].double().numpy(), f.double().numpy(), 2, 1, 3, 2)) for i in range(3)])
            assert ups.shape == (3, 14, 14)
            expected.append(F.conv2d(ups[None].float(), wb.flip([2, 3])))
    expected = torch.cat(expected)
    for fused in (True, False):
        got = modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=1, up=up,
                               up_padding=layer.up_padding, fir_kernel=layer.fir_kernel,
                               fir_pad=layer.fir_pad, fused=fused)
        assert got.shape == (2, 5, 6 * up, 6 * up)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_dataclass_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        gcfg().z_dim = 3
