"""``medcf evaluate`` on the synthetic effusion task: localization against the pleural
fluid mask (the task's truth region) and the costophrenic-recess metric (``--cpr-scorer``)."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from _cli import run_cli, strict_json
from medcf.classifiers import CPRScorer, ResNetClassifier, ResNetConfig, load_classifier
from medcf.counterfactual.base import Explainer, PathConfig
from medcf.data import SynthConfig, SyntheticDataset, open_dataset, write_synthetic
from medcf.explain_runner import dataset_task, evaluate_explainer
from medcf.generators.autoencoder import VAE, AutoencoderConfig

RES = 32


class MaskPainter(Explainer):
    """A toy explainer that changes exactly the true fluid region of each query by 0.5
    (|difference| = 0.5 inside the mask, 0 outside), found by looking the query up in
    the dataset it was built with; its path is declared to reach the target at frame 1, so
    that the map scored is the painted one whatever the (irrelevant) classifier says."""

    method, config_class = "mask-painter", PathConfig

    def __init__(self, classifier: nn.Module, dataset):
        super().__init__(classifier=classifier)
        self.images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])        # [N, 1, H, W]
        self.masks = torch.stack([dataset[i]["effusion_mask"] for i in range(len(dataset))])  # [N, 1, H, W]

    def explain(self, x, target=None):
        t, _ = self.targets(x, target)
        j = (x[:, None] - self.images[None]).flatten(2).abs().sum(-1).argmin(1)  # [B] the query's index
        step = torch.where(x > 0, -0.5, 0.5) * self.masks[j]                     # stays in [-1, 1]
        odds = torch.tensor([[-1.0], [1.0]]).expand(2, x.shape[0])  # [T, B]: taken at frame 1, by fiat
        return self.from_path(x, t, torch.stack([x, x + step]), odds)             # [2, B, 1, H, W]


def test_effusion_data_is_scored_against_the_fluid_mask():
    ds = SyntheticDataset(SynthConfig(task="effusion", resolution=RES), n=16, seed=0)
    assert dataset_task(ds) == "effusion"
    areas = [float(ds[i]["effusion_mask"].sum()) for i in range(len(ds))]
    assert any(a > 0 for a in areas) and any(a == 0 for a in areas)  # both recess states present
    clf = nn.Sequential(nn.Flatten(), nn.Linear(RES * RES, 1))
    summary, rows, _ = evaluate_explainer(MaskPainter(clf, ds), ds, fid=None, progress=False, batch_size=8)
    loc = summary["localization"]
    assert loc["region"] == "pleural fluid mask"
    # the map is the mask up to a factor: perfect correlation and ranking wherever a mask exists;
    # a sharp recess (empty mask) has no truth region to score
    assert loc["n_scored"] == sum(a > 0 for a in areas)
    assert loc["ncc"] == pytest.approx(1.0, abs=1e-5)
    assert loc["auroc"] == pytest.approx(1.0)


def _resnet(cls, names, head, seed):
    cfg = ResNetConfig(in_channels=1, resolution=RES, class_names=names,
                       num_outputs=1 if head == "sigmoid" else len(names), head=head, widths=(4, 8),
                       blocks=(1, 1))
    return cls(cfg, seed=seed)


@pytest.fixture(scope="module")
def effusion_runs(tmp_path_factory):
    """Untrained tiny classifier, recess scorer and VAE, and a small synthetic effusion folder."""
    root = tmp_path_factory.mktemp("eff")
    clf = _resnet(ResNetClassifier, ("sharp", "blunted"), "softmax", 0)
    with torch.no_grad():  # an image-dependent decision
        clf.fc.weight.normal_(0, 2.0, generator=torch.Generator().manual_seed(0))
    clf.save(root / "classifier" / "model")
    _resnet(CPRScorer, ("sharp", "blunted"), "sigmoid", 1).save(root / "cpr")
    VAE(AutoencoderConfig(resolution=RES, channels=1, widths=(4, 8)), seed=0).save(root / "vae" / "model")
    write_synthetic(SynthConfig(task="effusion", resolution=RES), 40, root / "data", seed=0, progress=False)
    return root


def test_evaluate_cpr_scorer_fills_cpr_change_and_effusion_localization(effusion_runs, tmp_path, capsys):
    r, out = effusion_runs, tmp_path / "eval"
    code, stdout, err = run_cli(capsys, "evaluate", "--classifier", r / "classifier", "--generator", r / "vae",
                                "--data", r / "data", "--cpr-scorer", r / "cpr", "--max-steps", "3",
                                "--no-lpips", "--fid", "none", "--out", out, "--no-progress")
    assert code == 0, err
    metrics = strict_json(out / "metrics.json")
    summary, settings = metrics["summary"], metrics["settings"]
    assert settings["cpr_scorer"] == str(r / "cpr")
    rows = list(csv.DictReader((out / "queries.csv").open()))
    assert summary["n"] == len(rows) == 4
    # the scorer's recess score of each input, computed here independently of the evaluation
    test = open_dataset(r / "data", split="test")
    scorer = load_classifier(r / "cpr", kind="cpr-scorer")
    with torch.no_grad():
        expect = scorer.recess_score(torch.stack([test[i]["image"] for i in range(len(test))]))
    assert [float(q["cpr_original"]) for q in rows] == pytest.approx(expect.tolist(), abs=1e-5)
    # cpr_change by its definition from the per-query scores: the score crosses 0.5 toward the target
    crossed = [(float(q["cpr_original"]) <= 0.5 < float(q["cpr_counterfactual"])) if int(q["target"]) == 1
               else (float(q["cpr_counterfactual"]) <= 0.5 < float(q["cpr_original"])) for q in rows]
    assert summary["clinical_cpr"]["cpr_change"] == pytest.approx(sum(crossed) / len(rows))
    # localization against the fluid mask on the queries whose recess is blunted
    blunted = sum(float(test[i]["effusion_mask"].sum()) > 0 for i in range(len(test)))
    assert summary["localization"]["region"] == "pleural fluid mask"
    assert summary["localization"]["n_scored"] == blunted
    assert "CPR change" in (out / "report.md").read_text()


def test_cpr_scorer_of_the_wrong_kind_is_a_one_line_error(effusion_runs, tmp_path, capsys):
    r = effusion_runs
    code, _, err = run_cli(capsys, "evaluate", "--classifier", r / "classifier", "--generator", r / "vae",
                           "--data", r / "data", "--cpr-scorer", r / "classifier", "--out", tmp_path / "e",
                           "--no-progress")
    assert code == 2 and "expected 'cpr-scorer'" in err and err.strip().count("\n") == 0
