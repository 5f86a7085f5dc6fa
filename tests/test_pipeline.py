"""The end-to-end path: `medcf explain` / `medcf evaluate`, their files and errors, the demo.

Models here are tiny (32 px, a few channels). Untrained models are enough to check
the files and errors; one test trains a little and checks that explanations work.
"""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from _cli import run_cli, strict_json
from medcf.classifiers import (
    CTRRegressor,
    ForeignObjectDetector,
    OracleClassifier,
    ResNetClassifier,
    ResNetConfig,
)
from medcf.data import SynthConfig, write_synthetic
from medcf.generators.autoencoder import VAE, AutoencoderConfig

RES = 32





def _resnet(cls, names, head, seed):
    cfg = ResNetConfig(in_channels=1, resolution=RES, class_names=names,
                       num_outputs=1 if head == "sigmoid" else len(names), head=head,
                       widths=(4, 8), blocks=(1, 1))
    return cls(cfg, seed=seed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Untrained tiny checkpoints of every kind + a small synthetic folder + a few PNGs."""
    root = tmp_path_factory.mktemp("tiny")
    clf = _resnet(ResNetClassifier, ("normal", "cardiomegaly"), "softmax", 0)
    with torch.no_grad():  # a visible, image-dependent decision: mean intensity sets the logit
        clf.fc.weight.normal_(0, 2.0, generator=torch.Generator().manual_seed(0))
    clf.save(root / "classifier" / "model")
    _resnet(OracleClassifier, ("normal", "cardiomegaly"), "softmax", 1).save(root / "oracle")
    _resnet(ForeignObjectDetector, ("pacemaker", "electrodes", "marker"), "multilabel", 2).save(root / "fo")
    _resnet(CTRRegressor, ("ctr",), "regression", 3).save(root / "ctr")
    VAE(AutoencoderConfig(resolution=RES, channels=1, widths=(4, 8)), seed=0).save(root / "vae" / "model")
    data = root / "data"
    write_synthetic(SynthConfig(resolution=RES), 40, data, seed=0, progress=False)
    imgs = root / "pngs"
    imgs.mkdir()
    for i in (9, 19, 29):
        Image.open(data / "images" / f"{i:06d}.png").resize((48, 48)).save(imgs / f"case{i}.png")
    rgb = root / "rgb.png"
    Image.fromarray((np.random.default_rng(0).random((RES, RES, 3)) * 255).astype(np.uint8)).save(rgb)
    return root


def test_explain_writes_gif_strip_map_json_per_image(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "explain", "--classifier", tiny / "classifier", "--generator",
                                tiny / "vae", "--images", tiny / "pngs", "--out", out,
                                "--max-steps", "5", "--max-change", "none", "--no-progress")
    assert code == 0, err
    for stem in ("case9", "case19", "case29"):
        gif = out / f"{stem}.gif"
        assert gif.is_file() and gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
        with Image.open(gif) as im:  # the CLI's GIF: a 32 px image upscaled 4x, not 256 px
            assert im.size[0] == 128
        assert gif.stat().st_size < 100_000
        with Image.open(out / f"{stem}_strip.png") as im:
            assert im.format == "PNG"
        with Image.open(out / f"{stem}_map.png") as im:
            assert im.format == "PNG" and im.size[0] > 3 * im.size[1]  # medcf.viz.figure: panels + colour bar
        rec = strict_json(out / f"{stem}.json")
        assert rec["settings"]["max_change"] is None and rec["settings"]["max_steps"] == 5
        for key in ("prob_original", "prob_counterfactual", "path_probs", "flipped", "found",
                    "lambda", "seconds"):
            assert key in rec
        # the JSON agrees with itself: flipped is the decision rule on the stored probability
        assert rec["flipped"] == (rec["prob_counterfactual"] >= rec["threshold"])
        # 'opposite' target: the classifier's own decision is the other class, so p(target) < 0.5
        assert rec["prob_original"] < 0.5
        assert 1 <= len(rec["path_probs"]) <= 6  # reconstruction + at most max_steps frames
    assert "3 image(s)" in stdout
    # a non-empty --out is refused, --overwrite allows it
    code, _, err = run_cli(capsys, "explain", "--classifier", tiny / "classifier", "--generator",
                           tiny / "vae", "--images", tiny / "pngs" / "case9.png", "--out", out,
                           "--no-progress")
    assert code == 2 and "--overwrite" in err and err.strip().count("\n") == 0


def test_explain_residual_frames_start_at_the_input(tiny, tmp_path, capsys):
    out = tmp_path / "residual"
    code, _, err = run_cli(capsys, "explain", "--classifier", tiny / "classifier", "--generator",
                           tiny / "vae", "--images", tiny / "pngs" / "case9.png", "--out", out,
                           "--compose", "residual", "--max-steps", "5", "--no-progress")
    assert code == 0, err
    rec = strict_json(out / "case9.json")
    assert rec["settings"]["compose"] == "residual"
    # frame 0 is x itself: the classifier's probability on it is the input's
    assert rec["path_probs"][0] == pytest.approx(rec["prob_original"], abs=1e-5)


def test_evaluate_writes_metrics_csv_report(tiny, tmp_path, capsys):
    out = tmp_path / "eval"
    code, stdout, err = run_cli(
        capsys, "evaluate", "--classifier", tiny / "classifier", "--generator", tiny / "vae",
        "--data", tiny / "data", "--split", "test", "--oracle", tiny / "oracle", "--fo-detector",
        tiny / "fo", "--ctr-regressor", tiny / "ctr", "--max-steps", "5", "--no-lpips",
        "--out", out, "--no-progress")
    assert code == 0, err
    metrics = strict_json(out / "metrics.json")
    summary, settings = metrics["summary"], metrics["settings"]
    assert summary["n"] == 4  # indices 9, 19, 29, 39 form the test split of 40 samples
    for key in ("validity", "oracle_validity", "fop", "clinical", "localization", "seconds_per_explanation"):
        assert key in summary
    for key in ("classifier", "generator", "oracle", "fo_detector", "ctr_regressor", "fid_extractor",
                "versions", "target", "split", "explainer_settings"):
        assert key in settings
    assert settings["versions"]["torch"] == torch.__version__
    rows = list(csv.DictReader((out / "queries.csv").open()))
    assert [int(r["index"]) for r in rows] == [9, 19, 29, 39]
    assert {"reached", "prob_original", "ctr_original", "ctr_counterfactual", "auroc"} <= set(rows[0])
    # validity in the summary is the mean of the per-query 'reached' column
    assert math.isclose(summary["validity"], np.mean([r["reached"] == "True" for r in rows]))
    report = (out / "report.md").read_text()
    assert "| validity |" in report and "examples.png" in report and "ctr_hist.png" in report
    for line in report.splitlines():  # a well-formed 3-column table: 4 unescaped pipes per row
        if line.startswith("|"):
            assert len(re.findall(r"(?<!\\)\|", line)) == 4, line
    assert (out / "examples.png").is_file() and (out / "ctr_hist.png").is_file()


@pytest.mark.parametrize("case", ["missing", "wrong_kind", "channels", "generator_kind"])
def test_errors_are_one_line_exit_2(tiny, tmp_path, capsys, case):
    args = {"classifier": tiny / "classifier", "generator": tiny / "vae", "images": tiny / "pngs"}
    expect = ""
    if case == "missing":
        args["classifier"] = tmp_path / "nope"
        expect = "nope"
    elif case == "wrong_kind":
        args["classifier"] = tiny / "vae"
        expect = "'vae'"
    elif case == "generator_kind":
        args["generator"] = tiny / "oracle"
        expect = "'oracle'"
    else:
        args["images"] = tiny / "rgb.png"
        expect = "channel"
    code, _, err = run_cli(capsys, "explain", "--classifier", args["classifier"], "--generator",
                           args["generator"], "--images", args["images"], "--out", tmp_path / "o",
                           "--no-progress")
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert expect in err


def test_small_end_to_end_run_flips_decisions(tmp_path):
    """Tiny training, then Latent Shift without a pixel budget toward the opposite class.

    Independent reason for the bar: with target 'opposite' every input starts with
    p(target) < 0.5, so a do-nothing explainer has validity exactly 0 (chance here is 0);
    following the gradient of the target log-odds through the decoder must raise it for
    nearly every query.
    """
    from medcf.data import open_dataset
    from medcf.explain_runner import build_latent_shift, evaluate_explainer
    from medcf.train.autoencoders import train_autoencoder
    from medcf.train.classifiers import train_classifier

    data = tmp_path / "data"
    write_synthetic(SynthConfig(resolution=RES), 200, data, seed=1, progress=False)
    train_classifier(data, tmp_path / "clf", steps=40, batch_size=32, widths=(8, 16), blocks=(1,),
                     val_every=0, progress=False)
    train_autoencoder(data, tmp_path / "vae", kind="vae", steps=40, batch_size=16, widths=(8, 16),
                      val_every=0, progress=False)
    ls = build_latent_shift(tmp_path / "clf", tmp_path / "vae", iterative=True, max_change=float("inf"),
                            step_size=0.5, max_steps=60)
    test = open_dataset(data, split="test")
    summary, rows, examples = evaluate_explainer(ls, test, fid=None, progress=False)
    assert summary["n"] == 20
    assert summary["validity"] >= 0.8
    # and the target probability rose for (nearly) every query
    rose = np.mean([r["prob_counterfactual"] > r["prob_original"] for r in rows])
    assert rose >= 0.9
    assert len(examples) == 8


def test_demo_quick(tmp_path, capsys):
    from medcf import demo

    out = tmp_path / "demo"
    code, stdout, err = run_cli(capsys, "demo", "--quick", "--out", out, "--no-progress")
    assert code == 0, err
    result = strict_json(out / "demo.json")
    assert (out / "evaluation" / "metrics.json").is_file()
    assert (out / "evaluation" / "report.md").is_file()
    gifs = sorted((out / "explain").glob("*.gif"))
    assert len(gifs) == result["n_explained"] > 0
    for role in ("classifier", "oracle", "fo-detector", "ctr-regressor"):
        assert (out / role / "model" / "config.json").is_file()
    # the explain and evaluate stages are the commands' own: same settings, recorded sources
    settings = strict_json(out / "evaluation" / "metrics.json")["settings"]
    assert settings["explainer_settings"]["take_at"] == demo.QUICK.take_at and settings["demo"] is True
    rec = strict_json(gifs[0].with_suffix(".json"))
    assert rec["source"] and rec["settings"]["iterative"] is True
    assert "[5/5] evaluation" in stdout
    # `python -m medcf.demo` is the same run: it refuses the non-empty folder without --overwrite
    with pytest.raises(SystemExit) as e:
        demo.main(["--quick", "--out", str(out), "--no-progress"])
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_list_options_prints_the_config_fields_without_other_flags(capsys):
    from dataclasses import fields

    from medcf.counterfactual.latent_shift import LatentShiftConfig

    for order in (("--method", "latent-shift", "--list-options"), ("--list-options", "--method", "latent-shift")):
        code, out, err = run_cli(capsys, "explain", *order)
        assert code == 0, err
        for f in fields(LatentShiftConfig):  # every field of the dataclass is listed, typed
            assert re.search(rf"^\s+{f.name}\s", out, re.M), f.name
        assert "take_at           float | None  (default" in out or re.search(r"take_at\s+float \| None", out)
    code, out, err = run_cli(capsys, "evaluate", "--method", "latent-probe", "--list-options")
    assert code == 0 and "max_lambda" in out and "encoder" in out and "probe_dir" in out


def test_set_options_are_typed_from_the_config_and_errors_name_the_flag(tiny, tmp_path, capsys):
    base = ("explain", "--classifier", tiny / "classifier", "--generator", tiny / "vae", "--images",
            tiny / "pngs" / "case9.png", "--no-progress")
    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "a", "--set", "take_at=0.6", "--set",
                           "compose=residual", "--set", "max_steps=3", "--set", "max_change=none",
                           "--set", "iterative=yes")
    assert code == 0, err
    s = strict_json(tmp_path / "a" / "case9.json")["settings"]
    assert (s["take_at"], s["compose"], s["max_steps"], s["max_change"], s["iterative"]) == (
        0.6, "residual", 3, None, True)
    cases = {("--set", "bogus=1"): ("--set", "bogus"),
             ("--set", "max_steps=abc"): ("--set", "max_steps", "int"),
             ("--set", "take_at=0.3"): ("--set take_at", "take_at"),
             ("--take-at", "0.3"): ("--take-at",),
             ("--take-at", "0.6", "--set", "take_at=0.7"): ("--set take_at", "--take-at"),
             ("--method", "nope"): ("--method", "nope"),
             ("--set", "take_at"): ("--set", "FIELD=VALUE")}
    for i, (extra, expect) in enumerate(cases.items()):
        code, _, err = run_cli(capsys, *base, "--out", tmp_path / f"e{i}", *extra)
        assert code == 2, (extra, err)
        assert err.strip().count("\n") == 0 and "Traceback" not in err, err
        for e in expect:
            assert e in err, (extra, err)
