"""The benchmark's stage cache keys: a prepare hook must hash the same configuration dict
from one version to the next, or users' cached backbones are silently retrained."""

from __future__ import annotations

import hashlib
import json

import pytest

import medcf.counterfactual.diffusion as diffusion_rows
import medcf.train.cyclegan as cyclegan_recipe
import medcf.train.diffusion as diffusion_recipe
import medcf.train.icam as icam_recipe
from medcf.benchmark.cache import STAGE_FILE, profile_stage


def documented_hash(config: dict) -> str:
    """The rule of medcf.benchmark.cache: 12 hex digits of the SHA-256 of canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def finished_stage(root, name: str, config: dict):
    path = root / f"{name}-{documented_hash(config)}"
    path.mkdir(parents=True)
    (path / STAGE_FILE).write_text(json.dumps({"name": name, "config": config, "done": True}))
    return path


def refuse_training(*args, **kwargs):
    raise AssertionError("the hook hashed another configuration and started training")


# the configurations these hooks hashed when they were written (quick-profile defaults, the
# profile's {"steps": 7} on top, seed 3): pinned by hand
PINNED = {
    "cyclegan": {"width": 8, "blocks": 2, "disc_width": 8, "disc_layers": 2, "steps": 7, "batch_size": 4,
                 "lr": 2e-4},
    # icam re-pinned with its saved-format version 2 (content_noise, weights): a version-1 stage
    # holds a model this medcf refuses, so it must not be reused
    "icam": {"width": 8, "blocks": 1, "attr_dim": 8, "disc_width": 8, "disc_layers": 2, "steps": 7,
             "batch_size": 4, "lr": 2e-4, "content_noise": 0.0, "weights": {}},
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_prepare_hooks_reuse_the_stage_of_the_pinned_configuration(tmp_path, monkeypatch, name):
    module = {"cyclegan": cyclegan_recipe, "icam": icam_recipe}[name]
    monkeypatch.setattr(module, f"train_{name}", refuse_training)
    data, out = tmp_path / "data", tmp_path / "methods" / name / "cardiomegaly"
    stage = finished_stage(out, name, {"data": str(data), **PINNED[name], "seed": 3})
    hook = getattr(module, f"prepare_{name}")
    kw = hook(data, out, classifier_dir=tmp_path / "classifier", task="cardiomegaly",
              profile={"steps": 7, "explain": {"max_steps": 3}}, seed=3, progress=False)
    assert kw == {"generator_dir": str(stage), "max_steps": 3}


def test_diffusion_rows_reuse_the_shared_ddpm_of_the_pinned_configuration(tmp_path, monkeypatch):
    from medcf.data import SynthConfig, write_synthetic

    monkeypatch.setattr(diffusion_recipe, "train_diffusion", refuse_training)
    data = tmp_path / "data"
    write_synthetic(SynthConfig(resolution=32), 4, data, seed=0, progress=False)
    # what the hook hashed when it was written: the quick-profile DDPM with the data's side, the
    # profile's steps and widths on top (its 8.0 read as 8), seed 3; the three diffusion rows share
    # it under the "diffusion" row's folder
    pinned = {"data": str(data), "resolution": 32, "widths": [8, 16], "layers_per_block": 1,
              "attention": False, "steps": 7, "batch_size": 16, "lr": 5e-4, "seed": 3}
    stage = finished_stage(tmp_path / "methods" / "diffusion" / "cardiomegaly", "ddpm", pinned)
    for row in ("diffusion", "diffusion-masked", "diffusion-dime"):
        kw = diffusion_rows.prepare_benchmark(
            data, tmp_path / "methods" / row / "cardiomegaly", classifier_dir=tmp_path / "classifier",
            task="cardiomegaly", profile={"steps": 7, "widths": [8.0, 16], "explain": {"steps": 3}}, seed=3,
            progress=False)
        assert kw == {"generator_dir": str(stage), "steps": 3, "max_tries": 2}  # max_tries: BENCH_EXPLAIN


def test_profile_stage_trains_once_with_the_table_over_the_defaults(tmp_path):
    calls = []

    def train(cfg, folder, resume):
        calls.append((cfg, folder.name, resume))
        (folder / "model.txt").write_text("trained")

    args = (tmp_path / "m", "toy", tmp_path / "data", {"steps": 5, "explain": {"k": 1}}, {"steps": 2, "w": 4}, 0)
    kw = profile_stage(*args, train)
    expected = {"data": str(tmp_path / "data"), "steps": 5, "w": 4, "seed": 0}  # "explain" is not hashed
    assert calls == [(expected, f"toy-{documented_hash(expected)}", False)]
    assert kw == {"generator_dir": str(tmp_path / "m" / f"toy-{documented_hash(expected)}"), "k": 1}
    assert profile_stage(*args, train) == kw and len(calls) == 1  # finished: reused, not retrained


def test_profile_stage_normalises_the_merged_configuration_before_hashing(tmp_path):
    calls = []

    def as_ints(cfg):
        cfg["widths"] = [int(w) for w in cfg["widths"]]

    def train(cfg, folder, resume):
        calls.append(cfg)

    defaults = {"widths": [4, 8]}
    kw = profile_stage(tmp_path, "toy", "d", {"widths": [2.0, 4.0]}, defaults, 1, train, normalise=as_ints,
                       explain={"k": 1, "j": 2})
    expected = {"data": "d", "widths": [2, 4], "seed": 1}
    assert calls == [expected] and defaults == {"widths": [4, 8]}
    assert kw == {"generator_dir": str(tmp_path / f"toy-{documented_hash(expected)}"), "k": 1, "j": 2}
    kw = profile_stage(tmp_path, "toy", "d", {"widths": [2, 4], "explain": {"k": 5}}, defaults, 1, train,
                       normalise=as_ints, explain={"k": 1, "j": 2})
    assert len(calls) == 1 and kw["k"] == 5 and kw["j"] == 2  # the same stage; the table's explain wins
