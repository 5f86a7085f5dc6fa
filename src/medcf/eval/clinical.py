"""Clinical metrics: the cardiothoracic ratio (CTR) and the costophrenic-recess (CPR) score.

On the synthetic cardiomegaly task (label = CTR > 0.5, class 1 = "cardiomegaly")
a valid, faithful counterfactual must change the CTR, as Singla et al. (MedIA
2023) check with a CTR measurement:

- ``ctr_original`` / ``ctr_counterfactual``: a CTR regressor's output (any
  module returning ``[B, 1]`` or ``[B]``) on x and x_cf;
- ``toward_target``: the CTR moves toward the target class: increases when the
  target is cardiomegaly, decreases when it is normal;
- ``reaches_target_side``: x_cf's CTR is on the target's side of 0.5
  (> 0.5 for cardiomegaly, <= 0.5 for normal); ``crossed``: additionally x's
  CTR was on the other side;
- ``monotone``: along ``cf.path`` [T, B, C, H, W] every frame-to-frame CTR step
  goes in the target direction (a step against it of at most ``tol`` is allowed).

On the synthetic effusion task (class 1 = "blunted"), Singla et al.'s second
clinical check is the costophrenic recess: ``cpr_change(cf, scorer)`` is the
fraction of queries whose recess score (sigmoid of a ``cpr-scorer``'s logit,
P(blunted)) crosses 0.5 as the target implies: from sharp (<= 0.5) on x to
blunted (> 0.5) on x_cf when the target is the positive class, from blunted to
sharp otherwise. Queries whose x already scores on the target side count as
not crossed (the same denominator as ``crossed`` for the CTR: all queries).

Example:
    >>> clinical_metrics(cf, ctr_regressor)["toward_target"]        # doctest: +SKIP
    >>> cpr_change(cf, cpr_scorer)                                  # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from medcf.errors import ShapeError
from medcf.eval._common import mean_or_nan, run
from medcf.types import Counterfactual

CTR_THRESHOLD = 0.5
CPR_THRESHOLD = 0.5  # on the recess score P(blunted)


def predict_ctr(regressor: nn.Module, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B]
    out = run(regressor, x)
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (x.shape[0],):
        raise ShapeError(f"CTR regressor: expected [B, 1] or [B] for B={x.shape[0]}, got {tuple(out.shape)}")
    return out


def ctr_per_query(cf: Counterfactual, regressor: nn.Module, *, positive_class: int = 1,
                  tol: float = 0.0) -> dict[str, Tensor]:
    """Per-query tensors [B]: ctr_original, ctr_counterfactual, toward_target,
    reaches_target_side, crossed, and monotone (float, NaN without ``cf.path``)."""
    ctr_x = predict_ctr(regressor, cf.original)
    ctr_cf = predict_ctr(regressor, cf.counterfactual)
    up = cf.target.detach().cpu().long() == positive_class  # target cardiomegaly: CTR should rise
    sign = up.double() * 2 - 1
    side = lambda c: torch.where(up, c > CTR_THRESHOLD, c <= CTR_THRESHOLD)  # noqa: E731
    out = {
        "ctr_original": ctr_x,
        "ctr_counterfactual": ctr_cf,
        "toward_target": (sign * (ctr_cf.double() - ctr_x.double())) > 0,
        "reaches_target_side": side(ctr_cf),
        "crossed": side(ctr_cf) & ~side(ctr_x),
    }
    monotone = torch.full((len(cf),), math.nan)
    if cf.path is not None:
        path = cf.path
        if path.ndim != 5 or path.shape[1] != len(cf):
            raise ShapeError(f"cf.path: expected [T, B, C, H, W] with B={len(cf)}, got {tuple(path.shape)}")
        t, b = path.shape[:2]
        ctr_path = predict_ctr(regressor, path.reshape(t * b, *path.shape[2:])).reshape(t, b)
        steps = sign.view(1, -1) * ctr_path.double().diff(dim=0)  # [T-1, B] in the target direction
        monotone = (steps >= -tol).all(dim=0).float() if t > 1 else torch.ones(b)
    out["monotone"] = monotone
    return out


def clinical_metrics(cf: Counterfactual, regressor: nn.Module, *, positive_class: int = 1,
                     tol: float = 0.0) -> dict:
    """Fractions of queries: toward_target, reaches_target_side, crossed, monotone (NaN without a
    path); mean CTR change in the target direction."""
    q = ctr_per_query(cf, regressor, positive_class=positive_class, tol=tol)
    sign = (cf.target.detach().cpu().long() == positive_class).float() * 2 - 1
    mono = q["monotone"][~q["monotone"].isnan()]
    return {
        "toward_target": mean_or_nan(q["toward_target"]),
        "reaches_target_side": mean_or_nan(q["reaches_target_side"]),
        "crossed": mean_or_nan(q["crossed"]),
        "monotone": mean_or_nan(mono),
        "ctr_change_toward_target": mean_or_nan(sign * (q["ctr_counterfactual"] - q["ctr_original"])),
    }


def recess_score(scorer: nn.Module, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B] P(blunted)
    """Sigmoid of a CPR scorer's single logit (``[B, 1]`` or ``[B]``)."""
    out = run(scorer, x)
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (x.shape[0],):
        raise ShapeError(f"CPR scorer: expected one logit [B, 1] or [B] for B={x.shape[0]}, "
                         f"got {tuple(out.shape)}")
    return torch.sigmoid(out)


def cpr_per_query(cf: Counterfactual, scorer: nn.Module, *, positive_class: int = 1) -> dict[str, Tensor]:
    """Per-query tensors [B]: cpr_original, cpr_counterfactual (recess scores P(blunted)),
    toward_target and crossed (bool)."""
    s_x = recess_score(scorer, cf.original)
    s_cf = recess_score(scorer, cf.counterfactual)
    up = cf.target.detach().cpu().long() == positive_class  # target blunted: the score should rise
    blunted = lambda s: s > CPR_THRESHOLD  # noqa: E731
    on_target = lambda s: torch.where(up, blunted(s), ~blunted(s))  # noqa: E731
    sign = up.double() * 2 - 1
    return {
        "cpr_original": s_x,
        "cpr_counterfactual": s_cf,
        "toward_target": (sign * (s_cf.double() - s_x.double())) > 0,
        "crossed": on_target(s_cf) & ~on_target(s_x),
    }


def cpr_change(cf: Counterfactual, scorer: nn.Module, *, positive_class: int = 1) -> float:
    """Fraction of queries whose recess score crosses 0.5 in the direction the target implies
    (NaN for an empty batch).

    Example:
        >>> cpr_change(cf, load_classifier("runs/cpr-scorer", kind="cpr-scorer"))  # doctest: +SKIP
        0.8
    """
    return mean_or_nan(cpr_per_query(cf, scorer, positive_class=positive_class)["crossed"])
