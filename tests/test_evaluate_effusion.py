"""``medcf evaluate`` on the synthetic effusion task: localization against the pleural
fluid mask (the task's truth region)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medcf.counterfactual.base import Explainer, PathConfig
from medcf.data import SynthConfig, SyntheticDataset
from medcf.explain_runner import dataset_task, evaluate_explainer

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
