"""Concept purity of a multi-trajectory explanation (DISSECT): which concept changes what.

For each concept k of ``cf.concept_paths`` [K, T, B, C, H, W], its counterfactual is
the frame ``cf.info["concepts"][k]["frame_index"]`` of its own trajectory. Over the
queries, the purity matrix counts, per concept:

- ``marker``: the fraction whose shortcut marker flips (present on x and absent on the
  concept's counterfactual, or the reverse), judged by ``marker_present`` (e.g. the
  foreign-object detector's token output >= 0.5);
- ``heart``: the fraction whose CTR (``predict_ctr`` of a CTR regressor) moves toward
  the target class by at least ``ctr_delta`` (up for the positive class, down otherwise).

DISSECT's claim on a shortcut task is a concept with a high ``marker`` share and another
with a high ``heart`` share (Ghandeharioun et al., ICLR 2022).

Example:
    >>> m = concept_purity(cf, marker_present=lambda x: det(x)[:, -1] >= 0, ctr=ctr_regressor)  # doctest: +SKIP
    >>> m["marker"], m["heart"]                                                                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from medcf.counterfactual.base import gather_frames
from medcf.errors import ShapeError
from medcf.eval.clinical import predict_ctr
from medcf.types import Counterfactual


def concept_counterfactuals(cf: Counterfactual) -> Tensor:
    """[K, B, C, H, W]: each concept's counterfactual (its own take_at frame)."""
    if cf.concept_paths is None or "concepts" not in cf.info:
        raise ShapeError("concept_purity: the Counterfactual has no concept paths (explain with DISSECT and "
                         "keep_path=True)")
    index = torch.tensor([c["frame_index"] for c in cf.info["concepts"]], dtype=torch.long)  # [K, B]
    return torch.stack([gather_frames(cf.concept_paths[k], index[k]) for k in range(index.shape[0])])


@torch.no_grad()
def concept_purity(cf: Counterfactual, *, marker_present: Callable[[Tensor], Tensor], ctr: nn.Module,
                   ctr_delta: float = 0.03, positive_class: int = 1) -> dict[str, list[float] | int]:
    """{"marker": [K], "heart": [K], "n": B}: per concept, the share of queries changing each factor."""
    cfs = concept_counterfactuals(cf)                                   # [K, B, C, H, W]
    x = cf.original
    up = (cf.target.to(x.device) == positive_class).float() * 2 - 1    # [B] +1 toward the positive class
    marker_x = marker_present(x).bool()
    ctr_x = predict_ctr(ctr, x)
    marker, heart = [], []
    for k in range(cfs.shape[0]):
        marker.append(float((marker_present(cfs[k]).bool() != marker_x).float().mean()))
        moved = (predict_ctr(ctr, cfs[k]) - ctr_x) * up.to(ctr_x.device)
        heart.append(float((moved >= ctr_delta).float().mean()))
    return {"marker": marker, "heart": heart, "n": int(x.shape[0])}
