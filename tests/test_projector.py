"""Projector: tiny in-house StyleGAN2 generators (16 px) with fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from medcf.encoders import Projector, ProjectorConfig, load_latents, save_latents
from medcf.errors import CheckpointError, DataError, ShapeError
from medcf.eval.lpips import LPIPS
from medcf.generators.stylegan2 import Generator, GeneratorConfig, MappingConfig, SynthesisConfig


def tiny_generator(w_dim: int = 8, channels: int = 1, seed: int = 0) -> Generator:
    cfg = GeneratorConfig(z_dim=w_dim, w_dim=w_dim, img_resolution=16, img_channels=channels,
                          mapping=MappingConfig(num_layers=2),
                          synthesis=SynthesisConfig(channel_base=256, channel_max=16))
    G = Generator(cfg, seed=seed).eval()
    with torch.no_grad():  # make the (zero-initialised) noise inputs matter, as in a trained G
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    return G


def generated(G: Generator, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = G.mapping(z, None)[:, 0]
        return w, G.decode(w)


@pytest.fixture(scope="module")
def alex() -> LPIPS:
    return LPIPS("alex")


def test_recovers_the_w_of_a_generated_image():
    # the true w reproduces x exactly (zero loss) and the tiny G's Jacobian in w is full rank,
    # so a converged projection into W must land near the true w
    G = tiny_generator()
    w, x = generated(G, 4, seed=1)
    proj = Projector(G, config=ProjectorConfig(space="w", steps=100, lr=0.3, lpips_weight=0.0,
                                               optimize_noise=False, progress=False))
    res = proj.project(x, generator=torch.Generator().manual_seed(0))
    assert res.latents.shape == (4, 8)
    start = (proj.w_stats()[0] - w).norm(dim=1)  # the projection starts at the mean w
    end = (res.latents - w).norm(dim=1)
    assert (end < 0.2 * start).all(), (start, end)
    assert res.final["l2"].median() < 1e-3 < res.losses["l2"][0]
    assert torch.allclose(res.images, G.decode(res.latents), atol=1e-5)


def test_wplus_with_lpips_and_noise_reduces_the_loss_and_leaves_G_untouched(alex):
    G = tiny_generator()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    _, x = generated(G, 2, seed=2)
    proj = Projector(G, config=ProjectorConfig(space="w+", steps=30, progress=False), lpips=alex)
    res = proj.project(x, generator=torch.Generator().manual_seed(0))
    assert res.latents.shape == (2, G.num_ws, 8)
    assert res.losses["loss"][-1] < res.losses["loss"][0]
    assert res.final["lpips"].shape == (2,) and (res.final["lpips"] >= 0).all()
    assert set(res.noise) and all(v.shape[:2] == (2, 1) for v in res.noise.values())
    # noise maps are renormalised to mean 0 / std 1 per image
    v = next(iter(res.noise.values()))
    assert torch.allclose(v.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in G.parameters())


def test_rgb_generator_works_too(alex):
    G = tiny_generator(channels=3)
    _, x = generated(G, 1, seed=3)
    res = Projector(G, config=ProjectorConfig(steps=3, progress=False), lpips=alex).project(x)
    assert res.images.shape == (1, 3, 16, 16) and len(res.losses["loss"]) == 3


def test_a_batch_projects_like_its_images_alone():
    G = tiny_generator()
    _, x = generated(G, 2, seed=4)
    cfg = ProjectorConfig(space="w+", steps=15, lpips_weight=0.0, optimize_noise=False,
                          initial_noise_factor=0.0, progress=False)
    proj = Projector(G, config=cfg)
    both = proj.project(x).latents
    alone = torch.cat([proj.project(x[i:i + 1]).latents for i in range(2)])
    assert torch.allclose(both, alone, atol=1e-4)


def test_resume_from_saved_latents_continues(tmp_path, alex):
    G = tiny_generator()
    _, x = generated(G, 2, seed=5)
    proj = Projector(G, config=ProjectorConfig(space="w+", steps=25, progress=False), lpips=alex)
    first = proj.project(x, generator=torch.Generator().manual_seed(0))
    path = first.save(tmp_path / "lat.safetensors")
    saved = load_latents(path)
    assert torch.equal(saved.latents, first.latents) and set(saved.noise) == set(first.noise)
    assert saved.meta["space"] == "w+" and saved.meta["steps"] == 25
    second = proj.project(x, init=saved, generator=torch.Generator().manual_seed(1))
    # the first step has learning rate 0 and a resumed run adds no w noise: it starts exactly
    # where the first run ended (same latents, same noise maps)
    assert abs(second.losses["loss"][0] - float(first.final["loss"].mean())) < 1e-5
    assert float(second.final["loss"].mean()) < float(first.final["loss"].mean())


def test_init_from_w_latents_into_wplus_and_errors(tmp_path):
    G = tiny_generator()
    w, x = generated(G, 2, seed=6)
    proj = Projector(G, config=ProjectorConfig(space="w+", steps=0, lpips_weight=0.0, optimize_noise=False,
                                               progress=False))
    res = proj.project(x, init=w)  # 0 steps: the start point itself
    assert torch.allclose(res.latents, w.unsqueeze(1).expand(-1, G.num_ws, -1))
    assert res.final["l2"].max() < 1e-10  # init at the true w reproduces x (same constant noise)
    with pytest.raises(ShapeError, match="init"):
        proj.project(x, init=torch.zeros(2, 5))
    with pytest.raises(ShapeError, match="channel"):
        proj.project(x.repeat(1, 3, 1, 1))
    with pytest.raises(ShapeError, match="16x16"):
        proj.project(torch.zeros(1, 1, 8, 8))
    w_only = Projector(G, config=ProjectorConfig(space="w", steps=0, lpips_weight=0.0, progress=False))
    mixed = torch.randn(2, G.num_ws, 8)
    with pytest.raises(ShapeError, match="space='w\\+'"):
        w_only.project(x, init=mixed)
    with pytest.raises(ValueError, match="space"):
        ProjectorConfig(space="z")
    with pytest.raises(DataError, match="not found"):
        load_latents(tmp_path / "nope.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a medcf latents file"):
        load_latents(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_latents(tmp_path / "junk.safetensors")
    save_latents(tmp_path / "w.safetensors", w)
    assert torch.equal(load_latents(tmp_path / "w.safetensors").latents, w)


# ----------------------------------------------------------------------------- CLI


def _wire_cli():
    from medcf.cli import app
    from medcf.cli import generate as cli_module

    if "generate" not in {c.name for c in app.registered_commands}:  # until the lead wires it
        cli_module.register(app)


def _main(args) -> int:
    from medcf.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_generate_and_project_with_resume(tmp_path):
    import json

    from PIL import Image

    _wire_cli()
    G = tiny_generator()
    G.save(tmp_path / "G")
    assert _main(["generate", "--generator", tmp_path / "G", "--seeds", "0-2,5", "--trunc", "0.7",
                  "--out", tmp_path / "gen"]) == 0
    names = sorted(p.name for p in (tmp_path / "gen").iterdir())
    assert names == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png", "seed0005.png"]
    assert Image.open(tmp_path / "gen" / "grid.png").size == (32, 32)  # 4 images: 2x2 tiles of 16 px
    # seed s means z from torch.Generator().manual_seed(s)
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = G.synthesis(G.mapping(z, None, truncation_psi=0.7), noise_mode="const")[0, 0]
    want = ((want.clamp(-1, 1) + 1) * 127.5).round()
    got = torch.from_numpy(np.array(Image.open(tmp_path / "gen" / "seed0005.png"))).float()
    assert (got - want).abs().max() <= 1

    args = ["project", "--generator", tmp_path / "G", "--images", tmp_path / "gen", "--steps", "3",
            "--lpips-weight", "0", "--no-progress", "--batch-size", "3"]
    assert _main([*args, "--out", tmp_path / "p1"]) == 0
    meta = json.loads((tmp_path / "p1" / "projection.json").read_text())
    assert meta["steps"] == 3 and len(meta["files"]) == 5 and len(meta["final"]["loss"]) == 5
    assert (tmp_path / "p1" / "seed0001_proj.png").is_file()
    assert _main([*args, "--out", tmp_path / "p2", "--resume-from", tmp_path / "p1" / "latents.safetensors"]) == 0
    meta2 = json.loads((tmp_path / "p2" / "projection.json").read_text())
    assert meta2["steps"] == 6 and meta2["start"] == "resume"


def test_cli_error_paths(tmp_path, capsys):
    _wire_cli()
    G = tiny_generator()
    G.save(tmp_path / "G")
    (tmp_path / "empty").mkdir()
    (tmp_path / "dataset" / "images").mkdir(parents=True)  # a dataset's layout: images one level down
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "dataset" / "images" / "0.png")
    cases = [
        (["generate", "--generator", tmp_path / "missing", "--out", tmp_path / "o"], "missing"),
        (["generate", "--generator", tmp_path / "G", "--seeds", "5-2", "--out", tmp_path / "o"], "--seeds"),
        (["project", "--generator", tmp_path / "G", "--images", tmp_path / "nope", "--out", tmp_path / "o"],
         "nope"),
        (["project", "--generator", tmp_path / "G", "--images", tmp_path / "empty", "--out", tmp_path / "o"],
         "no image files"),
        (["project", "--generator", tmp_path / "G", "--images", tmp_path / "dataset", "--out", tmp_path / "o"],
         "no image files in this folder (it holds image folders: images/; pass one of them)"),
        (["project", "--generator", tmp_path / "G", "--images", tmp_path / "empty", "--out", tmp_path / "o",
          "--space", "z"], "space"),
    ]
    for args, needle in cases:
        assert _main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
