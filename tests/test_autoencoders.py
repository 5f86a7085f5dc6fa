"""medcf.generators.autoencoder: the ``ae`` and ``vae`` backbones (+ their training recipe)."""

from __future__ import annotations

import math

import pytest
import torch

from medcf.errors import CheckpointError, DataError, ShapeError
from medcf.generators.autoencoder import (
    AUTOENCODERS,
    VAE,
    Autoencoder,
    AutoencoderConfig,
    AutoencoderOutput,
    default_widths,
    load_autoencoder,
)

KINDS = sorted(AUTOENCODERS)


def tiny(channels: int = 1, resolution: int = 32, **kw) -> AutoencoderConfig:
    return AutoencoderConfig(resolution=resolution, channels=channels, latent_dim=4,
                             widths=(4, 8), latent_size=resolution // 4, **kw)


def images(n: int, channels: int = 1, resolution: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, resolution, resolution, generator=g) * 2 - 1


# ----------------------------------------------------------------------------- config


def test_default_widths_reach_the_latent_size():
    # one stride-2 stage per halving: 64 -> 8 is three stages, 256 -> 8 five
    assert len(default_widths(64)) == 3
    assert len(default_widths(256)) == 5
    cfg = AutoencoderConfig(resolution=128)
    assert cfg.latent_size * 2 ** len(cfg.widths) == 128
    assert cfg.latent_shape == (8, 8, 8)


@pytest.mark.parametrize("kw, word", [
    (dict(channels=2), "channels"),
    (dict(resolution=512), "resolution"),
    (dict(resolution=64, widths=(8, 16)), "latent_size"),
    (dict(value_range=(1.0, -1.0)), "value_range"),
])
def test_config_rejects_bad_values(kw, word):
    with pytest.raises(ValueError, match=word):
        AutoencoderConfig(**kw)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("channels,resolution", [(1, 32), (3, 64)])
def test_shapes(kind, channels, resolution):
    model = AUTOENCODERS[kind](tiny(channels, resolution)).eval()
    x = images(2, channels, resolution)
    s = resolution // 4
    z = model.encode(x)
    assert z.shape == (2, 4, s, s)
    assert model.decode(z).shape == x.shape
    out = model(x)
    assert isinstance(out, AutoencoderOutput)
    assert out.reconstruction.shape == x.shape and out.mean.shape == z.shape
    assert (out.logvar is None) == (kind == "ae")
    # the decoder ends in tanh: outputs stay inside the image range
    assert out.reconstruction.abs().max() < 1.0


def test_vae_sample_shape_and_ae_refuses_to_sample():
    cfg = tiny()
    assert VAE(cfg).eval().sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 32, 32)
    with pytest.raises(NotImplementedError, match="vae"):
        Autoencoder(cfg).sample(1)


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_init_is_deterministic_and_leaves_global_rng_alone(kind):
    state = torch.random.get_rng_state()
    a, b, c = (AUTOENCODERS[kind](tiny(), seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)
    x = images(2)
    assert torch.equal(a.eval().encode(x), b.eval().encode(x))
    assert not torch.equal(a.encode(x), c.eval().encode(x))


def test_uniform_init_draws_the_listed_layers_in_module_order():
    from torch import nn

    from medcf.generators.layers import uniform_init_

    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ConvTranspose2d(1, 1, 2), nn.Linear(4, 5), nn.Conv3d(1, 2, 2),
                        nn.GroupNorm(1, 3))
    tconv = net[1].weight.detach().clone()
    uniform_init_(net, torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    for i, fan_in in ((0, 2 * 3 * 3), (2, 4), (3, 1 * 2 * 2 * 2)):      # Conv2d, Linear, Conv3d in order
        b = math.sqrt(3.0 / fan_in)
        w = net[i].weight
        assert torch.equal(w, torch.rand(w.shape, generator=g) * 2 * b - b) and w.abs().max() <= b
        assert not net[i].bias.any()
    assert torch.equal(net[1].weight, tconv)                            # not a listed layer: untouched
    assert torch.equal(net[4].weight, torch.ones(3)) and not net[4].bias.any()


def test_vae_encode_is_the_posterior_mean_and_sampling_follows_the_generator():
    vae = VAE(tiny()).eval()
    x = images(2)
    out = vae(x)  # eval: no posterior noise
    assert torch.equal(out.latent, out.mean)
    assert torch.equal(vae.encode(x), out.mean)
    s1 = vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(3)).latent
    s2 = vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(3)).latent
    s3 = vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(4)).latent
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)
    # z - mean = sigma * eps, so it is scaled by exp(logvar / 2)
    eps = (s1 - out.mean) / torch.exp(0.5 * out.logvar)
    assert 0.5 < float(eps.detach().std()) < 1.5


def test_codes_do_not_depend_on_the_batch():
    # GroupNorm: a sample's code is the same alone or in a batch
    model = Autoencoder(tiny()).eval()
    x = images(4)
    assert torch.allclose(model.encode(x)[1:2], model.encode(x[1:2]), atol=1e-6)


def test_kl_matches_closed_form():
    # KL(N(m, s^2) || N(0, 1)) = 0.5 (m^2 + s^2 - 1 - log s^2) per dimension
    mean = torch.tensor([[[[1.0]], [[0.0]]]])          # [1, 2, 1, 1]
    logvar = torch.tensor([[[[0.0]], [[math.log(4.0)]]]])
    out = AutoencoderOutput(torch.zeros(1), mean, mean, logvar)
    expected = 0.5 * (1 + 1 - 1 - 0) + 0.5 * (0 + 4 - 1 - math.log(4.0))
    assert float(out.kl()[0]) == pytest.approx(expected, rel=1e-6)
    assert float(AutoencoderOutput(torch.zeros(1), mean, mean).kl()[0]) == 0.0


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", KINDS)
def test_finite_gradients_and_one_step_without_nan(kind):
    model = AUTOENCODERS[kind](tiny()).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = images(4)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(3):
        out = model(x, generator=g)
        loss = (out.reconstruction - x).abs().mean() + 1e-3 * out.kl().mean()
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(gr).all() for gr in grads)
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert losses[-1] < losses[0]  # Adam on a fixed batch goes downhill


def test_gradient_reaches_the_latent_through_the_decoder():
    # what Latent Shift relies on
    model = VAE(tiny()).eval()
    z = model.encode(images(1)).requires_grad_(True)
    (g,) = torch.autograd.grad(model.decode(z).mean(), z)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    model = AUTOENCODERS[kind](tiny(3, 32), seed=5).eval()
    model.save(tmp_path / "m", meta={"steps": 7})
    loaded = load_autoencoder(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    x = images(2, 3, 32)
    assert torch.equal(loaded.encode(x), model.encode(x))
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    assert type(model).load(tmp_path / "m").config.value_range == (-1.0, 1.0)


def test_load_refuses_another_kind(tmp_path):
    Autoencoder(tiny()).save(tmp_path / "ae")
    with pytest.raises(CheckpointError, match="'ae' checkpoint, expected 'vae'"):
        VAE.load(tmp_path / "ae")
    with pytest.raises(CheckpointError, match="expected 'vae'"):
        load_autoencoder(tmp_path / "ae", kind="vae")


# ----------------------------------------------------------------------------- wrong inputs


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_resolution_or_channels_names_what_is_expected(kind, tmp_path):
    AUTOENCODERS[kind](tiny(1, 32)).save(tmp_path / "m")
    model = load_autoencoder(tmp_path / "m")
    with pytest.raises(ShapeError, match=r"expected 32x32 pixels, got 64x64") as e:
        model.encode(images(1, 1, 64))
    assert "\n" not in str(e.value) and "[B, 1, 32, 32]" in str(e.value)
    with pytest.raises(ShapeError, match=r"expected 1 channel\(s\), got 3"):
        model.reconstruct(images(1, 3, 32))
    with pytest.raises(ShapeError, match=r"\[B, C, H, W\]"):
        model.encode(torch.zeros(32, 32))
    with pytest.raises(ShapeError, match=r"latent: expected \[B, 4, 8, 8\]"):
        model.decode(torch.zeros(1, 4, 4, 4))


def test_values_far_outside_the_range_are_refused():
    model = Autoencoder(tiny()).eval()
    with pytest.raises(DataError, match=r"outside the trained intensity range \[-1, 1\]"):
        model.encode(images(1) * 500)  # e.g. Hounsfield units
    model.encode(images(1) * 1.2)  # slight overshoot (noise) is accepted


# ----------------------------------------------------------------------------- training recipe


def _synth(n: int = 24, resolution: int = 32):
    from medcf.data.synthetic import SynthConfig, SyntheticDataset

    return SyntheticDataset(SynthConfig(resolution=resolution), n=n, seed=0)


TINY_RECIPE = dict(widths=(4, 8), latent_size=8, latent_dim=4, batch_size=8, progress=False,
                   log_every=1, val_every=2, checkpoint_every=2)


@pytest.mark.parametrize("kind", KINDS)
def test_recipe_trains_saves_and_reports(kind, tmp_path):
    from medcf.train.autoencoders import train_autoencoder

    ds = _synth()
    res = train_autoencoder(ds, tmp_path / "run", kind=kind, steps=4, val_data=_synth(8), **TINY_RECIPE)
    model = load_autoencoder(tmp_path / "run", kind=kind)
    assert model.config.resolution == 32 and model.config.channels == 1
    assert set(res.val) >= {"l1", "psnr"} and 0 < res.val["l1"] < 2
    # PSNR is the closed form of the mean squared error at peak-to-peak 2
    with torch.no_grad():
        x = torch.stack([_synth(8)[i]["image"] for i in range(8)])
        mse = (model.reconstruct(x) - x).pow(2).mean(dim=(1, 2, 3))
    assert res.val["psnr"] == pytest.approx(float((10 * torch.log10(4 / mse)).mean()), rel=1e-4)
    from medcf.io import read_header

    meta = read_header(tmp_path / "run")["meta"]
    assert meta["val"]["n"] == 8 and meta["input"]["resolution"] == 32
    stats = (tmp_path / "run" / "stats.jsonl").read_text()
    assert "val_psnr" in stats and ("kl" in stats) == (kind == "vae")


def test_recipe_resume_continues_exactly(tmp_path):
    from medcf.train.autoencoders import train_autoencoder

    ds = _synth()
    kw = dict(kind="vae", val_data=None, **TINY_RECIPE)
    train_autoencoder(ds, tmp_path / "full", steps=4, **kw)
    train_autoencoder(ds, tmp_path / "part", steps=2, **kw)
    train_autoencoder(ds, tmp_path / "part", steps=4, resume=True, **kw)
    a, b = load_autoencoder(tmp_path / "full"), load_autoencoder(tmp_path / "part")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


def test_recipe_rejects_bad_arguments(tmp_path):
    from medcf.errors import DataError as DE
    from medcf.train.autoencoders import train_autoencoder

    with pytest.raises(ValueError, match="kind"):
        train_autoencoder(_synth(), tmp_path / "r", kind="gan")
    with pytest.raises(DE, match="not found"):
        train_autoencoder(tmp_path / "missing", tmp_path / "r")


def test_cli_trains_from_a_synthetic_folder(tmp_path):
    from medcf.cli import main
    from medcf.data import write_synthetic
    from medcf.data.synthetic import SynthConfig

    write_synthetic(SynthConfig(resolution=32), 20, tmp_path / "data", progress=False)
    main_args = ["train", "ae", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 "--steps", "2", "--batch-size", "4", "--latent-dim", "4", "--no-progress"]
    try:
        main(main_args)
    except SystemExit as e:  # success may return or exit 0
        assert e.code == 0
    assert load_autoencoder(tmp_path / "run").kind == "ae"
    with pytest.raises(SystemExit) as e:  # the run exists: one-line error, exit 2
        main(main_args)
    assert e.value.code == 2


def test_recipe_perceptual_term_is_added(tmp_path, monkeypatch):
    # a stand-in LPIPS (no weights needed): mean squared error per image, recorded when called
    import json

    import medcf.eval.lpips as lpips_module
    from medcf.train.autoencoders import train_autoencoder

    calls = []

    class FakeLPIPS(torch.nn.Module):
        def __init__(self, net="alex"):
            super().__init__()
            calls.append(net)

        def forward(self, x, y):
            return (x - y).pow(2).flatten(1).mean(1)

    monkeypatch.setattr(lpips_module, "LPIPS", FakeLPIPS)
    train_autoencoder(_synth(), tmp_path / "run", kind="ae", steps=2, perceptual=0.5, val_data=None,
                      **TINY_RECIPE)
    assert calls == ["alex"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    row = next(r for r in rows if "lpips" in r)
    assert row["loss"] == pytest.approx(row["l1"] + 0.5 * row["lpips"], rel=1e-5)


def test_cli_help_has_an_example(capsys):
    from medcf.cli import main

    try:
        main(["train", "vae", "--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert "medcf train vae --data" in out and "--kl-weight" in out


@pytest.mark.parametrize("widths, expected_latent", [(None, (8, 16, 16)), ((4, 8), (16, 8, 8))])
def test_recipe_derives_the_latent_from_widths(widths, expected_latent, tmp_path):
    # no widths: 16x16 latent with 8 channels (one stage per halving from 32 px: 1 stage);
    # two stages on 32 px: 8x8 latent with 16 channels
    from medcf.train.autoencoders import train_autoencoder

    train_autoencoder(_synth(8), tmp_path / "r", kind="ae", steps=1, widths=widths, batch_size=4,
                      progress=False, val_data=None)
    cfg = load_autoencoder(tmp_path / "r").config
    assert cfg.latent_shape == expected_latent
    assert cfg.resolution == cfg.latent_size * 2 ** len(cfg.widths)
