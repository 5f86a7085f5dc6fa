"""medcf.classifiers: the ResNet in four kinds, wrapping user models, training recipes, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from _cli import run_cli
from medcf.classifiers import (
    CLASSIFIERS,
    Classifier,
    CTRRegressor,
    ForeignObjectDetector,
    OracleClassifier,
    ResNetClassifier,
    ResNetConfig,
    load_classifier,
)
from medcf.errors import CheckpointError, MedcfError, ShapeError

TINY = dict(widths=(4, 8), blocks=(1, 1))


def tiny_config(kind: str = "classifier", **kw) -> ResNetConfig:
    """A small config of each kind (the head each kind needs)."""
    base = dict(in_channels=1, resolution=32, **TINY)
    if kind == "fo-detector":
        base.update(class_names=("pacemaker", "electrodes", "marker"), num_outputs=3, head="multilabel")
    elif kind == "ctr-regressor":
        base.update(class_names=("ctr",), num_outputs=1, head="regression")
    elif kind == "cpr-scorer":
        base.update(class_names=("sharp", "blunted"), num_outputs=1, head="sigmoid")
    base.update(kw)
    return ResNetConfig(**base)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [32, 64])
def test_output_and_feature_shapes(channels, resolution):
    model = ResNetClassifier(tiny_config(in_channels=channels, resolution=resolution)).eval()
    x = torch.rand(3, channels, resolution, resolution) * 2 - 1
    assert model(x).shape == (3, 2)
    assert model.features(x).shape == (3, 8)  # D = last stage width
    assert model.class_names == ("normal", "cardiomegaly")


def test_large_input_with_stem_stride():
    cfg = ResNetConfig(in_channels=3, resolution=256, widths=(4, 8, 8), blocks=(1, 1, 1), stem_stride=4)
    out = ResNetClassifier(cfg).eval()(torch.zeros(1, 3, 256, 256))
    assert out.shape == (1, 2)


def test_single_sigmoid_logit_head():
    cfg = tiny_config(num_outputs=1, head="sigmoid")
    model = ResNetClassifier(cfg).eval()
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    logit = model(x)
    assert logit.shape == (5, 1)
    probs = model.probabilities(x)
    assert probs.shape == (5, 2)
    # column 1 is sigmoid(logit) and rows sum to one
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(logit[:, 0]))
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    assert torch.equal(model.predict(x), (logit[:, 0] > 0).long())


def test_wrong_input_is_shape_error():
    model = ResNetClassifier(tiny_config()).eval()
    with pytest.raises(ShapeError, match="1 channel"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ShapeError, match="32x32"):
        model(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ShapeError, match=r"\[B, C, H, W\]"):
        model(torch.zeros(1, 32, 32))


@pytest.mark.parametrize("bad", [
    dict(in_channels=2),
    dict(widths=(4, 8), blocks=(1,)),
    dict(num_outputs=3),                              # 3 outputs but 2 class names
    dict(head="sigmoid"),                             # sigmoid needs exactly one output
    dict(resolution=34, widths=(4, 8, 8), blocks=(1, 1, 1)),  # 34 not divisible by 4
])
def test_invalid_config_is_rejected(bad):
    base = dict(in_channels=1, resolution=32, **TINY)
    base.update(bad)
    with pytest.raises(ValueError):
        ResNetConfig(**base)


def test_kind_rejects_foreign_head():
    with pytest.raises(ValueError, match="head"):
        ForeignObjectDetector(tiny_config())  # softmax head is not a multi-label detector
    with pytest.raises(ValueError, match="head"):
        CTRRegressor(tiny_config("fo-detector"))


# ----------------------------------------------------------------------------- randomness, gradients


def test_seeded_determinism_and_no_global_rng():
    cfg = tiny_config()
    state = torch.random.get_rng_state()
    a, b, c = ResNetClassifier(cfg, seed=3), ResNetClassifier(cfg, seed=3), ResNetClassifier(cfg, seed=4)
    assert torch.equal(state, torch.random.get_rng_state()), "constructor touched global RNG"
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["stem.0.weight"], sc["stem.0.weight"])
    g = torch.Generator().manual_seed(3)
    d = ResNetClassifier(cfg, generator=g)
    assert torch.equal(d.state_dict()["fc.weight"], sa["fc.weight"])


def test_initial_weights_follow_kaiming_scale():
    # Kaiming-normal (fan_out): std = sqrt(2 / (out * k * k)); a wide conv makes the estimate tight.
    cfg = ResNetConfig(in_channels=1, resolution=32, widths=(64,), blocks=(1,))
    w = ResNetClassifier(cfg, seed=0).stages[0][0].conv1.weight
    expected = (2.0 / (64 * 9)) ** 0.5
    assert abs(w.std().item() - expected) / expected < 0.05
    assert abs(w.mean().item()) < 0.1 * expected


def test_finite_gradients_and_one_step():
    model = ResNetClassifier(tiny_config(), seed=0).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 32, 32, generator=gen) * 2 - 1
    y = torch.randint(0, 2, (8,), generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    opt.step()
    after = model.state_dict()
    assert all(torch.isfinite(v.float()).all() for v in after.values())
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert torch.isfinite(model.eval()(x)).all()


def test_input_gradient_flows():
    # explainers differentiate the classifier w.r.t. its input
    model = ResNetClassifier(tiny_config(), seed=0).eval()
    x = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_()
    model(x)[:, 1].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_save_load_round_trip_each_kind(kind, tmp_path):
    cls = CLASSIFIERS[kind]
    assert cls.kind == kind
    model = cls(tiny_config(kind), seed=1)
    # make BN running stats non-trivial so that buffers must round-trip too
    model.train()(torch.rand(6, 1, 32, 32) * 2 - 1)
    model.eval()
    path = model.save(tmp_path / "run" / "model", meta={"note": "x"})
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    for loaded in (cls.load(tmp_path / "run"), load_classifier(path), load_classifier(path, kind=kind)):
        assert type(loaded) is cls and not loaded.training
        assert loaded.class_names == model.class_names and loaded.head == model.head
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded.features(x), model.features(x))
    header = json.loads((path / "config.json").read_text())
    assert header["kind"] == kind and header["meta"]["note"] == "x"
    assert header["meta"]["channels"] == 1 and header["meta"]["head"] == model.head


def test_wrong_kind_loading_is_one_line_error(tmp_path):
    path = OracleClassifier(tiny_config()).save(tmp_path / "oracle")
    with pytest.raises(CheckpointError, match="'oracle' checkpoint, expected 'classifier'") as e:
        ResNetClassifier.load(path)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="expected 'fo-detector'"):
        load_classifier(path, kind="fo-detector")
    with pytest.raises(CheckpointError, match="not found"):
        load_classifier(tmp_path / "nothing")


def test_non_classifier_checkpoint_is_refused(tmp_path):
    path = tmp_path / "vae"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"format": "medcf", "kind": "vae", "config": {}}))
    with pytest.raises(CheckpointError, match="'vae' checkpoint, not a classifier"):
        load_classifier(path)


def test_ctr_regressor_and_detector_outputs():
    reg = CTRRegressor(tiny_config("ctr-regressor")).eval()
    x = torch.zeros(2, 1, 32, 32)
    assert reg.predict_ctr(x).shape == (2,)
    with pytest.raises(TypeError, match="regression"):
        reg.probabilities(x)
    det = ForeignObjectDetector(tiny_config("fo-detector")).eval()
    p = det.probabilities(x)
    assert p.shape == (2, 3) and ((p > 0) & (p < 1)).all()
    assert det.predict(x).dtype == torch.bool


# ----------------------------------------------------------------------------- wrap


class _Mean(nn.Module):
    """Logit = +/- mean intensity: class 1 for bright images (a known answer)."""

    def __init__(self, outputs: int = 2):
        super().__init__()
        self.outputs = outputs

    def forward(self, x):  # [B, C, H, W] -> [B, outputs]
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-m, m], 1) if self.outputs == 2 else m[:, None]


def test_wrap_softmax_and_preprocess(tmp_path):
    seen = {}

    def prep(x):  # medcf [-1, 1] -> [0, 1], as the user's model expects
        seen["min"] = x.min().item()
        return (x + 1) / 2

    clf = Classifier.wrap(_Mean(), class_names=("dark", "bright"), preprocess=prep)
    x = torch.full((2, 1, 8, 8), -0.5)  # in [0, 1] this is 0.25
    logits = clf(x)
    torch.testing.assert_close(logits, torch.tensor([[-0.25, 0.25]] * 2))
    assert seen["min"] == -0.5
    assert clf.head == "softmax" and clf.class_names == ("dark", "bright")
    # softmax of (-m, m) gives class 1 probability sigmoid(2m)
    torch.testing.assert_close(clf.probabilities(x)[:, 1], torch.sigmoid(torch.tensor([0.5, 0.5])))
    with pytest.raises(CheckpointError, match="cannot be saved") as e:
        clf.save(tmp_path / "wrapped")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "wrapped").exists()
    with pytest.raises(NotImplementedError):
        clf.features(x)


def test_wrap_single_logit_infers_sigmoid():
    clf = Classifier.wrap(_Mean(outputs=1), class_names=("dark", "bright"))
    x = torch.full((3, 1, 4, 4), 0.4)
    assert clf(x).shape == (3, 1)
    assert clf.head == "sigmoid"
    torch.testing.assert_close(clf.probabilities(x)[:, 1], torch.sigmoid(torch.full((3,), 0.4)))
    assert clf.predict(x).tolist() == [1, 1, 1]


def test_wrap_refuses_mismatched_outputs_and_non_modules():
    clf = Classifier.wrap(_Mean(), class_names=("a", "b", "c"))
    with pytest.raises(ShapeError, match="returned 2 outputs, expected 3"):
        clf(torch.zeros(1, 1, 4, 4))
    with pytest.raises(TypeError, match="nn.Module"):
        Classifier.wrap(lambda x: x, class_names=("a", "b"))


def test_wrapped_model_gradients_reach_input():
    clf = Classifier.wrap(_Mean(), class_names=("dark", "bright"), preprocess=lambda x: (x + 1) / 2)
    x = torch.zeros(1, 1, 4, 4, requires_grad=True)
    clf(x)[0, 1].backward()
    # d/dx of mean((x+1)/2) = 1 / (2 * 16) per pixel
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 32))


def test_errors_are_medcf_errors():
    assert issubclass(CheckpointError, MedcfError) and issubclass(ShapeError, MedcfError)


# ----------------------------------------------------------------------------- CLI



def test_cli_missing_data_dir_is_one_line_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "classifier", "--data", str(tmp_path / "no_such_data"),
                           "--out", str(tmp_path / "run"))
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "no_such_data" in err
    assert not (tmp_path / "run").exists()


def test_cli_help_has_example(capsys):
    for role in ("classifier", "oracle", "fo-detector", "ctr-regressor"):
        code, out, _ = run_cli(capsys, "train", role, "--help")
        assert code == 0
        assert "Example" in out and f"medcf train {role}" in out and "--data" in out


def test_cli_is_registered_for_the_console_script():
    out = subprocess.run([sys.executable, "-m", "medcf", "train", "--help"], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0
    for role in ("classifier", "oracle", "fo-detector", "ctr-regressor"):
        assert role in out.stdout


# ----------------------------------------------------------------------------- training recipe


class _BrightDark(torch.utils.data.Dataset):
    """Easy hand-built data: label 1 images are brighter (+0.4) than label 0 (-0.4), plus noise."""

    class_names = ("dark", "bright")
    channels, resolution = 1, 32

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.images = (self.labels.float() * 0.8 - 0.4).view(n, 1, 1, 1) + 0.3 * torch.randn(
            n, 1, 32, 32, generator=g)
        self.images = self.images.clamp(-1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "index": torch.tensor(i)}


def test_recipe_beats_chance_on_easy_data(tmp_path):
    from medcf.train.classifiers import train_classifier

    res = train_classifier(_BrightDark(256, 0), tmp_path / "run", role="classifier", steps=60,
                           batch_size=32, widths=(4, 8), blocks=(1, 1), test_data=_BrightDark(128, 1),
                           val_data=_BrightDark(32, 2), val_every=30, progress=False, log_every=10)
    assert res.model_dir == tmp_path / "run" / "model"
    assert res.test["n"] == 128 and res.test["accuracy"] >= 0.9  # chance is 0.5
    header = json.loads((res.model_dir / "config.json").read_text())
    assert header["kind"] == "classifier" and header["meta"]["test"]["accuracy"] == res.test["accuracy"]
    assert header["meta"]["steps"] == 60
    model = load_classifier(tmp_path / "run", kind="classifier")
    assert model.class_names == ("dark", "bright")
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert any("val_accuracy" in s for s in stats)


def test_recipe_detector_and_regressor_heads(tmp_path):
    from medcf.data.synthetic import FO_NAMES, SynthConfig, SyntheticDataset
    from medcf.train.classifiers import train_classifier

    cfg = SynthConfig(resolution=32)
    train, test = SyntheticDataset(cfg, 32, seed=0), SyntheticDataset(cfg, 16, seed=0, offset=32)
    common = dict(steps=2, batch_size=8, widths=(4, 8), blocks=(1, 1), test_data=test,
                  progress=False, val_every=0)
    det = train_classifier(train, tmp_path / "fo", role="fo-detector", **common)
    model = load_classifier(det.model_dir, kind="fo-detector")
    assert model.head == "multilabel" and model.class_names == FO_NAMES
    assert set(det.test["f1"]) == set(FO_NAMES) and 0 <= det.test["macro_f1"] <= 1
    reg = train_classifier(train, tmp_path / "ctr", role="ctr-regressor", **common)
    model = load_classifier(reg.model_dir, kind="ctr-regressor")
    assert model.head == "regression" and model.class_names == ("ctr",)
    ctr = torch.stack([test[i]["ctr"] for i in range(16)])
    pred = model.predict_ctr(torch.stack([test[i]["image"] for i in range(16)]))
    torch.testing.assert_close(torch.tensor(reg.test["mae"]), (pred - ctr).abs().mean(),
                               rtol=1e-5, atol=1e-6)


def test_recipe_refuses_missing_target_and_bad_role(tmp_path):
    from medcf.errors import DataError
    from medcf.train.classifiers import train_classifier

    with pytest.raises(DataError, match="no 'ctr'"):
        train_classifier(_BrightDark(8, 0), tmp_path / "r", role="ctr-regressor", steps=1)
    with pytest.raises(ValueError, match="role"):
        train_classifier(_BrightDark(8, 0), tmp_path / "r", role="segmenter", steps=1)
    with pytest.raises(DataError, match="not found"):
        train_classifier(tmp_path / "missing", tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_augment_shifts_without_flipping():
    from medcf.train.classifiers import augment

    x = -torch.ones(16, 1, 16, 16)
    x[:, :, 6:10, 2:4] = 1.0  # a bright bar on the left side
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, g, max_shift=0, noise=0.0), x)
    y = augment(x, g, max_shift=2, noise=0.0)
    cols = torch.arange(16).float()
    for img in y:
        bright = img[0] > 0
        assert int(bright.sum()) == 8  # the bar is moved whole, never resampled or mirrored
        centre = (bright.float().sum(0) * cols).sum() / 8
        assert abs(centre.item() - 2.5) <= 2.0  # stays on the left, within the shift
    assert not torch.equal(y, x.expand_as(y))


def test_lr_schedule_closed_form():
    from medcf.train.schedules import warmup_cosine

    def lr_at(step, total, base, warmup):  # the classifier recipe's schedule
        return warmup_cosine(step, total, base, warmup, floor=0.02)

    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)  # warm-up: (step+1)/warmup
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at(55, 100, 1.0, 10) == pytest.approx(0.02 + 0.98 * 0.5)  # half-way: mean of ends
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.02)


class _Fixed(Classifier):
    """Returns preset outputs for the samples (by index) to check the test figures by hand."""

    def __init__(self, outputs, head, names, kind):
        super().__init__()
        self.outputs, self.head, self.class_names, self.kind = outputs, head, names, kind

    def forward(self, x):
        return self.outputs[: x.shape[0]]


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def test_evaluate_figures_by_hand():
    from medcf.train.classifiers import evaluate

    img = torch.zeros(1, 4, 4)
    flags = [[1, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 1]]
    rows = [{"image": img, "label": torch.tensor(i % 2), "index": torch.tensor(i),
             "fo_flags": torch.tensor(f, dtype=torch.float32), "ctr": torch.tensor(0.4 + 0.1 * i)}
            for i, f in enumerate(flags)]
    # detector says: pacemaker on 0,1,3 ; electrodes on 1 ; marker never
    out = torch.tensor([[5., -5, -5], [5, 5, -5], [-5, -5, -5], [5, -5, -5]])
    figs = evaluate(_Fixed(out, "multilabel", ("pacemaker", "electrodes", "marker"), "fo-detector"),
                    _Rows(rows))
    # pacemaker tp=2 fp=1 fn=0 -> 4/5; electrodes tp=1 fn=1 -> 2/3; marker tp=0 fn=2 -> 0
    assert figs["f1"]["pacemaker"] == pytest.approx(0.8)
    assert figs["f1"]["electrodes"] == pytest.approx(2 / 3)
    assert figs["f1"]["marker"] == 0.0
    assert figs["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 3)
    assert figs["exact_match"] == 0.5  # samples 1 and 2 are right on all three objects
    # regression: truth 0.4, 0.5, 0.6, 0.7; predictions 0.45, 0.5, 0.55, 0.9
    pred = torch.tensor([[0.45], [0.5], [0.55], [0.9]])
    figs = evaluate(_Fixed(pred, "regression", ("ctr",), "ctr-regressor"), _Rows(rows))
    assert figs["mae"] == pytest.approx((0.05 + 0 + 0.05 + 0.2) / 4, abs=1e-6)
    # labels 0,1,0,1 vs (pred > 0.5) = 0,0,1,1
    assert figs["threshold_accuracy"] == 0.5
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 2.0]])
    figs = evaluate(_Fixed(logits, "softmax", ("a", "b"), "classifier"), _Rows(rows))
    assert figs["accuracy"] == 0.75
    # scores of class 1: s0 < s1 = s2 < s3; positives {1, 3}, negatives {0, 2}:
    # pairs (1>0) (1=2: 1/2) (3>0) (3>2) -> AUROC = 3.5 / 4
    assert figs["auroc"] == pytest.approx(3.5 / 4)
