"""The shortcut-detection study: marker figures on hand-built inputs, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from medcf.benchmark.shortcut import (
    ShortcutPlan,
    _configs,
    _WithTokenFlag,
    corner_share,
    judge_counterfactuals,
    marker_figures,
    run_shortcut_study,
)
from medcf.data.synthetic import FO_NAMES, SynthConfig, SyntheticDataset
from medcf.errors import MedcfError
from medcf.types import Counterfactual


def test_marker_figures_by_hand():
    # queries: 0 target pos, no token -> gains it (added); 1 target pos, no token -> stays without;
    # 2 target neg, token -> loses it (removed); 3 target neg, no token -> gains it (wrong way);
    # 4 target pos, token -> loses it (wrong way)
    token_x = torch.tensor([False, False, True, False, True])
    token_cf = torch.tensor([True, False, False, True, False])
    target = torch.tensor([1, 1, 0, 0, 1])
    f = marker_figures(token_x, token_cf, target)
    assert f["marker_added"] == pytest.approx(1 / 2)
    assert f["marker_removed"] == 1.0
    assert f["marker_change"] == pytest.approx(2 / 3)
    assert f["marker_wrong"] == pytest.approx(2 / 5)
    none = marker_figures(torch.tensor([True]), torch.tensor([True]), torch.tensor([1]))
    assert math.isnan(none["marker_change"]) and none["marker_wrong"] == 0.0


def test_corner_share_by_hand():
    x = torch.zeros(3, 1, 10, 10)
    cf = x.clone()
    cf[0, :, 8:, 8:] = 0.5          # all of the change in the last 2 rows and columns
    cf[1] = 0.3                     # uniform change: the corner holds 4 of 100 pixels
    # query 2: no change at all -> 0
    torch.testing.assert_close(corner_share(x, cf), torch.tensor([1.0, 0.04, 0.0]))


class _CornerDetector(nn.Module):
    """Token logit = mean intensity of the last 3 rows and columns (in [-1, 1]); other objects off."""

    class_names = (*FO_NAMES, "spurious")

    def forward(self, x):  # [B, 1, 16, 16] -> [B, 4]
        out = torch.full((x.shape[0], 4), -5.0)
        out[:, 3] = x[:, 0, 13:, 13:].mean((1, 2))
        return out


class _CentreCTR(nn.Module):
    """'CTR' = 0.4 + 0.2 * the bright fraction of the centre rows/columns 4..11: [B, 1, 16, 16] -> [B, 1]."""

    def forward(self, x):
        return 0.4 + 0.2 * (x[:, :, 4:12, 4:12] > 0).float().mean((1, 2, 3)).unsqueeze(1)


def test_judges_read_a_painted_token_and_a_changed_heart():
    x = torch.full((3, 1, 16, 16), -1.0)
    x[2, :, 13:, 13:] = 1.0                       # query 2 carries the token
    cf = x.clone()
    cf[0, :, 13:, 13:] = 1.0                      # 0 (target positive): the token painted in
    cf[1, :, 4:12, 4:12] = 1.0                    # 1 (target positive): the "heart" enlarged instead
    cf[2, :, 13:, 13:] = -1.0                     # 2 (target negative): the token removed
    target = torch.tensor([1, 1, 0])
    p_cf = torch.tensor([0.9, 0.9, 0.3])          # the target's probability: query 2 does not flip
    batch = lambda s: Counterfactual(original=x[s], counterfactual=cf[s], difference=(cf - x)[s],  # noqa: E731
                                     target=target[s], prob_original=torch.full((3,), 0.1)[s],
                                     prob_counterfactual=p_cf[s])
    f = judge_counterfactuals([batch(slice(0, 1)), batch(slice(1, 3))], _CornerDetector(), _CentreCTR())
    assert f["validity"] == pytest.approx(2 / 3)
    assert f["marker_added"] == pytest.approx(1 / 2) and f["marker_removed"] == 1.0
    assert f["marker_change"] == pytest.approx(2 / 3) and f["marker_wrong"] == 0.0
    moved = torch.sigmoid(torch.tensor(1.0)) - torch.sigmoid(torch.tensor(-1.0))  # queries 0 and 2
    assert f["marker_prob_toward"] == pytest.approx(float(2 * moved / 3), abs=1e-6)
    assert f["corner_share"] == pytest.approx(2 / 3)  # all of 0's and 2's change, none of 1's
    assert f["ctr_toward"] == pytest.approx(1 / 3) and f["ctr_cross"] == pytest.approx(1 / 3)
    assert f["ctr_change"] == pytest.approx(0.2 / 3)
    assert f["l1"] == pytest.approx(float((cf - x).abs().mean()))


def test_default_plan_data_two_equally_predictive_cues():
    """Shortcut data: the token exactly on the positives and the heart (CTR > 0.5) both predict the
    label; decorrelated data (judges, VAE): the token independent of the label; clean: no token."""
    cfg = _configs(ShortcutPlan())
    short = [SyntheticDataset(cfg["shortcut"], n=200, seed=3)[i] for i in range(200)]
    assert all(bool(s["spurious"]) == bool(s["label"]) == (float(s["ctr"]) > 0.5) for s in short)
    assert all(0.42 <= float(s["ctr"]) <= 0.58 for s in short)
    deco = [SyntheticDataset(cfg["decorrelated"], n=400, seed=3)[i] for i in range(400)]
    tok, lab = (torch.tensor([float(s[k]) for s in deco]) for k in ("spurious", "label"))
    assert 0.4 < float(tok[lab == 1].mean()) < 0.6 and 0.4 < float(tok[lab == 0].mean()) < 0.6
    assert not any(bool(SyntheticDataset(cfg["clean"], n=50, seed=3)[i]["spurious"]) for i in range(50))


@pytest.mark.parametrize("bad", [{"ctr_range": (0.52, 0.58)}, {"progressive": (16, 0, 16)},
                                 {"spurious_rate": 0.5}])
def test_bad_plan_is_a_one_line_error(bad):
    with pytest.raises(MedcfError) as e:
        ShortcutPlan(**bad)
    assert "\n" not in str(e.value) and ("ctr_range" in str(e.value) or "ShortcutPlan." in str(e.value))


def test_detector_data_gets_the_token_as_a_fourth_object():
    base = SyntheticDataset(SynthConfig(resolution=32, spurious_rate=0.5, spurious_negative_rate=0.5), n=12)
    ds = _WithTokenFlag(base)
    assert ds.fo_names[-1] == "spurious" and len(ds.fo_names) == 4
    for i in range(12):
        item = ds[i]
        assert item["fo_flags"].shape == (4,) and item["fo_flags"][3] == base[i]["spurious"]
        assert torch.equal(item["fo_flags"][:3], base[i]["fo_flags"])


def test_tiny_study_writes_its_files_reuses_models_and_refuses_another_plan(tmp_path):
    plan = ShortcutPlan(n_train=32, n_test=16, classifier=((4, 8), 2, 8), ctr_regressor=((4, 8), 2, 8),
                        fo_detector=((4, 8), 2, 8), vae=((8,), 2, 8), n_queries=4, max_steps=2,
                        progressive=(8, 2, 4))
    res = run_shortcut_study(tmp_path / "s", plan, progress=False)
    data = json.loads(res.json_path.read_text())
    assert set(data["classifiers"]) == {"shortcut", "clean"} and set(data["train_seconds"]) == {
        "shortcut", "clean", "ctr_regressor", "fo_detector", "vae", "progressive_shortcut", "progressive_clean"}
    for figures in (res.explainer, res.progressive):
        for name in ("shortcut", "clean"):
            figs = figures[name]
            assert 0.0 <= figs["validity"] <= 1.0 and 0.0 <= figs["ctr_toward"] <= 1.0
            assert 0.0 <= figs["corner_share"] <= 1.0 and -1.0 <= figs["marker_prob_toward"] <= 1.0
    for name in ("shortcut", "clean"):
        for key in ("acc_shortcut", "acc_decorrelated", "acc_anti"):
            assert 0.0 <= res.classifiers[name][key] <= 1.0
    assert res.explainer["queries"]["n"] == 4 and set(data["progressive"]) == {"shortcut", "clean"}
    assert data["progressive"]["clean"]["l1"] == res.progressive["clean"]["l1"]  # NaNs possible elsewhere
    md = res.markdown_path.read_text()
    assert "marker added/removed" in md and "**Latent Shift**" in md and "**progressive exaggeration**" in md
    assert res.figure_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weights = tmp_path / "s" / "shortcut" / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = run_shortcut_study(tmp_path / "s", plan, progress=False)  # same plan: models reused
    assert weights.stat().st_mtime_ns == before
    assert json.loads(again.json_path.read_text())["train_seconds"] == {}
    assert again.classifiers == res.classifiers  # same models, same test sets
    with pytest.raises(MedcfError, match="another plan") as e:
        run_shortcut_study(tmp_path / "s", ShortcutPlan(n_queries=5), progress=False)
    assert "\n" not in str(e.value)
