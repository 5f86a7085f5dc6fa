"""Options of progressive exaggeration's classifier-consistency term (issue 13): the robust
consistency (``medcf.train.consistency_aug``: the perturbation itself, that it reaches only the
consistency term, that it is off (bit-identical) by default, its API / CLI / benchmark-profile
plumbing) and ``target_scale``."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from _cli import run_cli
from _progressive_toy import write_toy
from medcf.errors import MedcfError
from medcf.train.consistency_aug import ConsistencyAug
from medcf.train.progressive import train_progressive

RES = 32


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy(tmp_path_factory.mktemp("aug-toy"), RES)


def _small(**kw):
    return {"steps": 3, "batch_size": 4, "width": 4, "downsamples": 2, "blocks": 1, "progress": False,
            "checkpoint_every": 0, "log_every": 1, **kw}


def _stats(run):
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def _weights(run):
    state = torch.load(run / "train_state.pt", weights_only=False)
    return state["models"]["generator"]


def test_shift_is_a_translation_within_range_and_seeded():
    x = torch.rand(6, 2, 12, 12)
    aug = ConsistencyAug(shift=2)
    y = aug(x, torch.Generator().manual_seed(3))
    xp = F.pad(x, (2, 2, 2, 2), mode="replicate")
    seen = set()
    for i in range(6):    # each image is x translated by some (dy, dx) in [-2, 2]^2, replicated border
        hits = [(oy, ox) for oy in range(5) for ox in range(5) if torch.equal(y[i], xp[i, :, oy:oy + 12, ox:ox + 12])]
        assert hits, f"image {i} is not a translation of the input"
        seen.add(hits[0])
    assert len(seen) > 1                                                          # offsets vary per image
    assert torch.equal(y, aug(x, torch.Generator().manual_seed(3)))              # same seed, same draw
    assert not torch.equal(y, aug(x, torch.Generator().manual_seed(4)))


def test_noise_and_blur_and_off():
    x = torch.zeros(64, 1, 16, 16)
    noisy = ConsistencyAug(noise=0.1)(x, torch.Generator().manual_seed(0))
    assert noisy.std().item() == pytest.approx(0.1, rel=0.05) and abs(noisy.mean().item()) < 0.01
    spot = torch.zeros(2, 1, 5, 5)
    spot[:, :, 2, 2] = 16.0
    blurred = ConsistencyAug(blur=1.0)(spot, torch.Generator().manual_seed(0))     # always blurred
    assert blurred[0, 0, 1:4, 1:4].tolist() == [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    assert blurred.sum().item() == pytest.approx(spot.sum().item())
    off = ConsistencyAug()
    assert not off.active and off(x) is x and off.spec() == "none"
    g = torch.Generator().manual_seed(0)
    x.requires_grad_(True)
    ConsistencyAug(shift=1, noise=0.1, blur=0.5)(x, g).sum().backward()            # differentiable in x
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_edit_weakens_the_change_toward_the_source():
    src, out = torch.zeros(8, 1, 4, 4), torch.ones(8, 1, 4, 4)       # G's change is +1 everywhere
    y = ConsistencyAug(edit=0.5)(out, torch.Generator().manual_seed(0), src)
    a = y[:, 0, 0, 0]                                                   # per image: x + a * change
    assert torch.equal(y, a.view(8, 1, 1, 1).expand_as(y))             # one factor per image
    assert a.min() >= 0.5 and a.max() <= 1.0 and a.std() > 0.05
    assert torch.equal(ConsistencyAug(edit=1.0)(out, None, src), out)
    with pytest.raises(MedcfError, match="source"):
        ConsistencyAug(edit=0.5)(out, None)


def test_parse_and_errors():
    a = ConsistencyAug.parse("shift=2, noise=0.02,blur=0.5")
    assert a == ConsistencyAug(shift=2, noise=0.02, blur=0.5)
    assert ConsistencyAug.parse(a.spec()) == a and ConsistencyAug.parse({"shift": 1}) == ConsistencyAug(shift=1)
    assert ConsistencyAug.parse(None) == ConsistencyAug.parse("none") == ConsistencyAug.parse("") == ConsistencyAug()
    for bad, match in [("shift=2,zoom=1", "unknown key"), ("shift", "key=value"), ("noise=abc", "not a number"),
                       ("shift=-1", "shift in"), ("blur=2", "blur"), ("edit=0", "edit"), (3, "spec string")]:
        with pytest.raises(MedcfError, match=match):
            ConsistencyAug.parse(bad)


def test_off_by_default_is_bit_identical_and_on_changes_only_the_consistency_term(toy, tmp_path):
    kw = {"classifier": toy / "classifier", **_small()}
    train_progressive(toy / "data", tmp_path / "default", **kw)
    train_progressive(toy / "data", tmp_path / "none", consistency_aug="none", **kw)
    train_progressive(toy / "data", tmp_path / "on", consistency_aug="shift=2,noise=0.05,blur=0.5", **kw)
    clean = lambda rows: [{k: v for k, v in r.items() if k not in ("elapsed", "img_per_s")} for r in rows]  # noqa: E731
    assert clean(_stats(tmp_path / "default")) == clean(_stats(tmp_path / "none"))
    a, b = _weights(tmp_path / "default"), _weights(tmp_path / "none")
    assert all(torch.equal(a[k], b[k]) for k in a)
    on = _stats(tmp_path / "on")
    assert on[0]["cls"] != _stats(tmp_path / "default")[0]["cls"]               # f judged a perturbed copy
    assert on[0]["rec"] == _stats(tmp_path / "default")[0]["rec"]               # the other terms did not
    info = json.loads((tmp_path / "on" / "run.json").read_text())["run_info"]
    assert info["consistency_aug"] == "shift=2,noise=0.05,blur=0.5,edit=1"
    assert json.loads((tmp_path / "none" / "run.json").read_text())["run_info"]["consistency_aug"] == "none"
    # with the consistency term off, the augmentation can change nothing: it only feeds that term
    train_progressive(toy / "data", tmp_path / "c0", cls_weight=0.0, **kw)
    train_progressive(toy / "data", tmp_path / "c0on", cls_weight=0.0, consistency_aug="shift=3,noise=0.1", **kw)
    a, b = _weights(tmp_path / "c0"), _weights(tmp_path / "c0on")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(MedcfError, match="consistency_aug"):
        train_progressive(toy / "data", tmp_path / "bad", consistency_aug="shift=x", **kw)


def test_cli_and_benchmark_profile(toy, tmp_path, capsys):
    from pathlib import Path

    from medcf.train.progressive import prepare_benchmark

    base = ["train", "progressive", "--data", toy / "data", "--classifier", toy / "classifier", "--steps", "1",
            "--batch-size", "4", "--width", "4", "--no-progress"]
    code, out, err = run_cli(capsys, *base, "--out", tmp_path / "c", "--consistency-aug", "shift=1,noise=0.01")
    assert code == 0, err
    assert json.loads((tmp_path / "c" / "run.json").read_text())["run_info"]["consistency_aug"] == \
        "shift=1,noise=0.01,blur=0,edit=1"
    code, out, err = run_cli(capsys, *base, "--out", tmp_path / "d", "--consistency-aug", "rotate=5")
    assert code == 2 and "consistency_aug" in err and len(err.strip().splitlines()) == 1
    prof = {"steps": 1, "width": 4, "batch_size": 4}
    kw = prepare_benchmark(toy / "data", tmp_path / "bench", classifier_dir=toy / "classifier", task="cardiomegaly",
                           profile=prof, progress=False)
    cfg = (Path(kw["generator_dir"]) / "benchmark-stage.json").read_text()
    assert "consistency_aug" not in cfg and "target_scale" not in cfg             # old cache keys unchanged
    other = prepare_benchmark(toy / "data", tmp_path / "bench", classifier_dir=toy / "classifier",
                              task="cardiomegaly", profile={**prof, "consistency_aug": "noise=0.02, shift=2", "target_scale": 1.5},
                              progress=False)
    assert other["generator_dir"] != kw["generator_dir"]
    info = json.loads((Path(other["generator_dir"]) / "run.json").read_text())["run_info"]
    assert info["consistency_aug"] == "shift=2,noise=0.02,blur=0,edit=1" and info["target_scale"] == 1.5


def test_target_scale_sharpens_the_bin_targets(toy, tmp_path, capsys):
    from medcf.generators.progressive import bin_center

    train_progressive(toy / "data", tmp_path / "t", classifier=toy / "classifier", target_scale=2.0,
                      **_small(steps=1))
    info = json.loads((tmp_path / "t" / "run.json").read_text())["run_info"]
    centre = bin_center(torch.arange(10), 10).double()
    expected = torch.sigmoid(2 * torch.logit(centre))
    assert info["target_scale"] == 2.0
    assert torch.allclose(torch.tensor(info["targets"], dtype=torch.float64), expected, atol=1e-6)
    assert info["targets"][0] < 0.01 and info["targets"][-1] > 0.99        # the ends move out, 0.5 stays
    with pytest.raises(MedcfError, match="target_scale"):
        train_progressive(toy / "data", tmp_path / "bad", classifier=toy / "classifier", target_scale=0.0,
                          **_small(steps=1))
    code, out, err = run_cli(capsys, "train", "progressive", "--data", toy / "data", "--classifier",
                             toy / "classifier", "--out", tmp_path / "c", "--steps", "1", "--batch-size", "4",
                             "--width", "4", "--no-progress", "--target-scale", "-1")
    assert code == 2 and "target_scale" in err and len(err.strip().splitlines()) == 1
