"""CycleGAN backbone, recipe and explainer: shapes, hand-computed losses, the image pool,
save/load, exact resume, repeated translation on an analytic toy, CLI errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from _cli import run_cli
from medcf.counterfactual.cyclegan import (
    CycleGANExplainer,
    CycleGANExplainerConfig,
    hidden_information,
)
from medcf.errors import MedcfError
from medcf.generators.cyclegan import (
    CycleGAN,
    CycleGANConfig,
    CycleOutputs,
    ImagePool,
    PatchDiscriminator,
    cycle_losses,
    discriminator_loss,
    lsgan_loss,
)

TINY = dict(resolution=32, width=4, blocks=1, disc_width=4, disc_layers=2)
TINY_RECIPE = dict(batch_size=4, width=4, blocks=1, disc_width=4, disc_layers=2, pool_size=3, progress=False,
                   log_every=1, sample_every=2, checkpoint_every=2)


def _synth(n=16, resolution=32, **kw):
    from medcf.data.synthetic import SynthConfig, SyntheticDataset

    return SyntheticDataset(SynthConfig(resolution=resolution, **kw), n=n, seed=0)


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("kw, word", [({"channels": 2}, "channels"), ({"resolution": 30}, "divisible"),
                                      ({"resolution": 16, "disc_layers": 3}, "too small"),
                                      ({"domain_b": 0}, "differ")])
def test_config_rejects_bad_values(kw, word):
    with pytest.raises(ValueError, match=word):
        CycleGANConfig(**{**TINY, **kw})


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_patch_map(channels):
    cfg = CycleGANConfig(**{**TINY, "channels": channels})
    model, d = CycleGAN(cfg, seed=0), PatchDiscriminator(cfg)
    x = torch.rand(2, channels, 32, 32) * 2 - 1
    y = model.translate(x, "b")
    assert y.shape == x.shape and y.abs().max() <= 1
    assert d(x).shape == (2, 1, 8, 8)  # two stride-2 layers, then stride 1
    with pytest.raises(MedcfError, match="expects"):
        model.translate(torch.zeros(1, channels, 16, 16), "a")


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = CycleGAN(CycleGANConfig(**TINY), seed=3), CycleGAN(CycleGANConfig(**TINY), seed=3)
    assert torch.equal(torch.rand(1), before)
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(a.g_ab.net[1].weight, a.g_ba.net[1].weight)  # two different generators


def test_save_load_round_trip(tmp_path):
    model = CycleGAN(CycleGANConfig(**TINY, class_names=("normal", "cardiomegaly")), seed=1).eval()
    model.save(tmp_path / "m")
    back = CycleGAN.load(tmp_path / "m")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(model.translate(x, "b"), back.translate(x, "b"))
    assert back.config.class_names == ("normal", "cardiomegaly")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["meta"]["domains"] == {
        "a": "normal", "b": "cardiomegaly"}


# ----------------------------------------------------------------------------- losses


def test_lsgan_loss_by_hand():
    pred = torch.tensor([0.5, 2.0])
    assert float(lsgan_loss(pred, True)) == pytest.approx((0.25 + 1.0) / 2)   # (p - 1)^2
    assert float(lsgan_loss(pred, False)) == pytest.approx((0.25 + 4.0) / 2)  # p^2


def test_cycle_losses_by_hand():
    a, b = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    out = CycleOutputs(fake_b=a, fake_a=b, rec_a=a + 0.1, rec_b=b - 0.2, idt_a=a + 0.3, idt_b=b.clone())

    def d(x):
        return torch.full((x.shape[0], 1, 2, 2), 0.5)   # LSGAN real loss (0.5 - 1)^2 = 0.25 each

    losses = cycle_losses(out, d, d, a, b, lambda_cycle=10.0, lambda_identity=0.5)
    assert float(losses.adv) == pytest.approx(0.5)
    assert float(losses.cycle) == pytest.approx(0.3)
    assert float(losses.identity) == pytest.approx(0.3)
    assert float(losses.total) == pytest.approx(0.5 + 10 * (0.3 + 0.5 * 0.3))
    no_idt = cycle_losses(CycleOutputs(a, b, a + 0.1, b - 0.2, None, None), d, d, a, b)
    assert float(no_idt.identity) == 0.0


def test_discriminator_loss_by_hand_and_fakes_are_detached():
    real = torch.ones(2, 1, 4, 4)
    fake = torch.full((2, 1, 4, 4), 2.0, requires_grad=True)
    loss = discriminator_loss(lambda x: x, real, fake)   # scores = the pixels: real 1 -> 0, fake 2 -> 4
    assert float(loss) == pytest.approx(0.5 * (0.0 + 4.0))
    assert not loss.requires_grad  # nothing reaches the generator's output


# ----------------------------------------------------------------------------- image pool


def _img(v: float) -> torch.Tensor:
    return torch.full((1, 1, 2, 2), float(v))


def test_image_pool_fills_then_swaps_half_the_time_and_conserves_images():
    pool, g = ImagePool(3), torch.Generator().manual_seed(0)
    first = pool.query(torch.cat([_img(1), _img(2)]), g)           # filling: returned as they are
    assert first[:, 0, 0, 0].tolist() == [1.0, 2.0]
    assert pool.query(_img(3), g)[0, 0, 0, 0] == 3.0                 # still filling (size 3)
    swapped = 0
    for v in range(4, 404):
        before = sorted(float(t[0, 0, 0]) for t in pool.images)
        out = float(pool.query(_img(v), g)[0, 0, 0, 0])
        after = sorted(float(t[0, 0, 0]) for t in pool.images)
        assert len(after) == 3
        # what comes out plus what stays is what was there plus the new image
        assert sorted(after + [out]) == sorted(before + [float(v)])
        swapped += out != v
    assert 0.4 < swapped / 400 < 0.6


def test_image_pool_size_zero_and_state_round_trip():
    x = torch.rand(3, 1, 2, 2)
    assert torch.equal(ImagePool(0).query(x), x)
    a, g = ImagePool(2), torch.Generator().manual_seed(5)
    for v in range(6):
        a.query(_img(v), g)
    b = ImagePool(7)
    b.load_state_dict(a.state_dict())
    state = g.get_state()
    g2 = torch.Generator()
    g2.set_state(state)
    for v in range(10, 20):
        assert torch.equal(a.query(_img(v), g), b.query(_img(v), g2))
    with pytest.raises(ValueError):
        ImagePool(-1)


# ----------------------------------------------------------------------------- recipe


def test_linear_decay_and_set_lr_by_hand():
    from medcf.train.schedules import linear_decay, set_lr

    assert [linear_decay(s, 10, 1.0) for s in (0, 4, 5, 7, 10, 12)] == [1.0, 1.0, 1.0, 0.6, 0.0, 0.0]
    w = nn.Parameter(torch.zeros(1))
    opts = [torch.optim.Adam([{"params": [w]}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 5.0}], lr=1.0),
            torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)]
    assert set_lr(opts, 0.25) == 0.25
    assert [g["lr"] for o in opts for g in o.param_groups] == [0.25, 0.25, 0.25]


def test_frozen_restores_flags_and_optimizer_step_uses_only_the_new_gradient():
    from medcf.train.recipe_common import frozen, optimizer_step

    d, g = nn.Linear(2, 1), nn.Linear(2, 1, bias=False)
    d.bias.requires_grad_(False)                                   # already frozen: stays so
    with pytest.raises(RuntimeError), frozen(d):
        assert not any(p.requires_grad for p in d.parameters())
        raise RuntimeError
    assert d.weight.requires_grad and not d.bias.requires_grad

    class Trainer:                                                 # what optimizer_step needs of the engine
        optimizers = {"g": torch.optim.SGD(g.parameters(), lr=0.1)}

        def backward(self, loss):
            loss.backward()

    w0 = g.weight.detach().clone()
    g.weight.grad = torch.full_like(w0, 100.0)                     # a stale gradient must be dropped
    x = torch.tensor([[1.0, -2.0]])
    with frozen(d):
        optimizer_step(Trainer(), "g", d(g(x).expand(1, 2)).sum())  # d(g(x)) = (w_d . [1, 1]) g(x) + b
    # d loss / d w_g = (w_d0 + w_d1) x ; SGD: w_g - 0.1 * grad; d took no gradient
    expected = w0 - 0.1 * d.weight.detach().sum() * x
    assert torch.allclose(g.weight.detach(), expected) and d.weight.grad is None


def test_recipe_trains_without_nan_writes_grids_and_resumes_exactly(tmp_path):
    from medcf.train.cyclegan import train_cyclegan

    ds = _synth()
    res = train_cyclegan(ds, tmp_path / "full", steps=4, **TINY_RECIPE)
    assert res.domains == ("normal", "cardiomegaly")
    rows = [json.loads(line) for line in (tmp_path / "full" / "stats.jsonl").read_text().splitlines()]
    for key in ("g_adv", "cycle", "identity", "d_a", "d_b"):
        values = [r[key] for r in rows if key in r]
        assert values and all(math.isfinite(v) for v in values), key
    assert (tmp_path / "full" / "samples" / "0000004.png").is_file()
    train_cyclegan(ds, tmp_path / "part", steps=2, **TINY_RECIPE)
    train_cyclegan(ds, tmp_path / "part", steps=4, resume=True, **TINY_RECIPE)
    a, b = CycleGAN.load(tmp_path / "full"), CycleGAN.load(tmp_path / "part")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


# ----------------------------------------------------------------------------- explainer


class _Shift(nn.Module):
    def __init__(self, delta: float):
        super().__init__()
        self.delta = delta

    def forward(self, x):
        return x + self.delta


class _MeanClassifier(nn.Module):
    """Binary softmax: logits (0, 4 * mean(x)), so the class-1 log-odds is 4 * mean(x)."""

    class_names = ("normal", "cardiomegaly")

    def forward(self, x):
        s = 4 * x.flatten(1).mean(1)
        return torch.stack([torch.zeros_like(s), s], 1)


def _toy_cyclegan(names=("normal", "cardiomegaly")) -> CycleGAN:
    model = CycleGAN(CycleGANConfig(**TINY, class_names=names))
    model.g_ab, model.g_ba = _Shift(0.25), _Shift(-0.25)   # A -> B brightens, B -> A darkens
    return model


def test_repeated_translation_stops_at_the_crossing():
    x = torch.full((2, 1, 32, 32), -0.3)
    x[1] = 0.3
    e = CycleGANExplainer(cyclegan=_toy_cyclegan(), classifier=_MeanClassifier(),
                          config=CycleGANExplainerConfig(max_steps=4))
    cf = e.explain(x, target=torch.tensor([1, 0]))
    # query 0: log-odds of class 1 along G_AB^k: 4 * (-0.3 + 0.25 k) = -1.2, -0.2, 0.8 -> k = 2
    # query 1: log-odds of class 0 along G_BA^k: -4 * (0.3 - 0.25 k) = -1.2, -0.2, 0.8 -> k = 2
    assert cf.info["translations"] == [2, 2] and cf.info["direction"] == ["A->B", "B->A"]
    assert cf.path.shape == (5, 2, 1, 32, 32) and torch.equal(cf.path[0], x)
    assert torch.allclose(cf.difference[0], torch.full((1, 32, 32), 0.5))
    assert torch.allclose(cf.difference[1], torch.full((1, 32, 32), -0.5))
    assert cf.flipped.all()
    strict = CycleGANExplainer(cyclegan=_toy_cyclegan(), classifier=_MeanClassifier(),
                               config=CycleGANExplainerConfig(max_steps=4, take_at=0.9))
    # take_at 0.9: log-odds >= 2.197 first at k = 4 (2.8)
    assert strict.explain(x[:1], target=1).info["translations"] == [4]
    short = CycleGANExplainer(cyclegan=_toy_cyclegan(), classifier=_MeanClassifier(),
                              config=CycleGANExplainerConfig(max_steps=1))
    missed = short.explain(x[:1], target=1)
    assert missed.info["found"] == [False] and not missed.flipped.any()


class _GrowAndSmudge(nn.Module):
    """A -> B: brightens a central 12 x 12 block by 1.0 (the 'organ') and nudges one corner
    pixel (the 'foreign object' redrawn imperfectly) by 0.3."""

    def forward(self, x):
        y = x.clone()
        y[..., 10:22, 10:22] += 1.0
        y[..., 1, 1] += 0.3
        return y


def test_masked_composition_keeps_the_organ_change_and_the_input_elsewhere():
    model = _toy_cyclegan()
    model.g_ab = _GrowAndSmudge()
    x = torch.full((1, 1, 32, 32), -0.2)
    plain = CycleGANExplainer(cyclegan=model, classifier=_MeanClassifier(),
                              config=CycleGANExplainerConfig(max_steps=2)).explain(x, target=1)
    assert plain.counterfactual[0, 0, 1, 1] > x[0, 0, 1, 1] + 0.2          # generated: the smudge is in
    ex = CycleGANExplainer(cyclegan=model, classifier=_MeanClassifier(),
                           config=CycleGANExplainerConfig(max_steps=2, compose="masked", mask_threshold=0.6,
                                                          mask_dilate=1, mask_smooth=2))
    cf = ex.explain(x, target=1)
    assert cf.info["compose"] == "masked"
    # frame k is x + k inside the (dilated) block: the block's smoothed change is the peak
    assert torch.allclose(cf.path[1][0, 0, 12:20, 12:20], torch.full((8, 8), 0.8))
    assert torch.allclose(cf.path[2][0, 0, 12:20, 12:20], torch.full((8, 8), 1.8))
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[9:23, 9:23] = False                                              # block + 1-pixel dilation
    for frame in cf.path:
        assert torch.equal(frame[0, 0][outside], x[0, 0][outside])          # the input, bit for bit
    assert cf.counterfactual[0, 0, 1, 1] == x[0, 0, 1, 1]                   # the smudge is dropped
    assert cf.flipped.all()


@pytest.mark.parametrize("kw, word", [({"compose": "residual"}, "compose"), ({"mask_threshold": 0.0}, "mask_threshold"),
                                      ({"mask_dilate": -1}, "mask_dilate"), ({"mask_smooth": 1.5}, "mask_smooth")])
def test_explainer_config_rejects_bad_mask_settings(kw, word):
    with pytest.raises(ValueError, match=word):
        CycleGANExplainerConfig(**kw)


def test_target_outside_the_domains_is_refused():
    e = CycleGANExplainer(cyclegan=_toy_cyclegan(("other", "x")), classifier=_MeanClassifier())
    with pytest.raises(MedcfError, match="not one of CycleGAN's domains"):
        e.explain(torch.zeros(1, 1, 32, 32), target=1)
    with pytest.raises(ValueError):
        CycleGANExplainerConfig(max_steps=0)


def test_builder_loads_the_pair_and_checks_setting_classifier_kind_then_shape(tmp_path):
    from medcf.classifiers import ResNetClassifier, ResNetConfig
    from medcf.counterfactual.cyclegan import build_cyclegan
    from medcf.errors import CheckpointError, ShapeError

    def clf(res):
        return ResNetClassifier(ResNetConfig(in_channels=1, resolution=res, class_names=("normal", "abnormal"),
                                             num_outputs=2, head="softmax", widths=(4, 8), blocks=(1, 1)), seed=0)

    clf(32).save(tmp_path / "clf" / "model")
    clf(16).save(tmp_path / "clf16" / "model")
    model = CycleGAN(CycleGANConfig(**TINY), seed=4)
    model.save(tmp_path / "cg" / "model")
    e = build_cyclegan(tmp_path / "clf", tmp_path / "cg", max_steps=2)
    assert e.config.max_steps == 2 and type(e.classifier).__name__ == "ResNetClassifier"
    assert all(torch.equal(p, q) for p, q in zip(e.cyclegan.state_dict().values(), model.state_dict().values(),
                                                   strict=True))
    # the setting is checked first, then the classifier's kind, the generator's kind, the image shape
    with pytest.raises(MedcfError, match=r"^max_steps: .*\(cyclegan\)$"):
        build_cyclegan(tmp_path / "cg", tmp_path / "clf", max_steps=0)
    with pytest.raises(CheckpointError, match="'cyclegan' checkpoint; the classifier to explain"):
        build_cyclegan(tmp_path / "cg", tmp_path / "clf")
    with pytest.raises(CheckpointError, match="cyclegan needs a 'cyclegan' checkpoint \\(medcf train cyclegan\\)"):
        build_cyclegan(tmp_path / "clf16", tmp_path / "clf")
    with pytest.raises(ShapeError, match="makes 32x32 images but the classifier .*clf16 expects 16x16"):
        build_cyclegan(tmp_path / "clf16", tmp_path / "cg")


def test_hidden_information_counts_classifier_flips_the_oracle_does_not_follow():
    rows = [{"query": 0, "reached": True, "oracle_reached": False},
            {"query": 1, "reached": True, "oracle_reached": True},
            {"query": 2, "reached": False, "oracle_reached": False},
            {"query": 3, "reached": True, "oracle_reached": False}]
    h = hidden_information(rows)
    assert h["count"] == 2 and h["queries"] == [0, 3]
    assert h["rate"] == pytest.approx(0.5) and h["rate_among_valid"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="oracle"):
        hidden_information([{"reached": True}])


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from medcf.data import write_synthetic
    from medcf.data.synthetic import SynthConfig

    root = tmp_path_factory.mktemp("cg")
    write_synthetic(SynthConfig(resolution=32), 20, root / "two", progress=False)
    write_synthetic(SynthConfig(resolution=32, positive_rate=0.0), 12, root / "one", progress=False)
    return root


@pytest.mark.parametrize("args, word", [
    (["--domain-a", "normal", "--domain-b", "effusion"], "--domain-b 'effusion' is not a class"),
    (["--domain-a", "normal", "--domain-b", "0"], "both name class 'normal'"),
])
def test_cli_bad_domains_are_one_line_errors(capsys, folders, tmp_path, args, word):
    code, _, err = run_cli(capsys, "train", "cyclegan", "--data", folders / "two", "--out", tmp_path / "r",
                           "--steps", "1", *args)
    assert code == 2 and word in err and len(err.strip().splitlines()) <= 2


@pytest.mark.parametrize("command", ["cyclegan", "icam"])
def test_cli_one_class_data_is_a_one_line_error(capsys, folders, tmp_path, command):
    code, _, err = run_cli(capsys, "train", command, "--data", folders / "one", "--out", tmp_path / "r",
                           "--steps", "1")
    assert code == 2 and "no training images of class 'cardiomegaly'" in err
    assert len(err.strip().splitlines()) <= 2


def test_cli_trains_and_explains(capsys, folders, tmp_path):
    from medcf.classifiers import ResNetClassifier, ResNetConfig

    code, out, err = run_cli(capsys, "train", "cyclegan", "--data", folders / "two", "--out", tmp_path / "cg",
                             "--steps", "2", "--batch-size", "2", "--width", "4", "--blocks", "1",
                             "--disc-width", "4", "--disc-layers", "2", "--no-progress")
    assert code == 0, err
    assert "normal <-> cardiomegaly" in out and (tmp_path / "cg" / "model" / "model.safetensors").is_file()
    clf = ResNetClassifier(ResNetConfig(in_channels=1, resolution=32, class_names=("normal", "cardiomegaly"),
                                        num_outputs=2, head="softmax", widths=(4, 8), blocks=(1, 1)), seed=0)
    clf.save(tmp_path / "clf" / "model")
    code, out, err = run_cli(capsys, "explain", "--method", "cyclegan", "--classifier", tmp_path / "clf",
                             "--generator", tmp_path / "cg", "--images", folders / "two", "--split", "test",
                             "--limit", "2", "--out", tmp_path / "ex", "--max-steps", "3", "--no-progress")
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "ex").glob("*.json"))
               if p.name not in ("summary.json", "run.json")]
    records = [r for r in records if "path_probs" in r]
    assert records and all(r["method"] == "cyclegan" and len(r["path_probs"]) == 4 for r in records)
