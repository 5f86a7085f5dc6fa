"""The explainer base: the decision rule, take_at along a path, and from_path on a toy
whose answer is known in closed form."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from medcf.counterfactual.base import (
    Explainer,
    PathConfig,
    gather_frames,
    log_odds_of,
    refine_crossing,
    take_along_path,
)
from medcf.types import reaches


class Linear(nn.Module):
    """logit = mean(x) * 10: class 1 when the mean intensity is >= 0."""

    class_names = ("neg", "pos")

    def forward(self, x):
        return x.flatten(1).mean(1, keepdim=True) * 10.0


@dataclass(frozen=True)
class RampConfig(PathConfig):
    steps: int = 21


class Ramp(Explainer):
    """Frames x + a for a in 0..1 (21 steps): the logit rises by 10 * a."""

    method, config_class = "ramp", RampConfig

    def explain(self, x, target=None):
        t, _ = self.targets(x, target)
        a = torch.linspace(0, 1, self.config.steps)
        return self.from_path(x, t, torch.stack([x + v for v in a]))


def test_decision_rule_is_inclusive_at_threshold():
    assert reaches(torch.tensor([0.5, 0.4999]), 0.5).tolist() == [True, False]


def test_take_along_path_first_crossing_else_best():
    s = torch.tensor([[-1.0, -3.0], [0.5, -2.0], [2.0, -2.5]])  # [T=3, B=2]
    c = take_along_path(s, 0.5)
    assert c.index.tolist() == [1, 1] and c.found.tolist() == [True, False]
    c = take_along_path(s, 0.5, take_at=0.8)  # logit(0.8) = 1.386: frame 2 for query 0
    assert c.index.tolist() == [2, 1]


def test_from_path_takes_the_closed_form_frame():
    x = torch.full((2, 1, 4, 4), -0.5)  # logit -5; frame k has logit -5 + 10 * k / 20 = k / 2 - 5
    cf = Ramp(classifier=Linear()).explain(x, target="pos")
    assert cf.info["frame_index"] == [10, 10]  # k / 2 - 5 >= 0 first at k = 10
    assert cf.flipped.all() and torch.allclose(cf.counterfactual, x + 0.5)
    assert torch.allclose(cf.difference, torch.full((2, 1, 4, 4), 0.5))
    cf = Ramp(classifier=Linear(), config=RampConfig(take_at=0.99)).explain(x, target=None)
    assert cf.info["frame_index"] == [20, 20]  # logit(0.99) = 4.6: first at k = 20 (logit 5)
    assert cf.target.tolist() == [1, 1]


def test_from_path_reports_not_found():
    x = torch.full((1, 1, 4, 4), -2.0)  # logit -20 .. -10: never crosses; best is the last frame
    cf = Ramp(classifier=Linear()).explain(x, target=1)
    assert cf.info["found"] == [False] and cf.info["frame_index"] == [20] and not cf.flipped.any()


def test_config_checks_and_type():
    with pytest.raises(ValueError, match="take_at"):
        RampConfig(take_at=0.3)
    with pytest.raises(TypeError, match="RampConfig"):
        Ramp(classifier=Linear(), config=PathConfig())


def test_log_odds_softmax_and_refine():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    s = log_odds_of(logits, torch.tensor([0]))
    p = torch.softmax(logits, 1)[0, 0]
    assert torch.allclose(s, torch.log(p / (1 - p)))
    a = refine_crossing(lambda a: (None, 10 * a - 3), torch.zeros(1), torch.ones(1), 0.0, 20)
    assert abs(float(a) - 0.3) < 1e-5
    path = torch.arange(6.0).view(3, 2)
    assert gather_frames(path, torch.tensor([2, 0])).tolist() == [4.0, 1.0]
