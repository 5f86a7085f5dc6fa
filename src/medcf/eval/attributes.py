"""Attribute preservation: what should NOT change between x and x_cf.

- foreign objects (detector with ``[B, K]`` logits): per object, the mean
  absolute change of the detector's sigmoid probability and the fraction of
  queries whose presence decision (p > 0.5) changed;
- nuisance factors (a regressor returning ``[B, N]``, e.g. rotation, shift,
  contrast): per factor, the mean absolute change of the prediction between x
  and x_cf; with the ground-truth factors of x (``gt_nuisance`` [B, N]) also
  the mean absolute error of the prediction on x_cf against x's true values;
- time per explanation: ``cf.info["seconds"]`` is the explainer's wall time
  for the whole batch (a number) or per query (a [B] tensor/list).

Example:
    >>> attribute_preservation(cf, fo_detector=det)["fo_prob_change"]   # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from medcf.errors import ShapeError
from medcf.eval._common import run
from medcf.eval.fop import FO_NAMES
from medcf.types import Counterfactual


def _named(values: Tensor, names) -> dict[str, float]:
    names = list(names) if names is not None and len(names) == values.numel() else \
        [str(k) for k in range(values.numel())]
    return {n: float(v) for n, v in zip(names, values.tolist(), strict=True)}


def seconds_per_query(cf: Counterfactual) -> Tensor:  # -> [B] float (NaN when not recorded)
    """Per-query explanation time from ``cf.info["seconds"]`` (batch total split evenly)."""
    s = cf.info.get("seconds") if isinstance(cf.info, dict) else None
    if s is None:
        return torch.full((len(cf),), math.nan)
    s = torch.as_tensor(s, dtype=torch.float64).detach().cpu().reshape(-1)
    if s.numel() == 1:
        return (s / len(cf)).expand(len(cf)).float().clone()
    if s.numel() != len(cf):
        raise ShapeError(f"cf.info['seconds']: expected a number or {len(cf)} values, got {s.numel()}")
    return s.float()


def attribute_changes(cf: Counterfactual, *, fo_detector: nn.Module | None = None,
                      nuisance_regressor: nn.Module | None = None,
                      gt_nuisance: Tensor | None = None) -> dict[str, Tensor]:
    """Per-query tensors: fo_prob_change [B, K], fo_flip [B, K], nuisance_change [B, N],
    nuisance_error [B, N] (only for what is given)."""
    out: dict[str, Tensor] = {}
    if fo_detector is not None:
        p_x = torch.sigmoid(run(fo_detector, cf.original))
        p_cf = torch.sigmoid(run(fo_detector, cf.counterfactual))
        out["fo_prob_change"] = (p_cf - p_x).abs()
        out["fo_flip"] = (p_cf > 0.5) != (p_x > 0.5)
    if nuisance_regressor is not None:
        r_x = run(nuisance_regressor, cf.original).reshape(len(cf), -1)
        r_cf = run(nuisance_regressor, cf.counterfactual).reshape(len(cf), -1)
        out["nuisance_change"] = (r_cf - r_x).abs()
        if gt_nuisance is not None:
            gt = torch.as_tensor(gt_nuisance).detach().cpu().float().reshape(len(cf), -1)
            if gt.shape != r_cf.shape:
                raise ShapeError(f"gt_nuisance: expected shape {tuple(r_cf.shape)}, got {tuple(gt.shape)}")
            out["nuisance_error"] = (r_cf - gt).abs()
    return out


def attribute_preservation(cf: Counterfactual, *, fo_detector: nn.Module | None = None,
                           nuisance_regressor: nn.Module | None = None,
                           gt_nuisance: Tensor | None = None, fo_names=FO_NAMES,
                           nuisance_names=None) -> dict:
    """Batch means of ``attribute_changes`` by name, plus ``seconds_per_explanation``."""
    ch = attribute_changes(cf, fo_detector=fo_detector, nuisance_regressor=nuisance_regressor,
                           gt_nuisance=gt_nuisance)
    summary: dict = {}
    for key, names in (("fo_prob_change", fo_names), ("fo_flip", fo_names),
                       ("nuisance_change", nuisance_names), ("nuisance_error", nuisance_names)):
        if key in ch:
            summary[key] = _named(ch[key].float().mean(0), names)
    secs = seconds_per_query(cf)
    summary["seconds_per_explanation"] = float(secs.mean()) if not secs.isnan().all() else math.nan
    return summary
