"""One call that scores batches of counterfactuals: a summary dict and per-query rows.

``evaluate_counterfactuals`` is what ``medcf evaluate`` runs. Every metric is
the one defined in its module (validity, fop, fid, lpips, proximity,
localization, clinical, attributes; see docs/metrics.md); a metric is computed
only when what it needs is given, and the summary says which models and which
FID extractor were used. NaN (undefined, e.g. no eligible query) is written as
None so that the output is valid JSON.

Example:
    >>> summary, rows = evaluate_counterfactuals([cf], classifier=clf, oracle=oracle,
    ...                                          fid_extractor=oracle,
    ...                                          real_target_images=[x_real])   # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from medcf.errors import ShapeError
from medcf.eval.attributes import attribute_changes, seconds_per_query
from medcf.eval.clinical import cpr_per_query, ctr_per_query
from medcf.eval.fid import FID
from medcf.eval.fop import FO_NAMES, fop_pairs
from medcf.eval.localization import auroc, boundary_band, ncc
from medcf.eval.lpips import LPIPS, lpips_distance
from medcf.eval.proximity import l1_distance, ssim
from medcf.eval.validity import not_found, original_class_probs, reached_target
from medcf.types import Counterfactual

_TASK_REGIONS = ("cardiomegaly", "opacity", "effusion")


def _clean(v):
    """Python scalars for JSON; NaN -> None."""
    if isinstance(v, Tensor):
        v = v.item()
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(float(v)) else float(v)
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def _mean(t: Tensor) -> float:
    t = t.double()
    t = t[~t.isnan()]
    return float(t.mean()) if t.numel() else math.nan


def _truth_region(g: Mapping, task: str | None, band_width: int) -> Tensor | None:
    if "region" in g:
        return torch.as_tensor(g["region"]).float()
    if task == "cardiomegaly" and "heart_mask" in g:
        return boundary_band(torch.as_tensor(g["heart_mask"]).float(), band_width)
    if task == "opacity" and "lesion_mask" in g:
        return torch.as_tensor(g["lesion_mask"]).float()
    if task == "effusion" and "effusion_mask" in g:
        return torch.as_tensor(g["effusion_mask"]).float()
    return None


def evaluate_counterfactuals(
    cf_batches: Iterable[Counterfactual],
    *,
    classifier: nn.Module,                      # the explained model, logits [B, K]
    oracle: nn.Module | None = None,            # independent classifier, logits [B, K]
    fo_detector: nn.Module | None = None,       # foreign objects, logits [B, 3]
    ctr_regressor: nn.Module | None = None,     # CTR, [B, 1] or [B]
    cpr_scorer: nn.Module | None = None,        # costophrenic recess, one logit of "blunted" [B, 1]
    fid_extractor: str | nn.Module | None = None,  # "inception" or a module with features()
    real_target_images: Iterable[Tensor | Mapping] | Tensor | None = None,  # FID reference set
    gt: Iterable[Mapping] | None = None,        # one sample-dict batch per cf batch
    lpips: LPIPS | None = None,                 # LPIPS metric (medcf.eval.LPIPS)
    nuisance_regressor: nn.Module | None = None,  # nuisance factors, [B, N]
    task: str | None = None,                    # "cardiomegaly" | "opacity" | "effusion": localization truth
    band_width: int = 3,                        # heart-border band half-width (pixels)
    fid_on: str = "valid",                      # "valid" counterfactuals (as DiME) or "all"
    inception_weights: str | os.PathLike | None = None,
    positive_class: int = 1,                    # class index meaning "cardiomegaly"
) -> tuple[dict, list[dict]]:
    """Score counterfactual batches; returns ``(summary, rows)`` (one row per query).

    ``gt`` batches may hold the synthetic sample-dict keys ``index``, ``fo_flags``,
    ``heart_mask``, ``lesion_mask``, ``nuisance`` and an explicit ``region`` mask
    [B, 1, H, W] that overrides the task's truth region.
    """
    if task is not None and task not in _TASK_REGIONS:
        raise ValueError(f"task: expected one of {_TASK_REGIONS} or None, got {task!r}")
    if fid_on not in ("valid", "all"):
        raise ValueError(f"fid_on: expected 'valid' or 'all', got {fid_on!r}")
    fid = None
    if fid_extractor is not None:
        if real_target_images is None:
            raise ValueError("real_target_images: required when fid_extractor is given")
        fid = FID(fid_extractor, inception_weights=inception_weights) \
            if isinstance(fid_extractor, str) else FID(fid_extractor)
        for x in ([real_target_images] if isinstance(real_target_images, Tensor) else real_target_images):
            fid.update(x["image"] if isinstance(x, Mapping) else x, real=True)  # tensors or sample dicts
    gt_iter = iter(gt) if gt is not None else None

    cols: dict[str, list[Tensor]] = defaultdict(list)
    methods: list[str] = []
    start = 0
    for cf in cf_batches:
        b = len(cf)
        g = next(gt_iter, None) if gt_iter is not None else None
        if gt_iter is not None and g is None:
            raise ShapeError("gt: fewer ground-truth batches than counterfactual batches")
        g = g or {}
        if isinstance(cf.info, dict) and cf.info.get("method") and cf.info["method"] not in methods:
            methods.append(str(cf.info["method"]))
        cols["query"].append(torch.arange(start, start + b))
        start += b
        if "index" in g:
            cols["index"].append(torch.as_tensor(g["index"]).reshape(-1).long())
        cols["target"].append(cf.target.detach().cpu().long())
        cols["prob_original"].append(cf.prob_original.detach().cpu().float())
        cols["prob_counterfactual"].append(cf.prob_counterfactual.detach().cpu().float())
        reached = reached_target(cf, classifier)
        cols["reached"].append(reached)
        cols["not_found"].append(not_found(cf, classifier))
        f_x, f_cf = original_class_probs(cf, classifier)
        cols["f_original"].append(f_x)
        cols["f_counterfactual"].append(f_cf)
        if oracle is not None:
            cols["oracle_reached"].append(reached_target(cf, oracle))
        cols["l1"].append(l1_distance(cf.original.cpu(), cf.counterfactual.cpu()))
        cols["ssim"].append(ssim(cf.original.cpu(), cf.counterfactual.cpu()))
        if lpips is not None:
            cols["lpips"].append(lpips_distance(cf.original, cf.counterfactual, lpips))
        if fo_detector is not None:
            present, kept = fop_pairs(cf, fo_detector)
            cols["fo_pairs"].append(present.sum(1))
            cols["fo_preserved"].append((present & kept).sum(1))
            if "fo_flags" in g:
                present, kept = fop_pairs(cf, fo_detector, g["fo_flags"])
                cols["fo_gt_pairs"].append(present.sum(1))
                cols["fo_gt_preserved"].append((present & kept).sum(1))
        if ctr_regressor is not None:
            for k, v in ctr_per_query(cf, ctr_regressor, positive_class=positive_class).items():
                cols[k].append(v)
        if cpr_scorer is not None:
            q = cpr_per_query(cf, cpr_scorer, positive_class=positive_class)
            cols["cpr_original"].append(q["cpr_original"])
            cols["cpr_counterfactual"].append(q["cpr_counterfactual"])
            cols["cpr_toward_target"].append(q["toward_target"])
            cols["cpr_crossed"].append(q["crossed"])
        region = _truth_region(g, task, band_width)
        if region is not None:
            diff = cf.difference.detach().cpu().abs()
            cols["ncc"].append(ncc(diff, region))
            cols["auroc"].append(auroc(diff, region))
        changes = attribute_changes(cf, fo_detector=fo_detector, nuisance_regressor=nuisance_regressor,
                                    gt_nuisance=g.get("nuisance") if nuisance_regressor is not None else None)
        for k, v in changes.items():
            cols[f"{k}_mean"].append(v.float().mean(1))
        cols["seconds"].append(seconds_per_query(cf))
        info = cf.info if isinstance(cf.info, dict) else {}
        if "ood" in info:  # medcf.eval.ood flags (queries unlike the generator's training data)
            cols["reconstruction_error"].append(torch.tensor(info["reconstruction_error"], dtype=torch.float32))
            cols["ood"].append(torch.tensor(info["ood"], dtype=torch.bool))
        if fid is not None:
            keep = reached if fid_on == "valid" else torch.ones(b, dtype=torch.bool)
            if keep.any():
                fid.update(cf.counterfactual[keep.to(cf.counterfactual.device)], real=False)

    data = {k: torch.cat(v) for k, v in cols.items()}
    n = int(data["query"].numel()) if data else 0
    summary: dict = {"n": n, "methods": methods,
                     "classifier": type(classifier).__name__,
                     "oracle": type(oracle).__name__ if oracle is not None else None}
    if n == 0:
        return summary, []
    reached = data["reached"]
    summary["validity"] = _mean(reached)
    summary["not_found_rate"] = _mean(data["not_found"])
    eligible = data["f_original"] > 0.8
    valid = eligible & ((data["f_original"] - data["f_counterfactual"]).abs() > 0.8)
    summary["singla_cv"] = {"cv": int(valid.sum()) / int(eligible.sum()) if eligible.any() else math.nan,
                            "n_eligible": int(eligible.sum()), "n_valid": int(valid.sum())}
    if "oracle_reached" in data:
        summary["oracle_validity"] = _mean(data["oracle_reached"])
        summary["oracle_validity_among_valid"] = _mean(data["oracle_reached"][reached])
    for key in ("l1", "ssim", "lpips"):
        if key in data:
            summary[key] = _mean(data[key])
            summary[f"{key}_among_valid"] = _mean(data[key][reached])
    for prefix in ("fo", "fo_gt"):
        if f"{prefix}_pairs" in data:
            pairs, kept = int(data[f"{prefix}_pairs"].sum()), int(data[f"{prefix}_preserved"].sum())
            summary["fop" if prefix == "fo" else "fop_gt"] = {
                "fop": kept / pairs if pairs else math.nan, "n_pairs": pairs, "n_preserved": kept,
                "objects": list(FO_NAMES)}
    if "ctr_original" in data:
        summary["clinical"] = {k: _mean(data[k]) for k in
                               ("toward_target", "reaches_target_side", "crossed", "monotone")}
        sign = (data["target"] == positive_class).double() * 2 - 1
        summary["clinical"]["ctr_change_toward_target"] = _mean(
            sign * (data["ctr_counterfactual"].double() - data["ctr_original"].double()))
    if "cpr_crossed" in data:
        summary["clinical_cpr"] = {"cpr_change": _mean(data["cpr_crossed"]),
                                   "toward_target": _mean(data["cpr_toward_target"])}
    if "ncc" in data:
        summary["localization"] = {"ncc": _mean(data["ncc"]), "auroc": _mean(data["auroc"]),
                                   "n_scored": int((~data["auroc"].isnan()).sum()),
                                   "region": "given region" if task is None else
                                   (f"heart border band (width {band_width})" if task == "cardiomegaly"
                                    else "pleural fluid mask" if task == "effusion" else "lesion mask")}
    for key in ("fo_prob_change_mean", "fo_flip_mean", "nuisance_change_mean", "nuisance_error_mean"):
        if key in data:
            summary[key.removesuffix("_mean")] = _mean(data[key])
    if "ood" in data:
        summary["ood_rate"] = _mean(data["ood"])
    summary["seconds_per_explanation"] = _mean(data["seconds"])
    if fid is not None:
        result = fid.compute().as_dict() if fid.n_fake >= 2 else {
            "fid": math.nan, "extractor": fid.name, "n_real": fid.n_real, "n_fake": fid.n_fake}
        summary["fid"] = {**result, "fake_set": f"{fid_on} counterfactuals"}

    rows = []
    for i in range(n):
        rows.append({k: _clean(v[i]) for k, v in data.items()})
    return _clean(summary), rows
