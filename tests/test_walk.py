"""The shared latent walk (counterfactual/walk.py) on a 1-D toy whose answers are known:
the state is a scalar a per query, the frame is a constant image of value a, and the
target log-odds are ``slope * (a - a0)`` (queries differ by slope and start)."""

import math

import pytest
import torch

from medcf.counterfactual.walk import WalkConfig, latent_walk
from medcf.types import reaches


def toy(slopes, starts=None):
    slopes = torch.tensor(slopes, dtype=torch.float32)
    a0 = torch.zeros_like(slopes) if starts is None else torch.tensor(starts, dtype=torch.float32)

    def render(idx, a):                      # a [b] -> frames [b, 1, 2, 2], log-odds [b]
        return a.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone(), slopes[idx] * a

    def step(idx, a):
        return (a + 0.1, *render(idx, a + 0.1))

    idx = torch.arange(len(slopes))
    frame0, s0 = render(idx, a0)
    return step, render, a0, frame0, s0


def test_crossing_is_refined_to_the_level_and_stop_reasons_follow_the_rules():
    # slopes: 2 crosses log-odds 1 at a = 0.5; 0 never progresses; -1 falls
    step, render, a0, f0, s0 = toy([2.0, 0.0, -1.0])
    res = latent_walk(step, render, start=a0, frame0=f0, s0=s0, level=1.0, stop_at=3.0, step_size=0.1,
                      max_steps=50, patience=3, refine_steps=20)
    assert res.found.tolist() == [True, False, False]
    assert res.state[0].item() == pytest.approx(0.5, abs=1e-4)        # bisected crossing, not a frame
    assert res.log_odds[0].item() >= 1.0                               # the side past the level
    assert res.lam[0].item() == pytest.approx(0.5, abs=1e-4)
    # query 0 walks on to stop_at = 3 (a = 1.5): frames 0.0 .. 1.5 -> 16 frames
    assert res.stop_reason[0] == "reached" and res.n_frames[0].item() == 16
    # no progress for 3 frames -> stops after frame 3; best frame is frame 0 (no rise)
    assert res.stop_reason[1:] == ["no_progress", "no_progress"]
    assert res.n_frames[1:].tolist() == [4, 4]
    assert res.state[1:].tolist() == [0.0, 0.0]
    # the path: [T, B, ...], a stopped query repeats its last frame
    assert res.path.shape[1] == 3 and res.path_log_odds.shape == res.path.shape[:2]
    assert res.path[-1, 1].flatten().tolist() == [pytest.approx(0.3)] * 4


def test_budget_drops_the_frame_and_max_steps_names_its_reason():
    step, render, a0, f0, s0 = toy([1.0, 1.0])
    res = latent_walk(step, render, start=a0, frame0=f0, s0=s0, level=10.0, stop_at=10.0, step_size=0.1,
                      max_steps=5, over_budget=lambda idx, img: (img.flatten(1).mean(1) > 0.25) & (idx == 0),
                      max_reason="max_lambda")
    # query 0: frames 0.1, 0.2 kept, 0.3 over budget (dropped) -> 3 frames; query 1 hits max_steps
    assert res.stop_reason == ["budget", "max_lambda"]
    assert res.n_frames.tolist() == [3, 6]
    assert res.state.tolist() == [pytest.approx(0.2), pytest.approx(0.5)]   # best frames (never found)
    assert res.found.tolist() == [False, False]


def test_frame_zero_past_the_level_is_the_counterfactual():
    step, render, a0, f0, s0 = toy([1.0], starts=[2.0])   # log-odds 2 >= level 1 at the start
    res = latent_walk(step, render, start=a0, frame0=f0, s0=s0, level=1.0, stop_at=1.0, step_size=0.1,
                      max_steps=5)
    assert res.found.tolist() == [True] and res.stop_reason == ["reached"]
    assert res.state.tolist() == [2.0] and res.n_frames.tolist() == [1]


def test_walk_config_checks_and_stop_level():
    cfg = WalkConfig(take_at=0.9, stop_probability=0.6)
    assert cfg.stop_logit == pytest.approx(math.log(9.0))               # never stops before take_at
    assert WalkConfig(stop_probability=None).stop_logit == 0.0
    with pytest.raises(ValueError, match="stop_probability"):
        WalkConfig(stop_probability=1.0)
    with pytest.raises(ValueError, match="step_size"):
        WalkConfig(step_size=0.0)
    with pytest.raises(ValueError, match="WalkConfig.take_at"):
        WalkConfig(threshold=0.6, take_at=0.55)


def test_latent_probe_decides_class_one_at_logit_zero():
    # the one decision rule: a single sigmoid logit of exactly 0 is class 1 (p >= 0.5)
    from medcf.counterfactual.latent_probe import LatentProbe

    logits = torch.tensor([[0.0], [-1e-6], [3.0]])
    assert LatentProbe._decisions(logits).tolist() == [1, 0, 1]
    assert reaches(torch.sigmoid(logits[:, 0]), 0.5).long().tolist() == [1, 0, 1]
