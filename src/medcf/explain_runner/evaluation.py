"""Explain a labelled split and score the counterfactuals (``medcf evaluate``, the demo, benchmarks).

Example:
    >>> summary, rows, ex = evaluate_explainer(ls, open_dataset("data", split="test"),
    ...                                        oracle=oracle, limit=64)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from medcf.explain_runner.inputs import OPPOSITE, _classifier_of, explain_dataset
from medcf.types import Counterfactual, Explainer, Target

log = logging.getLogger(__name__)


def dataset_task(dataset: Dataset) -> str | None:
    """The synthetic task of a dataset when it says one and it has a localization truth region
    ("cardiomegaly": heart-border band, "opacity": lesion mask, "effusion": pleural fluid mask).

    Example:
        >>> dataset_task(open_dataset("data/synth-effusion", split="test"))   # doctest: +SKIP
        'effusion'
    """
    from medcf.eval.report import _TASK_REGIONS  # the tasks _truth_region knows (one list)

    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    info = getattr(base, "info", None)
    task = info.get("task") if isinstance(info, dict) else getattr(getattr(base, "config", None), "task", None)
    return task if task in _TASK_REGIONS else None


def _reference_images(dataset: Dataset, classes: set[int] | None, limit: int) -> Tensor:
    """Up to ``limit`` real images [N, C, H, W] of ``dataset`` whose label is in ``classes``."""
    labels = getattr(dataset, "labels", None)
    idx = range(len(dataset))
    if classes is not None and labels is not None:
        idx = [i for i in idx if int(labels[i]) in classes]
    idx = list(idx)[:limit]
    if not idx:
        return torch.empty(0)
    return torch.stack([dataset[i]["image"] for i in idx])


def evaluate_explainer(
    explainer: Explainer,                      # e.g. build_latent_shift(...)
    dataset: Dataset,                          # labelled evaluation images (sample dicts)
    *,
    target: Target | str = OPPOSITE,           # class index/name or "opposite" per query
    oracle: nn.Module | None = None,
    fo_detector: nn.Module | None = None,
    ctr_regressor: nn.Module | None = None,
    cpr_scorer: nn.Module | None = None,       # costophrenic-recess scorer (effusion): cpr_change
    fid: str | None = "domain",                # "domain" (oracle features), "inception" or None
    inception_weights: str | os.PathLike | None = None,
    fid_reference: int = 1000,                 # real images of the target class(es) for FID
    lpips: Any = None,                         # a medcf.eval.LPIPS or None
    limit: int | None = None,
    batch_size: int = 16,
    n_examples: int = 8,                       # counterfactuals kept for the report's figure
    progress: bool = True,
) -> tuple[dict, list[dict], list[Counterfactual]]:
    """Explain ``dataset`` and score the counterfactuals with ``medcf.eval.evaluate_counterfactuals``.

    Returns ``(summary, rows, examples)``: the metric summary, one row per query and the
    first ``n_examples`` queries as single-query counterfactuals (for figures). Batches
    stream: memory stays flat however many queries are scored. Explainers that report a
    per-query ``info["monotone"]`` (progressive exaggeration, DISSECT) add
    ``summary["path_monotone"]``: the fraction of queries whose classifier probability never
    falls along the explainer's sequence. With an oracle, ``summary["hidden_information"]``
    counts the queries whose counterfactual reaches the target for the classifier but not for
    the oracle (``medcf.eval.hidden_information``).

    Example:
        >>> summary, rows, ex = evaluate_explainer(ls, open_dataset("data", split="test"),
        ...                                        oracle=oracle, limit=64)   # doctest: +SKIP
    """
    from collections import deque

    from medcf.eval import evaluate_counterfactuals, hidden_information

    fid_extractor: Any = None
    real = None
    if fid == "domain":
        if oracle is None:
            log.warning("FID skipped: the domain extractor needs an oracle")
        else:
            fid_extractor = oracle
    elif fid == "inception":
        fid_extractor = "inception"
    elif fid not in (None, "none"):
        raise ValueError(f"fid: expected 'domain', 'inception' or None, got {fid!r}")
    if fid_extractor is not None:
        classes = None
        clf = getattr(explainer, "classifier", None)
        if not (isinstance(target, str) and target == OPPOSITE) and not isinstance(target, Tensor):
            from medcf.types import resolve_target

            names = getattr(clf, "class_names", None)
            classes = {int(resolve_target(target, 1, class_names=names)[0])}
        real = _reference_images(dataset, classes, fid_reference)
        if real.shape[0] < 2:
            log.warning("FID skipped: fewer than 2 real reference images")
            fid_extractor, real = None, None

    pending: deque = deque()
    examples: list[Counterfactual] = []
    monotone: list[bool] = []                  # per query, when every batch reports info["monotone"]
    has_monotone = [True]

    def cf_stream():
        for cf, batch in explain_dataset(explainer, dataset, target, batch_size, limit=limit,
                                         progress=progress):
            pending.append(batch)
            flags = cf.info.get("monotone") if isinstance(cf.info, dict) else None
            if isinstance(flags, list) and len(flags) == len(cf):
                monotone.extend(bool(f) for f in flags)
            else:
                has_monotone[0] = False
            for i in range(len(cf)):
                if len(examples) < n_examples:
                    examples.append(cf.select(i))
            yield cf

    class _GT:
        def __iter__(self):
            return self

        def __next__(self):
            if not pending:
                raise StopIteration
            return pending.popleft()

    summary, rows = evaluate_counterfactuals(
        cf_stream(), classifier=_classifier_of(explainer), oracle=oracle,
        fo_detector=fo_detector, ctr_regressor=ctr_regressor, cpr_scorer=cpr_scorer, fid_extractor=fid_extractor,
        real_target_images=real, gt=_GT(), lpips=lpips, task=dataset_task(dataset),
        inception_weights=inception_weights)
    if has_monotone[0] and monotone:
        summary["path_monotone"] = sum(monotone) / len(monotone)
    if oracle is not None and rows:               # classifier flipped, oracle not: fooled only the model
        summary["hidden_information"] = {k: v for k, v in hidden_information(rows).items() if k != "queries"}
    return summary, rows, examples


__all__ = ["dataset_task", "evaluate_explainer"]
