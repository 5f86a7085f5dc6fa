"""VA-GAN: map generator, gradient penalty, training with snapshot selection, resume, explainer, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from _cli import run_cli, strict_json
from medcf.counterfactual.vagan import VAGAN, VAGANExplainConfig
from medcf.generators.vagan import VAGANConfig, VAGANMap, load_vagan_map
from medcf.io import read_header
from medcf.train.gan import gradient_penalty

RES = 32
TINY = dict(steps=2, n_critic=2, critic_warmup=0, batch_size=4, base_channels=4, depth=2, critic_channels=4,
            resolution=16, snapshot_every=1, val_n=4, progress=False, log_every=1)


def test_map_generator_shapes_zero_start_and_round_trip(tmp_path):
    cfg = VAGANConfig(resolution=16, channels=1, base_channels=4, depth=2, source_class="opacity",
                      target_class="clear", class_names=("clear", "opacity"))
    M = VAGANMap(cfg, seed=0)
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(M(x), torch.zeros_like(x))                  # untrained: y = x
    assert torch.equal(M.counterfactual(x), x)
    with torch.no_grad():
        M.out.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    m = M(x)
    assert m.shape == x.shape and m.abs().sum() > 0
    assert torch.allclose(M(x[:1]), m[:1], atol=1e-5)              # GroupNorm: no batch dependence
    assert M.counterfactual(3 * x.abs()).max() <= 1.0               # clamped to the image range
    M.save(tmp_path / "m")
    loaded = load_vagan_map(tmp_path / "m")
    assert torch.equal(loaded(x), M.eval()(x)) and loaded.config == cfg
    with pytest.raises(ValueError, match="divisible"):
        VAGANConfig(resolution=20, depth=3)


def test_gradient_penalty_against_a_hand_computed_value_with_drawn_eps():
    # D(x) = sum(x^3) / 3: grad = x_hat^2 elementwise; eps ~ U(0, 1) drawn from the generator
    class Cubic(nn.Module):
        def forward(self, x):
            return x.flatten(1).pow(3).sum(1) / 3

    real = torch.tensor([[[[1.0, -1.0]]], [[[2.0, 0.0]]], [[[0.5, 0.5]]]])   # [3, 1, 1, 2]
    fake = torch.tensor([[[[0.0, 1.0]]], [[[0.0, 0.0]]], [[[-0.5, 1.5]]]])
    eps = torch.rand(3, generator=torch.Generator().manual_seed(7)).tolist()
    expected = 0.0
    for e, r, f in zip(eps, real.flatten(1).tolist(), fake.flatten(1).tolist(), strict=True):
        xh = [e * a + (1 - e) * b for a, b in zip(r, f, strict=True)]
        norm = sum(v ** 4 for v in xh) ** 0.5                       # ||x_hat^2||
        expected += (norm - 1) ** 2 / 3
    got = gradient_penalty(Cubic(), real, fake, generator=torch.Generator().manual_seed(7))
    assert got.item() == pytest.approx(expected, rel=1e-5)


class MeanLogit(nn.Module):
    """Two-class classifier whose target log-odds is k * (mean intensity - c)."""

    class_names = ("clear", "opacity")

    def __init__(self, k: float, c: float):
        super().__init__()
        self.k, self.c = k, c
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        s = self.k * (x.mean(dim=(1, 2, 3)) - self.c) + 0 * self.dummy
        return torch.stack([-s / 2, s / 2], 1)                     # class 1 log-odds = s


def _constant_map(value: float) -> VAGANMap:
    M = VAGANMap(VAGANConfig(resolution=16, base_channels=4, depth=2, source_class="clear",
                             target_class="opacity", class_names=("clear", "opacity")))
    with torch.no_grad():
        M.out.bias.fill_(value)                                     # M(x) = value everywhere
    return M


def test_explainer_path_take_at_and_full_map():
    x = torch.full((2, 1, 16, 16), -0.5)
    x[1] = -0.2
    clf = MeanLogit(k=10.0, c=-0.12)                                # s(x) = 10 * (mean + 0.12) < 0 for both
    va = VAGAN(map_generator=_constant_map(0.8), classifier=clf, config=VAGANExplainConfig(frames=8))
    cf = va.explain(x, "opacity")
    a = torch.linspace(0, 1, 9)
    assert cf.path.shape == (9, 2, 1, 16, 16)
    assert torch.allclose(cf.path[:, 0, 0, 0, 0], -0.5 + 0.8 * a)
    # the first frame with mean >= -0.12: query 0 needs a >= 0.475 (frame 4), query 1 a >= 0.1 (frame 1)
    assert cf.info["frame_index"] == [4, 1] and cf.info["found"] == [True, True]
    assert torch.allclose(cf.difference, torch.full((2, 1, 16, 16), 0.8))   # the full map M(x)
    assert cf.info["target_is_map_target"] == [True, True] and cf.info["map_target"] == "opacity"
    full = VAGAN(map_generator=_constant_map(0.8), classifier=clf,
                 config=VAGANExplainConfig(frames=8, take_at=1 - 1e-6)).explain(x, "opacity")
    assert full.info["frame_index"] == [8, 8] and torch.allclose(full.counterfactual, (x + 0.8).clamp(-1, 1))
    back = va.explain(x, "clear")
    assert back.info["target_is_map_target"] == [False, False]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from medcf.classifiers import OracleClassifier, ResNetClassifier, ResNetConfig
    from medcf.data import SynthConfig, write_synthetic

    root = tmp_path_factory.mktemp("vagan")
    write_synthetic(SynthConfig(resolution=RES, task="opacity"), 40, root / "data", seed=0, progress=False)
    write_synthetic(SynthConfig(resolution=RES, task="opacity", positive_rate=0.0), 12, root / "oneclass",
                    seed=0, progress=False)
    for cls, name, seed, res in ((OracleClassifier, "oracle", 1, 16), (ResNetClassifier, "classifier", 0, 16),
                                 (ResNetClassifier, "classifier32", 2, RES)):
        cfg = ResNetConfig(in_channels=1, resolution=res, class_names=("clear", "opacity"), num_outputs=2,
                           head="softmax", widths=(4, 8), blocks=(1, 1))
        cls(cfg, seed=seed).save(root / name)
    return root


def test_training_selects_a_snapshot_by_the_validation_score(runs, tmp_path, capsys):
    from medcf.train.vagan import train_vagan

    res = train_vagan(runs / "data", tmp_path / "run", source="opacity", target="clear",
                      oracle=runs / "oracle", **TINY)
    sel = res.selection
    assert res.steps == 4 and sel["candidates"] == 2 and "held-out" in sel["rule"]
    assert [r["step"] for r in sel["scores"]] == [2, 4]
    for r in sel["scores"]:
        assert 0 <= r["oracle_validity"] <= 1 and r["l1"] >= 0
        assert r["score"] == pytest.approx(r["oracle_validity"] - r["l1"])
    best = max(sel["scores"], key=lambda r: (r["score"], -r["l1"], -r["step"]))
    assert sel["step"] == best["step"]
    # RUN/model holds the selected snapshot's weights
    picked = load_vagan_map(tmp_path / "run" / sel["snapshot"])
    model = load_vagan_map(tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(picked.state_dict().values(), model.state_dict().values(),
                                                  strict=True))
    assert model.config.source_class == "opacity" and model.config.target_class == "clear"
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    losses = [s["loss_D"] for s in stats if "loss_D" in s]
    assert losses and all(v == v for v in losses)                          # no NaN
    code, out, _ = run_cli(capsys, "info", tmp_path / "run")
    assert code == 0 and "selection" in out and "held-out" in out


def test_without_an_oracle_the_last_snapshot_is_kept(runs, tmp_path):
    from medcf.train.vagan import train_vagan

    res = train_vagan(runs / "data", tmp_path / "run", source="1", target="0", **TINY)
    assert res.selection["step"] == 4 and res.selection["score"] is None
    assert "no --oracle" in res.selection["rule"]


def test_critic_warmup_trains_the_critic_alone_then_the_map_at_its_own_rate(runs, tmp_path):
    from medcf.train.vagan import train_vagan

    # warm-up 3 rounds up to 4 (whole cycles of n_critic=2); then 3 map updates, snapshots every 2 and at the end
    res = train_vagan(runs / "data", tmp_path / "run", source="opacity", target="clear", oracle=runs / "oracle",
                      **dict(TINY, steps=3, critic_warmup=3, snapshot_every=2, lr=3e-4, map_lr=2e-5))
    assert res.steps == 4 + 3 * 2
    assert [r["step"] for r in res.selection["scores"]] == [8, 10]    # 4 + 2*2 map cycles, and the last step
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    by_step = {s["step"]: s for s in stats if "loss_D" in s}
    assert sorted(by_step) == list(range(1, 11))
    assert all("loss_M" not in by_step[k] for k in range(1, 6))       # critic only until the 6th engine step
    assert all("loss_M" in by_step[k] for k in range(6, 11))          # first map update at engine step 6
    assert {(by_step[k]["lr_D"], by_step[k]["lr_M"]) for k in by_step} == {(3e-4, 2e-5)}
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())["run_info"]
    assert run_info["critic_warmup"] == 4 and run_info["map_lr"] == 2e-5
    assert read_header(tmp_path / "run" / "model")["meta"]["steps"] == 3        # map updates, warm-up excluded


def test_resume_continues_exactly(runs, tmp_path):
    from medcf.train.vagan import train_vagan

    kw = dict(TINY, steps=3, critic_warmup=2, oracle=runs / "oracle")   # with a warm-up before the map steps
    full = train_vagan(runs / "data", tmp_path / "full", source="opacity", target="clear", **kw)
    train_vagan(runs / "data", tmp_path / "part", source="opacity", target="clear", **dict(kw, steps=1))
    part = train_vagan(runs / "data", tmp_path / "part", source="opacity", target="clear", resume=True, **kw)
    a, b = load_vagan_map(tmp_path / "full"), load_vagan_map(tmp_path / "part")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name
    assert full.selection["scores"] == part.selection["scores"]            # scores survive the resume


@pytest.mark.parametrize("args, words", [
    (("--source", "pneumonia", "--target", "clear"), "--source 'pneumonia' is not a class"),
    (("--source", "opacity", "--target", "7"), "--target '7' is not a class"),
    (("--source", "opacity", "--target", "opacity"), "both name class"),
])
def test_cli_bad_classes_are_one_line_errors(runs, tmp_path, capsys, args, words):
    code, _, err = run_cli(capsys, "train", "vagan", "--data", runs / "data", "--out", tmp_path / "run",
                           *args, "--no-progress")
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_cli_one_class_data_is_refused(runs, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "vagan", "--data", runs / "oneclass", "--out", tmp_path / "run",
                           "--source", "opacity", "--target", "clear", "--no-progress")
    assert code == 2 and "two classes" in err and len(err.strip().splitlines()) == 1, err


def test_cli_missing_oracle_names_the_oracle_flag(runs, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "vagan", "--data", runs / "data", "--out", tmp_path / "run",
                           "--source", "opacity", "--target", "clear", "--resolution", "16", "--steps", "1",
                           "--oracle", tmp_path / "no-such-oracle", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--oracle not found" in err and "--fid-oracle" not in err


def test_cli_train_then_explain(runs, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "vagan", "--data", runs / "data", "--out", tmp_path / "run",
                             "--source", "opacity", "--target", "clear", "--resolution", "16", "--steps", "1",
                             "--n-critic", "1", "--critic-warmup", "1", "--batch-size", "4", "--base-channels", "4",
                             "--depth", "2", "--oracle", runs / "oracle", "--no-progress")
    assert code == 0, err
    assert "selected snapshots/0000002" in out                       # 1 warm-up + 1 map-update step
    code, out, err = run_cli(capsys, "explain", "--method", "vagan", "--classifier", runs / "classifier",
                             "--generator", tmp_path / "run", "--images", runs / "data", "--limit", "2",
                             "--out", tmp_path / "out", "--no-progress")
    assert code == 0, err
    recs = [strict_json(p) for p in sorted((tmp_path / "out").glob("*.json"))]
    assert len(recs) == 2 and all(r["method"] == "vagan" and len(r["path_probs"]) == 9 for r in recs)
    for target, note in (("opacity", True), ("clear", False)):  # a target the map cannot reach is named
        code, out, err = run_cli(capsys, "explain", "--method", "vagan", "--classifier", runs / "classifier",
                                 "--generator", tmp_path / "run", "--images", runs / "data", "--limit", "2",
                                 "--target", target, "--set", "threshold=0.999999", "--out", tmp_path / target,
                                 "--no-progress")
        rows = [line for line in out.splitlines() if line.startswith("  ")]
        assert code == 0 and len(rows) == 2 and all("(not reached" in r for r in rows), out + err
        assert all(("the map only goes to 'clear'" in r) == note for r in rows), out
    code, out, err = run_cli(capsys, "evaluate", "--method", "vagan", "--classifier", runs / "classifier",
                             "--generator", tmp_path / "run", "--data", runs / "data", "--split", "train",
                             "--limit", "6", "--oracle", runs / "oracle", "--out", tmp_path / "eval",
                             "--fid", "none", "--no-lpips", "--no-progress")
    assert code == 0, err
    loc = strict_json(tmp_path / "eval" / "metrics.json")["summary"]["localization"]
    assert loc["region"] == "lesion mask" and "ncc" in loc          # the opacity task's NCC is scored
    code, _, err = run_cli(capsys, "explain", "--method", "vagan", "--classifier", runs / "classifier",
                           "--generator", runs / "oracle", "--images", runs / "data", "--limit", "1",
                           "--out", tmp_path / "out2", "--no-progress")
    assert code == 2 and "vagan-map" in err and len(err.strip().splitlines()) == 1, err


def test_benchmark_prepare_hook_trains_and_builds(runs, tmp_path):
    from medcf.counterfactual.vagan import build_vagan
    from medcf.train.gan_prepare import prepare_vagan

    profile = {"steps": 2, "n_critic": 1, "critic_warmup": 2, "batch_size": 4, "base_channels": 4, "depth": 2, "critic_channels": 4,
               "snapshots": 2, "explain": {"frames": 4}}
    kw = prepare_vagan(runs / "data", tmp_path / "m", classifier_dir=runs / "classifier32", task="opacity",
                       profile=profile, device="cpu", seed=0, progress=False)
    M = load_vagan_map(kw["generator_dir"])
    meta = read_header(kw["generator_dir"])["meta"]
    assert (M.config.source_class, M.config.target_class) == ("opacity", "clear")
    assert meta["selection"]["candidates"] == 2 and meta["selection"]["score"] is not None
    va = build_vagan(runs / "classifier32", **kw)
    assert va.config.frames == 4
