"""Foreign-object preservation (FOP), after Singla et al. (MedIA 2023).

A counterfactual should change the class evidence and leave devices alone.
With a foreign-object detector (any module mapping ``[B, C, H, W]`` to ``[B, 3]``
logits, one per object in ``FO_NAMES``; an object is "found" when its sigmoid
probability exceeds 0.5):

- ``foreign_object_preservation``: among the (image, object) pairs the detector
  finds in x, the fraction it still finds in x_cf (Singla et al.'s FOP);
- ``foreign_object_preservation_gt``: the synthetic-data variant where the
  objects present in x are the ground-truth ``fo_flags`` [B, 3] rather than the
  detector's opinion on x: the fraction of present objects found in x_cf.

Both return ``{"fop": float (NaN when there are no pairs), "n_pairs", "n_preserved",
"per_object": {name: fop}}``.

Example:
    >>> foreign_object_preservation(cf, detector)["fop"]         # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from medcf.errors import ShapeError
from medcf.eval._common import run
from medcf.types import Counterfactual

# The synthetic benchmark's object order (medcf.data.synthetic.FO_NAMES).
FO_NAMES = ("pacemaker", "electrodes", "marker")


def detect(detector: nn.Module, x: Tensor, threshold: float = 0.5) -> Tensor:  # -> [B, K] bool
    """Objects the detector finds: sigmoid(logits) > ``threshold``."""
    logits = run(detector, x)
    if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        raise ShapeError(f"foreign-object detector: expected logits [B, K], got {tuple(logits.shape)}")
    return torch.sigmoid(logits) > threshold


def _summary(present: Tensor, kept: Tensor, names) -> dict:  # [B, K] bool x2
    pairs, preserved = present, present & kept
    n_pairs, n_kept = int(pairs.sum()), int(preserved.sum())
    names = list(names) if names is not None and len(names) == present.shape[1] else \
        [str(k) for k in range(present.shape[1])]
    per_object = {}
    for k, name in enumerate(names):
        n = int(pairs[:, k].sum())
        per_object[name] = int(preserved[:, k].sum()) / n if n else math.nan
    return {"fop": n_kept / n_pairs if n_pairs else math.nan, "n_pairs": n_pairs,
            "n_preserved": n_kept, "per_object": per_object}


def fop_pairs(cf: Counterfactual, detector: nn.Module, fo_flags: Tensor | None = None,
              threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """(present [B, K], kept [B, K]) bool: objects in x (detector, or ``fo_flags``) and found in x_cf."""
    if fo_flags is None:
        present = detect(detector, cf.original, threshold)
    else:
        present = torch.as_tensor(fo_flags).detach().cpu().float() > 0.5
    kept = detect(detector, cf.counterfactual, threshold)
    if present.shape != kept.shape:
        raise ShapeError(f"fo_flags: expected shape {tuple(kept.shape)}, got {tuple(present.shape)}")
    return present, kept


def foreign_object_preservation(cf: Counterfactual, detector: nn.Module, *, threshold: float = 0.5,
                                names=FO_NAMES) -> dict:
    """Singla et al.'s FOP: of the objects the detector finds in x, the fraction found in x_cf."""
    return _summary(*fop_pairs(cf, detector, None, threshold), names)


def foreign_object_preservation_gt(cf: Counterfactual, detector: nn.Module, fo_flags: Tensor, *,
                                   threshold: float = 0.5, names=FO_NAMES) -> dict:
    """Ground-truth FOP: of the objects present in x (``fo_flags`` [B, K]), the fraction found in x_cf."""
    return _summary(*fop_pairs(cf, detector, fo_flags, threshold), names)
