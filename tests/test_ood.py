"""medcf.eval.ood: the training distribution's reconstruction errors, recorded by the
autoencoder recipe, flag a real chest radiograph (pydicom-data) explained with a tiny
VAE trained on synthetic phantoms, through the API, the per-query JSON and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from _cli import run_cli, strict_json
from medcf.classifiers import ResNetClassifier, ResNetConfig
from medcf.data import SynthConfig, open_dataset, write_synthetic
from medcf.errors import CheckpointError
from medcf.eval.ood import (
    PROFILE_NAME,
    find_profile,
    load_profile,
    mark_ood,
    profile_from_errors,
    reconstruction_error,
)
from medcf.types import Counterfactual

RES = 32

try:
    from pydicom.data import get_testdata_file
except ImportError:  # pydicom / pydicom-data are test dependencies (pyproject [test])
    get_testdata_file = None
needs_radiograph = pytest.mark.skipif(get_testdata_file is None, reason="pydicom-data not installed")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VAE trained on 32 px synthetic radiographs, and an untrained tiny classifier."""
    from medcf.train.autoencoders import train_autoencoder

    root = tmp_path_factory.mktemp("ood")
    write_synthetic(SynthConfig(resolution=RES), 100, root / "data", seed=0, progress=False)
    res = train_autoencoder(root / "data", root / "vae", kind="vae", steps=100, batch_size=16, lr=3e-3,
                            widths=(8, 16), latent_dim=4, val_every=0, log_every=1000, progress=False)
    cfg = ResNetConfig(in_channels=1, resolution=RES, class_names=("normal", "cardiomegaly"), num_outputs=2,
                       head="softmax", widths=(4, 8), blocks=(1, 1))
    ResNetClassifier(cfg, seed=0).save(root / "classifier" / "model")
    return root, res


def test_the_recipe_records_the_val_split_errors(trained):
    root, res = trained
    profile = load_profile(res.model_dir)
    assert (res.model_dir / PROFILE_NAME).is_file() and profile is not None
    assert profile.n == 10 == res.val["n"]  # indices 8, 18, ... of 100 are the val split
    # the same images and measure as the recipe's own validation figure (computed separately)
    assert profile.mean == pytest.approx(res.val["l1"], rel=1e-4)
    assert 0 < profile.p50 <= profile.p90 <= profile.p99 <= profile.max
    assert profile.threshold == pytest.approx(1.5 * profile.p99)
    assert "val split" in profile.source


def _explainer(root):
    from medcf.explain_runner import build_explainer

    return build_explainer("latent-shift", root / "classifier", root / "vae", max_steps=5, progress=False)


def _explain(root, data):
    from medcf.explain_runner import explain_dataset

    cfs = list(explain_dataset(_explainer(root), data, "opposite", batch_size=8, progress=False))
    return [c for c, _ in cfs]


@needs_radiograph
def test_a_real_radiograph_is_flagged_and_held_out_phantoms_are_not(trained, caplog):
    root, res = trained
    profile = load_profile(res.model_dir)
    test = open_dataset(root / "data", split="test")
    cfs = _explain(root, test)
    flags = [f for c in cfs for f in c.info["ood"]]
    assert len(flags) == len(test) == 10 and sum(flags) <= 1  # the training distribution
    dcm = open_dataset(get_testdata_file("RG1_UNCI.dcm"), resolution=RES)
    with caplog.at_level("WARNING", logger="medcf.eval.ood"):
        (cf,) = _explain(root, dcm)
    assert cf.info["ood"] == [True]
    vae = find_profile(_explainer(root)).reconstruct.__self__
    assert vae.loaded_from == res.model_dir
    err = float(reconstruction_error(cf.original, vae.reconstruct(cf.original))[0])
    assert cf.info["reconstruction_error"][0] == pytest.approx(err, rel=1e-5)
    assert err > profile.threshold and cf.info["ood_ratio"][0] == pytest.approx(err / profile.p99, rel=1e-3)
    assert "1 of 1 queries look out of distribution" in caplog.text


@needs_radiograph
def test_cli_explain_warns_and_writes_the_flag(trained, capsys, caplog, tmp_path):
    root, _ = trained
    dcm = get_testdata_file("RG1_UNCI.dcm")
    with caplog.at_level("WARNING", logger="medcf.eval.ood"):  # the CLI logs warnings to stderr
            code, out, err = run_cli(capsys, "explain", "--classifier", root / "classifier", "--generator",
                                 root / "vae", "--images", dcm, "--out", tmp_path / "o", "--max-steps", "5",
                                 "--no-progress")
    assert code == 0, err
    assert "1 of 1 queries look out of distribution" in caplog.text
    (rec_path,) = (tmp_path / "o").glob("*.json")
    rec = strict_json(rec_path)
    assert rec["ood"] is True and rec["ood_ratio"] > 1.5 and rec["source"] == str(dcm)


def test_report_rows_carry_the_flag():
    from medcf.eval import evaluate_counterfactuals

    class Linear(torch.nn.Module):
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([-m, m], 1)

    x = torch.zeros(2, 1, 8, 8)
    cf = Counterfactual(original=x, counterfactual=x + 0.5, difference=torch.full((2, 1, 8, 8), 0.5),
                        target=torch.ones(2, dtype=torch.long), prob_original=torch.tensor([0.5, 0.5]),
                        prob_counterfactual=torch.tensor([0.7, 0.7]), reconstruction=x + torch.tensor(
                            [0.01, 1.0]).view(2, 1, 1, 1))
    profile = profile_from_errors(torch.linspace(0.01, 0.02, 50))
    assert mark_ood(cf, profile).tolist() == [False, True]  # cf.reconstruction: generated frames
    summary, rows = evaluate_counterfactuals([cf], classifier=Linear())
    assert [r["ood"] for r in rows] == [False, True]
    assert [r["reconstruction_error"] for r in rows] == pytest.approx([0.01, 1.0])
    assert summary["ood_rate"] == 0.5


def test_profiles_without_data_or_with_bad_files(tmp_path):
    assert load_profile(tmp_path) is None  # models trained before the profile existed: no flag
    (tmp_path / PROFILE_NAME).write_text(json.dumps({"n": 3, "mean": 0.1}))
    with pytest.raises(CheckpointError, match="ood.json"):
        load_profile(tmp_path)
    (tmp_path / PROFILE_NAME).write_text(json.dumps({"n": 3, "mean": 0.1, "std": 0, "p50": 0.1, "p90": 0.1,
                                                     "p99": math.inf, "max": 1}))
    with pytest.raises(CheckpointError, match="non-finite"):
        load_profile(tmp_path)

    class Bare:  # an explainer whose models were not loaded from a directory
        model = torch.nn.Linear(1, 1)

    assert find_profile(Bare()) is None
    x = torch.zeros(1, 1, 4, 4)
    cf = Counterfactual(original=x, counterfactual=x, difference=x, target=torch.ones(1, dtype=torch.long),
                        prob_original=torch.tensor([0.5]), prob_counterfactual=torch.tensor([0.5]))
    assert mark_ood(cf, profile_from_errors(torch.rand(5))).tolist() == [False]  # no reconstruction
    assert "ood" not in cf.info
    cf = dataclasses.replace(cf, reconstruction=x, info={"settings": {"compose": "residual"}})  # input + change
    assert mark_ood(cf, profile_from_errors(torch.rand(5) + 1)).tolist() == [False] and "ood" not in cf.info
    flagged = mark_ood(cf, profile_from_errors(torch.rand(5) * 0.01), reconstruct=lambda v: v + 1)
    assert flagged.tolist() == [True] and cf.info["reconstruction_error"] == [1.0]


def test_the_encoder_recipe_records_generated_image_errors(tmp_path):
    from medcf.train.encoder import train_encoder
    from test_encoder import tiny_generator

    res = train_encoder(tiny_generator(), tmp_path / "run", steps=2, batch_size=4, lpips_weight=0.0,
                        base_channels=8, max_channels=16, val_samples=8, val_every=0, progress=False,
                        ema_decay=None)
    profile = load_profile(res.model_dir)
    assert profile is not None and profile.n == 8 and "generated validation images" in profile.source
    # the same G(E(x)) error as the recipe's validation figure on the same 8 pairs
    assert profile.mean == pytest.approx(res.val["image_l1"], rel=1e-4)
