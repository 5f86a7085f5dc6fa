"""`medcf explain/evaluate --method latent-probe` end to end, on tiny untrained models (32 px, 1 channel).

The models are untrained, so the checks are about plumbing and about numbers that can be
recomputed independently from the saved parts: the first frame of the path is the
classifier on G(E(x)); the counterfactual is the classifier on G(E(x) + λ·α) with α the
saved unit direction and λ the JSON's lambda; the walk budget is max_steps·step_size.
"""

from __future__ import annotations

import csv
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from _cli import run_cli, strict_json
from medcf.classifiers import ResNetClassifier, ResNetConfig
from medcf.data import SynthConfig, write_synthetic
from medcf.encoders.stylegan_encoder import StyleGANEncoder
from medcf.explain_runner import explainer_input_shape
from medcf.generators.autoencoder import VAE, AutoencoderConfig
from medcf.generators.stylegan2 import Generator, GeneratorConfig
from medcf.generators.stylegan2.config import MappingConfig, SynthesisConfig

RES = 32
FIT = "64"  # fit samples: plenty for a 16-dim probe on tiny models, and fast




def read_png(path) -> torch.Tensor:
    """[1, 1, H, W] in [-1, 1], the on-disk convention pixel = round((x+1)/2*255) inverted."""
    a = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    return torch.from_numpy(a / 255.0 * 2.0 - 1.0)[None, None]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny StyleGAN2 generator, its encoder, a classifier whose decisions split G's samples, data."""
    root = tmp_path_factory.mktemp("lp")
    G = Generator(GeneratorConfig(z_dim=16, w_dim=16, img_resolution=RES, img_channels=1,
                                  mapping=MappingConfig(num_layers=2),
                                  synthesis=SynthesisConfig(channel_base=256, channel_max=16)), seed=0).eval()
    G.save(root / "stylegan2" / "model")
    enc = StyleGANEncoder.for_generator(G, seed=0, base_channels=4, max_channels=8, head_channels=4,
                                        hidden=32).eval()
    enc.save(root / "encoder" / "model")
    clf = ResNetClassifier(ResNetConfig(in_channels=1, resolution=RES, class_names=("normal", "cardiomegaly"),
                                        num_outputs=2, head="softmax", widths=(4, 8), blocks=(1, 1)),
                           seed=0).eval()
    with torch.no_grad():
        clf.fc.weight.normal_(0, 2.0, generator=torch.Generator().manual_seed(0))
        # centre the decision on the median generated image, so the probe sees both decisions
        logits = clf(G.sample(128, generator=torch.Generator().manual_seed(123)))
        clf.fc.bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    clf.save(root / "classifier" / "model")
    VAE(AutoencoderConfig(resolution=RES, channels=1, widths=(4, 8)), seed=0).save(root / "vae" / "model")
    data = root / "data"
    write_synthetic(SynthConfig(resolution=RES), 20, data, seed=0, progress=False)
    pngs = root / "pngs"
    pngs.mkdir()
    for i in (9, 19, 3):
        Image.open(data / "images" / f"{i:06d}.png").save(pngs / f"case{i}.png")
    rgb = root / "rgb.png"
    Image.fromarray((np.random.default_rng(0).random((RES, RES, 3)) * 255).astype(np.uint8)).save(rgb)
    return SimpleNamespace(root=root, G=G, enc=enc, clf=clf, data=data, pngs=pngs, rgb=rgb)


# Schutte et al.'s walk (generated frames, taken at the threshold): the numbers below are recomputed
# for it from the saved models (the library default is residual frames taken at 0.99999)
PUBLISHED = ("--compose", "generated", "--set", "take_at=none")


def test_explain_latent_probe_files_and_numbers(tiny, tmp_path, capsys):
    out, probe = tmp_path / "out", tmp_path / "probe"
    code, stdout, err = run_cli(
        capsys, "explain", "--method", "latent-probe", "--classifier", tiny.root / "classifier",
        "--generator", tiny.root / "stylegan2", "--encoder", tiny.root / "encoder", "--probe-dir", probe,
        "--fit-samples", FIT, "--step-size", "0.25", "--max-steps", "12", "--images", tiny.pngs,
        "--out", out, "--no-progress", *PUBLISHED)
    assert code == 0, err
    assert "3 image(s)" in stdout
    assert (probe / "probe.json").is_file()  # fitted once and saved
    tensors = load_file(str(probe / "probe.safetensors"))
    dirs = tensors["directions"]  # [2, w_dim] unit directions toward each class
    assert torch.allclose(dirs.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(dirs[0], -dirs[1], atol=1e-5)  # binary: toward 0 is away from 1
    for i in (9, 19, 3):
        stem = f"case{i}"
        assert (out / f"{stem}.gif").read_bytes()[:6] in (b"GIF87a", b"GIF89a")
        for suffix in ("_strip.png", "_map.png"):
            with Image.open(out / f"{stem}{suffix}") as im:
                assert im.format == "PNG"
        rec = strict_json(out / f"{stem}.json")
        assert rec["method"] == "latent-probe" and rec["inversion"] == "encoder"
        assert rec["settings"]["step_size"] == 0.25 and math.isclose(rec["settings"]["max_lambda"], 3.0)
        probs = [rec["prob_original"], rec["prob_counterfactual"], rec["prob_reconstruction"], *rec["path_probs"]]
        assert all(0.0 <= p <= 1.0 for p in probs)
        assert 1 <= len(rec["path_probs"]) <= 13  # reconstruction + at most max_steps frames
        assert rec["flipped"] == (rec["prob_counterfactual"] >= rec["threshold"])

        # independent recomputation from the saved models
        x = read_png(tiny.pngs / f"{stem}.png")
        with torch.no_grad():
            p_x = tiny.clf(x).softmax(1)[0]
            t = 1 - int(p_x.argmax())  # 'opposite' of the classifier's decision
            w0 = tiny.enc.encode(x)  # [1, num_ws, w_dim]
            p_rec = tiny.clf(tiny.G.decode(w0)).softmax(1)[0, t]
            w_cf = w0 + rec["lambda"] * dirs[t].view(1, 1, -1)
            p_cf = tiny.clf(tiny.G.decode(w_cf)).softmax(1)[0, t]
        assert rec["target"] == t and rec["target_name"] == ("normal", "cardiomegaly")[t]
        assert rec["prob_original"] == pytest.approx(float(p_x[t]), abs=1e-4) and rec["prob_original"] < 0.5
        assert rec["path_probs"][0] == pytest.approx(float(p_rec), abs=1e-4)
        assert rec["prob_reconstruction"] == pytest.approx(float(p_rec), abs=1e-4)
        assert rec["prob_counterfactual"] == pytest.approx(float(p_cf), abs=1e-4)
        assert rec["latent_distance"] == pytest.approx(abs(rec["lambda"]) * math.sqrt(tiny.G.num_ws), rel=1e-3)

    # a second run loads the saved probe instead of fitting: same direction, same numbers
    first = strict_json(out / "case9.json")
    code, _, err = run_cli(
        capsys, "explain", "--method", "latent-probe", "--classifier", tiny.root / "classifier",
        "--generator", tiny.root / "stylegan2", "--encoder", tiny.root / "encoder", "--probe-dir", probe,
        "--step-size", "0.25", "--max-steps", "12", "--images", tiny.pngs / "case9.png",
        "--out", tmp_path / "again", "--no-progress", *PUBLISHED)
    assert code == 0, err
    again = strict_json(tmp_path / "again" / "case9.json")
    # (batch of 1 vs 3: equal up to float rounding)
    assert again["path_probs"] == pytest.approx(first["path_probs"], abs=1e-4)
    assert again["lambda"] == pytest.approx(first["lambda"], abs=1e-4)


def test_evaluate_latent_probe_writes_metrics_csv_report(tiny, tmp_path, capsys):
    out = tmp_path / "eval"
    code, _, err = run_cli(
        capsys, "evaluate", "--method", "latent-probe", "--classifier", tiny.root / "classifier",
        "--generator", tiny.root / "stylegan2", "--encoder", tiny.root / "encoder", "--fit-samples", FIT,
        "--data", tiny.data, "--split", "test", "--max-steps", "8", "--fid", "none", "--no-lpips",
        "--out", out, "--no-progress")
    assert code == 0, err
    metrics = strict_json(out / "metrics.json")
    summary, settings = metrics["summary"], metrics["settings"]
    assert settings["method"] == "latent-probe" and settings["encoder"] == str(tiny.root / "encoder")
    # default step 0.1 σ and 8 frames: a walk of at most 0.8 σ
    assert math.isclose(settings["explainer_settings"]["max_lambda"], 0.8)
    assert summary["n"] == 2  # indices 9 and 19 are the test split of 20 samples
    rows = list(csv.DictReader((out / "queries.csv").open()))
    assert [int(r["index"]) for r in rows] == [9, 19]
    for r in rows:
        assert 0.0 <= float(r["prob_original"]) < 0.5  # opposite target: below the threshold at first
        assert 0.0 <= float(r["prob_counterfactual"]) <= 1.0
    assert math.isclose(summary["validity"], np.mean([r["reached"] == "True" for r in rows]))
    report = (out / "report.md").read_text()
    assert "| validity |" in report and "latent-probe" in report
    for line in report.splitlines():
        if line.startswith("|"):
            assert len(re.findall(r"(?<!\\)\|", line)) == 4, line


def test_explain_latent_probe_with_projector_only(tiny, tmp_path, capsys):
    """Without --encoder the projector inverts; images are sized for the generator (img_channels)."""
    out = tmp_path / "proj"
    code, _, err = run_cli(
        capsys, "explain", "--method", "latent-probe", "--classifier", tiny.root / "classifier",
        "--generator", tiny.root / "stylegan2", "--fit-samples", FIT, "--project-steps", "2",
        "--max-steps", "3", "--images", tiny.pngs / "case9.png", "--out", out, "--no-progress")
    assert code == 0, err
    rec = strict_json(out / "case9.json")
    assert rec["inversion"] == "projector" and len(rec["path_probs"]) <= 4


def test_input_shape_reads_stylegan2_names(tiny):
    # no classifier to fall back on: the shape must come from the generator's img_channels/img_resolution
    assert explainer_input_shape(SimpleNamespace(generator=tiny.G)) == (1, RES)
    assert explainer_input_shape(SimpleNamespace(encoder=tiny.enc)) == (1, RES)


def test_explain_latent_probe_residual_frames_start_at_the_input(tiny, tmp_path, capsys):
    """--compose residual: frame 0 is the input itself, so its probability is the input's."""
    out = tmp_path / "residual"
    code, _, err = run_cli(
        capsys, "explain", "--method", "latent-probe", "--classifier", tiny.root / "classifier",
        "--generator", tiny.root / "stylegan2", "--encoder", tiny.root / "encoder", "--fit-samples", FIT,
        "--compose", "residual", "--take-at", "0.6", "--max-steps", "6", "--images", tiny.pngs / "case9.png",
        "--out", out, "--no-progress")
    assert code == 0, err
    rec = strict_json(out / "case9.json")
    assert rec["settings"]["compose"] == "residual" and rec["settings"]["take_at"] == 0.6
    assert rec["prob_reconstruction"] == pytest.approx(rec["prob_original"], abs=1e-4)
    assert rec["path_probs"][0] == pytest.approx(rec["prob_original"], abs=1e-4)
    assert rec["inversion_l1"] > 0  # the generator's own reconstruction is not exact


@pytest.mark.parametrize("case", ["vae_generator", "encoder_kind", "rgb_images", "bad_max_steps",
                                  "bad_compose"])
def test_latent_probe_errors_are_one_line_exit_2(tiny, tmp_path, capsys, case):
    args = {"--generator": tiny.root / "stylegan2", "--encoder": tiny.root / "encoder", "--images": tiny.pngs,
            "--max-steps": "5"}
    expect: tuple[str, ...]
    if case == "vae_generator":
        args["--generator"], expect = tiny.root / "vae", ("'vae'", "stylegan2-generator")
    elif case == "encoder_kind":
        args["--encoder"], expect = tiny.root / "classifier", ("'classifier'", "--encoder")
    elif case == "rgb_images":
        args["--images"], expect = tiny.rgb, ("3 channel", "expects 1")
    elif case == "bad_compose":
        args["--compose"], expect = "paste", ("compose", "residual")
    else:
        args["--max-steps"], expect = "0", ("--max-steps",)
    flat = [v for kv in args.items() for v in kv]
    code, _, err = run_cli(capsys, "explain", "--method", "latent-probe", "--classifier",
                           tiny.root / "classifier", "--fit-samples", FIT, *flat, "--out", tmp_path / "o",
                           "--no-progress")
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    for e in expect:
        assert e in err, err
