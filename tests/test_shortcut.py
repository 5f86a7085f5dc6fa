"""The shortcut-detection study: marker figures on hand-built inputs, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from medcf.benchmark.shortcut import (
    ShortcutPlan,
    _WithTokenFlag,
    corner_share,
    marker_figures,
    run_shortcut_study,
)
from medcf.data.synthetic import SynthConfig, SyntheticDataset
from medcf.errors import MedcfError


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
                        fo_detector=((4, 8), 2, 8), vae=((8,), 2, 8), n_queries=4, max_steps=2)
    res = run_shortcut_study(tmp_path / "s", plan, progress=False)
    data = json.loads(res.json_path.read_text())
    assert set(data["classifiers"]) == {"shortcut", "clean"} and set(data["train_seconds"]) == {
        "shortcut", "clean", "ctr_regressor", "fo_detector", "vae"}
    for name in ("shortcut", "clean"):
        figs = res.explainer[name]
        assert 0.0 <= figs["validity"] <= 1.0 and 0.0 <= figs["ctr_toward"] <= 1.0
        assert 0.0 <= figs["corner_share"] <= 1.0 and -1.0 <= figs["marker_prob_toward"] <= 1.0
        for key in ("acc_shortcut", "acc_decorrelated", "acc_anti"):
            assert 0.0 <= res.classifiers[name][key] <= 1.0
    assert res.explainer["queries"]["n"] == 4
    assert "marker added/removed" in res.markdown_path.read_text()
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
