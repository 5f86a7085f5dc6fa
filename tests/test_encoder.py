"""Learned encoders: StyleGAN2 encoder shapes, save/load, generator identity (also the GAN
encoder's), one training step, CLI errors."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from medcf.encoders import (
    Projector,
    ProjectorConfig,
    StyleGANEncoder,
    generator_fingerprint,
    load_stylegan2_generator,
    load_stylegan_encoder,
)
from medcf.errors import CheckpointError, MedcfError, ShapeError
from medcf.generators.stylegan2 import Generator, GeneratorConfig, MappingConfig, SynthesisConfig


def tiny_generator(seed: int = 0) -> Generator:
    cfg = GeneratorConfig(z_dim=8, w_dim=8, img_resolution=16, img_channels=1,
                          mapping=MappingConfig(num_layers=2),
                          synthesis=SynthesisConfig(channel_base=256, channel_max=16))
    G = Generator(cfg, seed=seed).eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.linspace(-1, 1, 8))  # a non-zero average w, as after training
    return G


def small_encoder(G, seed: int = 0) -> StyleGANEncoder:
    return StyleGANEncoder.for_generator(G, seed=seed, base_channels=8, max_channels=16, hidden=32,
                                         head_channels=4)


def test_shapes_start_and_config():
    G = tiny_generator()
    enc = small_encoder(G)
    cfg = enc.config
    assert (cfg.resolution, cfg.channels, cfg.num_ws, cfg.w_dim) == (16, 1, G.num_ws, 8)
    assert cfg.generator_fingerprint == generator_fingerprint(G) and len(cfg.generator_fingerprint) == 16
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ws = enc.eval().encode(x)
    assert ws.shape == (3, G.num_ws, 8)
    assert torch.isfinite(ws).all()
    # the untrained encoder starts near G's average w (offsets are small)
    offset = (ws - G.w_avg).abs().mean()
    assert offset < 0.5 * G.w_avg.abs().mean()
    # per-image outputs: GroupNorm, no batch statistics
    assert torch.allclose(enc.encode(x[:1]), ws[:1], atol=1e-5)
    with pytest.raises(ShapeError, match="16x16"):
        enc.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ShapeError, match="channel"):
        enc.encode(torch.zeros(1, 3, 16, 16))


def test_seeded_construction_is_deterministic():
    G = tiny_generator()
    a, b, c = small_encoder(G, 0), small_encoder(G, 0), small_encoder(G, 1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["stem.weight"], sc["stem.weight"])


def test_he_normal_init_draws_the_listed_layers_in_module_order():
    import math

    from torch import nn

    from medcf.generators.layers import he_normal_init_

    net = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.Conv3d(1, 1, 1), nn.Linear(4, 5), nn.GroupNorm(1, 3))
    conv3d = net[1].weight.detach().clone()
    he_normal_init_(net, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    for i, fan_in in ((0, 2 * 3 * 3), (2, 4)):                          # Conv2d, Linear in order
        w = net[i].weight
        assert torch.equal(w, torch.randn(w.shape, generator=g) * math.sqrt(2.0 / fan_in))
    assert net[0].bias is None and not net[2].bias.any()
    assert torch.equal(net[1].weight, conv3d)                           # not a listed layer: untouched
    assert torch.equal(net[3].weight, torch.ones(3)) and not net[3].bias.any()


def test_save_load_round_trip_and_generator_identity(tmp_path):
    G = tiny_generator()
    enc = small_encoder(G).eval()
    enc.save(tmp_path / "enc")
    back = load_stylegan_encoder(tmp_path / "enc", generator=G)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert torch.equal(back.encode(x), enc.encode(x))
    assert json.loads((tmp_path / "enc" / "config.json").read_text())["kind"] == "stylegan2-encoder"
    other = tiny_generator(seed=1)
    with pytest.raises(CheckpointError, match="trained for generator"):
        load_stylegan_encoder(tmp_path / "enc", generator=other)
    G.save(tmp_path / "G")
    with pytest.raises(CheckpointError, match="expected 'stylegan2-encoder'"):
        load_stylegan_encoder(tmp_path / "G")
    with pytest.raises(CheckpointError, match="expected a StyleGAN2 generator"):
        load_stylegan2_generator(tmp_path / "enc")
    # a saved and reloaded generator keeps its fingerprint
    assert generator_fingerprint(load_stylegan2_generator(tmp_path / "G")) == generator_fingerprint(G)


def test_encoder_output_seeds_the_projector():
    G = tiny_generator()
    enc = small_encoder(G).eval()
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        ws = enc(x)
    proj = Projector(G, config=ProjectorConfig(space="w+", steps=0, lpips_weight=0.0, progress=False))
    assert torch.equal(proj.project(x, init=ws).latents, ws)


def test_one_training_run_on_generated_pairs(tmp_path):
    from medcf.train.encoder import train_encoder

    G = tiny_generator()
    G.save(tmp_path / "G")
    res = train_encoder(tmp_path / "G", tmp_path / "run", steps=3, batch_size=4, lpips_weight=0.0,
                        base_channels=8, max_channels=16, val_samples=8, val_every=2, progress=False,
                        ema_decay=None, log_every=1)
    enc = load_stylegan_encoder(res.model_dir, generator=G)
    assert enc.config.generator_path == str(tmp_path / "G")
    assert set(res.val) >= {"latent_mse", "image_l1"} and all(
        v == v and v >= 0 for k, v in res.val.items() if k != "n")
    lines = [json.loads(s) for s in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert any("val_latent_mse" in r for r in lines)
    fresh = StyleGANEncoder.for_generator(G, seed=0, base_channels=8, max_channels=16)
    assert not torch.equal(fresh.state_dict()["stem.weight"], enc.state_dict()["stem.weight"])
    # the caller's generator is never modified by training
    assert generator_fingerprint(load_stylegan2_generator(tmp_path / "G")) == generator_fingerprint(G)


def test_recipe_and_cli_errors(tmp_path, capsys):
    from medcf.cli import main
    from medcf.cli import train as train_cli
    from medcf.cli import train_encoder as cli_module
    from medcf.train.encoder import train_encoder

    with pytest.raises(MedcfError, match="loss weights"):
        train_encoder(tiny_generator(), tmp_path / "r", steps=1, lpips_weight=-1)
    with pytest.raises(CheckpointError, match="not found"):
        train_encoder(tmp_path / "missing", tmp_path / "r", steps=1)
    if "encoder" not in {c.name for c in train_cli.app.registered_commands}:  # until the lead wires it
        cli_module.register(train_cli.app)
    with pytest.raises(SystemExit) as e:
        main(["train", "encoder", "--generator", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err and "Traceback" not in err


def test_conditional_generators_get_classes(tmp_path):
    from medcf.generators.stylegan2.loading import map_z
    from medcf.train.encoder import train_encoder

    cfg = GeneratorConfig(z_dim=8, w_dim=8, c_dim=2, img_resolution=16, img_channels=1,
                          mapping=MappingConfig(num_layers=2),
                          synthesis=SynthesisConfig(channel_base=256, channel_max=16))
    G = Generator(cfg, seed=0).eval()
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    one = torch.nn.functional.one_hot(torch.ones(4, dtype=torch.long), 2).float()
    assert torch.equal(map_z(G, z, c=1), G.mapping(z, one))
    drawn = map_z(G, z, rng=torch.Generator().manual_seed(0))
    assert drawn.shape == (4, G.num_ws, 8)
    with pytest.raises(MedcfError, match="unconditional"):
        map_z(tiny_generator(), z, c=1)
    res = train_encoder(G, tmp_path / "run", steps=1, batch_size=2, lpips_weight=0.0, base_channels=8,
                        max_channels=16, val_samples=0, progress=False, ema_decay=None)
    assert load_stylegan_encoder(res.model_dir, generator=G).config.num_ws == G.num_ws


@pytest.mark.parametrize("family", ["stylegan2", "dcgan"])
def test_encoders_refuse_another_generator_by_latent_shape_then_fingerprint(tmp_path, family):
    from medcf.encoders import GANEncoder, load_gan_encoder
    from medcf.generators.dcgan import DCGANConfig, DCGANGenerator

    if family == "stylegan2":
        G, other, wrong_shape = tiny_generator(0), tiny_generator(1), Generator(GeneratorConfig(
            z_dim=8, w_dim=6, img_resolution=16, img_channels=1, mapping=MappingConfig(num_layers=2),
            synthesis=SynthesisConfig(channel_base=256, channel_max=16)), seed=0)
        enc, load, shape_words = small_encoder(G), load_stylegan_encoder, f"encodes [{G.num_ws}, 8] latents"
    else:
        cfg = DCGANConfig(resolution=16, z_dim=8, base_channels=8)
        G, other = DCGANGenerator(cfg, seed=0), DCGANGenerator(cfg, seed=1)
        wrong_shape = DCGANGenerator(DCGANConfig(resolution=16, z_dim=6, base_channels=8), seed=0)
        enc, load, shape_words = GANEncoder.for_generator(G, base_channels=8), load_gan_encoder, "encodes z of size 8"
    enc.save(tmp_path / "enc")
    saved = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert saved["meta"] == {"generator_fingerprint": generator_fingerprint(G)}
    assert type(load(tmp_path / "enc", generator=G)) is type(enc)
    with pytest.raises(CheckpointError, match="^" + re.escape(f"{tmp_path / 'enc'}: {shape_words}")):
        load(tmp_path / "enc", generator=wrong_shape)  # the shape is checked before the fingerprint
    with pytest.raises(CheckpointError) as e:
        load(tmp_path / "enc", generator=other)
    assert str(e.value) == (f"{tmp_path / 'enc'}: was trained for generator {generator_fingerprint(G)} "
                            f"({enc.config.generator_path or 'unknown path'}), not this one "
                            f"({generator_fingerprint(other)})")
    unknown = type(enc)(dataclasses.replace(enc.config, generator_fingerprint=""))
    unknown.check_generator(other)  # no recorded fingerprint: only the latent shape is checked
