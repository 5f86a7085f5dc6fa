"""Costophrenic-recess (CPR) scorer and the cpr_change metric: hand-built inputs and a tiny run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from _cli import run_cli
from medcf.classifiers import CLASSIFIERS, CPRScorer, ResNetConfig, load_classifier
from medcf.data.synthetic import SynthConfig, SyntheticDataset
from medcf.errors import DataError, MedcfError, ShapeError
from medcf.eval import cpr_change, cpr_per_query, recess_score
from medcf.types import Counterfactual


def const(values, r=8) -> torch.Tensor:  # one constant image per value: [B, 1, r, r]
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, r, r).clone()


def make_cf(orig, cf, target) -> Counterfactual:
    x, y = const(orig), const(cf)
    b = x.shape[0]
    return Counterfactual(original=x, counterfactual=y, difference=y - x,
                          target=torch.as_tensor(target).long().expand(b).clone(),
                          prob_original=torch.full((b,), 0.1), prob_counterfactual=torch.full((b,), 0.9))


class MeanLogit(nn.Module):
    """Logit of "blunted" = 10 * mean(x): a bright image scores blunted, [B, 1]."""

    def forward(self, x):
        return 10.0 * x.mean((1, 2, 3))[:, None]


def test_cpr_change_counts_crossings_in_the_target_direction():
    # target blunted (1): -0.4 -> 0.4 crosses; -0.4 -> -0.1 moves up without crossing;
    # 0.3 -> 0.5 was already blunted (not a crossing); 0.2 -> -0.3 goes the wrong way
    cf = make_cf([-0.4, -0.4, 0.3, 0.2], [0.4, -0.1, 0.5, -0.3], 1)
    q = cpr_per_query(cf, MeanLogit())
    torch.testing.assert_close(q["cpr_original"], torch.sigmoid(torch.tensor([-4.0, -4.0, 3.0, 2.0])))
    assert q["crossed"].tolist() == [True, False, False, False]
    assert q["toward_target"].tolist() == [True, True, True, False]
    assert cpr_change(cf, MeanLogit()) == pytest.approx(0.25)
    # target sharp (0): blunted -> sharp crosses; sharp -> sharp does not
    down = make_cf([0.4, -0.2], [-0.4, -0.5], 0)
    assert cpr_change(down, MeanLogit()) == pytest.approx(0.5)
    # a mixed batch: the target decides the direction per query
    mixed = make_cf([-0.4, 0.4], [0.4, -0.4], [1, 0])
    assert cpr_change(mixed, MeanLogit()) == 1.0
    # the same pairs with the targets swapped never cross toward the target
    assert cpr_change(make_cf([-0.4, 0.4], [0.4, -0.4], [0, 1]), MeanLogit()) == 0.0
    # the threshold is on P(blunted) = 0.5, i.e. logit 0: a score of exactly 0.5 is sharp
    assert cpr_change(make_cf([-0.1], [0.0], 1), MeanLogit()) == 0.0


def test_cpr_metric_errors_and_empty_batch():
    class TwoLogits(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 2)

    with pytest.raises(ShapeError, match="CPR scorer") as e:
        recess_score(TwoLogits(), const([0.0]))
    assert "\n" not in str(e.value)
    empty = Counterfactual(original=const([]), counterfactual=const([]), difference=const([]),
                           target=torch.zeros(0, dtype=torch.long), prob_original=torch.zeros(0),
                           prob_counterfactual=torch.zeros(0))
    assert math.isnan(cpr_change(empty, MeanLogit()))


def test_cpr_scorer_kind_head_and_round_trip(tmp_path):
    cfg = ResNetConfig(in_channels=1, resolution=16, class_names=("sharp", "blunted"), num_outputs=1,
                       head="sigmoid", widths=(4, 8), blocks=(1, 1))
    assert CLASSIFIERS["cpr-scorer"] is CPRScorer
    model = CPRScorer(cfg, seed=0).eval()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert model(x).shape == (3, 1)
    torch.testing.assert_close(model.recess_score(x), torch.sigmoid(model(x)[:, 0]))
    model.save(tmp_path / "m")
    again = load_classifier(tmp_path / "m", kind="cpr-scorer").eval()
    torch.testing.assert_close(again(x), model(x))
    with pytest.raises(ValueError, match="head"):
        CPRScorer(ResNetConfig(resolution=16, widths=(4,), blocks=(1,)))  # softmax head refused
    with pytest.raises(MedcfError, match="cpr-scorer"):
        load_classifier(tmp_path / "m", kind="ctr-regressor")


def test_train_cpr_scorer_cli_on_effusion_data(tmp_path, capsys):
    code, out, err = run_cli(capsys, "data", "synth", "--task", "effusion", "--n", "120", "--resolution", "32",
                             "--out", tmp_path / "eff", "--no-progress")
    assert code == 0, err
    code, out, err = run_cli(capsys, "train", "cpr-scorer", "--data", tmp_path / "eff", "--out", tmp_path / "run",
                             "--steps", "4", "--batch-size", "16", "--device", "cpu", "--json")
    assert code == 0, err
    import json

    res = json.loads(out)
    assert res["role"] == "cpr-scorer" and res["test"]["n"] == 12
    assert 0.0 <= res["test"]["accuracy"] <= 1.0
    scorer = load_classifier(res["model_dir"], kind="cpr-scorer")
    assert scorer.class_names == ("sharp", "blunted") and scorer.head == "sigmoid"
    code, out, _ = run_cli(capsys, "train", "cpr-scorer", "--help")
    assert code == 0 and "medcf train cpr-scorer --data" in out


def test_cpr_scorer_refuses_data_without_effusion(tmp_path):
    from medcf.train.classifiers import train_classifier

    cardio = SyntheticDataset(SynthConfig(task="cardiomegaly", resolution=32), n=8)
    with pytest.raises(DataError, match="effusion") as e:
        train_classifier(cardio, tmp_path / "r", role="cpr-scorer", steps=1)
    assert "\n" not in str(e.value)


def test_evaluate_counterfactuals_reports_cpr_change_and_the_fluid_region():
    from medcf.eval import evaluate_counterfactuals

    class MeanClassifier(nn.Module):  # 2 logits: class 1 for bright images
        def forward(self, x):
            m = x.mean((1, 2, 3))
            return torch.stack([-m, m], 1)

    cf = make_cf([-0.4, -0.4, 0.4], [0.4, -0.1, -0.4], [1, 1, 0])
    mask = torch.zeros(3, 1, 8, 8)
    mask[:, :, 6:, :2] = 1.0  # the "fluid": bottom-left corner
    cf = Counterfactual(original=cf.original, counterfactual=cf.counterfactual,
                        difference=mask * 0.5 + 0.01, target=cf.target, prob_original=cf.prob_original,
                        prob_counterfactual=cf.prob_counterfactual)
    summary, rows = evaluate_counterfactuals([cf], classifier=MeanClassifier(), cpr_scorer=MeanLogit(),
                                             task="effusion", gt=[{"effusion_mask": mask}])
    assert summary["clinical_cpr"]["cpr_change"] == pytest.approx(2 / 3)  # queries 0 and 2 cross
    assert summary["clinical_cpr"]["toward_target"] == pytest.approx(1.0)
    assert [r["cpr_crossed"] for r in rows] == [True, False, True]
    # the difference map is the fluid mask (plus a constant): perfect localization
    assert summary["localization"]["auroc"] == pytest.approx(1.0)
    assert summary["localization"]["region"] == "pleural fluid mask"
