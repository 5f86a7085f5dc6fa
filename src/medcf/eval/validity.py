"""Counterfactual validity: does the counterfactual reach the decision it was asked for?

Definitions (per query i with input x_i, counterfactual x'_i, target class t_i):

- ``reached_target``: the classifier's probability of t_i on x'_i is at least
  ``cf.threshold`` (0.5 by default; the rule of ``Counterfactual.flipped``);
  with more than two classes the decision must also be the argmax.
- ``validity``: the fraction of queries that reached the target (flip rate).
- ``oracle_validity``: the same judged by an independently trained oracle
  classifier (DiME/ACE's "FVA"), which guards against adversarial
  counterfactuals that fool only the explained model.
- ``singla_validity``: Singla et al. (MedIA 2023) counterfactual validity: with
  f the probability of the ORIGINAL decision's class c_i = decision(x_i),
  the fraction of queries with |f(x_i) - f(x'_i)| > 0.8 among the queries with
  f(x_i) > 0.8 (confident originals whose posterior moved across most of [0, 1]).
- ``hidden_information``: the queries whose counterfactual reaches the target for the
  classifier but not for the oracle (the counterfactual fools only the explained
  model: CycleGAN's hidden-information failure, adversarial changes in general).
- ``not_found``: the queries for which no counterfactual was found:
  ``~cf.info["found"]`` when the explainer reports a per-query ``found`` bool
  tensor, otherwise the queries that did not reach the target.

Example:
    >>> validity(cf, classifier)               # 0.93          # doctest: +SKIP
    >>> singla_validity(cf, classifier)["cv"]                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from medcf.errors import ShapeError
from medcf.eval._common import class_probs, decisions, logits_of, mean_or_nan
from medcf.types import Counterfactual


def reached_target(cf: Counterfactual, classifier: nn.Module | None = None) -> Tensor:  # -> [B] bool
    """Per query: the (re-evaluated) decision on the counterfactual is the target.

    Without ``classifier`` the probabilities stored in ``cf`` are used (``cf.flipped``).
    """
    if classifier is None:
        return cf.flipped.detach().cpu().bool()
    logits = logits_of(classifier, cf.counterfactual)  # [B, K]
    probs = class_probs(logits)
    target = cf.target.detach().cpu().long()
    if (target >= probs.shape[1]).any():
        raise ShapeError(f"target: class index {int(target.max())} but the model has {probs.shape[1]} classes")
    ok = probs.gather(1, target.view(-1, 1)).squeeze(1) >= cf.threshold
    if logits.shape[1] > 2:
        ok &= decisions(logits) == target
    return ok


def validity(cf: Counterfactual, classifier: nn.Module | None = None) -> float:
    """Fraction of queries whose counterfactual reaches the target decision (flip rate)."""
    return mean_or_nan(reached_target(cf, classifier))


def oracle_validity(cf: Counterfactual, oracle: nn.Module) -> float:
    """Fraction of queries whose counterfactual an independent ``oracle`` assigns to the target."""
    return mean_or_nan(reached_target(cf, oracle))


def original_class_probs(cf: Counterfactual, classifier: nn.Module) -> tuple[Tensor, Tensor]:
    """(f(x), f(x')) [B] each: the probability of the original decision's class on x and x'."""
    logits_x = logits_of(classifier, cf.original)
    c0 = decisions(logits_x).view(-1, 1)
    f_x = class_probs(logits_x).gather(1, c0).squeeze(1)
    f_cf = class_probs(logits_of(classifier, cf.counterfactual)).gather(1, c0).squeeze(1)
    return f_x, f_cf


def singla_validity(cf: Counterfactual, classifier: nn.Module, *, confidence: float = 0.8,
                    change: float = 0.8) -> dict:
    """Singla et al.'s CV: fraction with |f(x) - f(x')| > ``change`` among f(x) > ``confidence``.

    Returns ``{"cv": float (NaN when no query is eligible), "n_eligible": int, "n_valid": int}``.
    """
    f_x, f_cf = original_class_probs(cf, classifier)
    eligible = f_x > confidence
    valid = eligible & ((f_x - f_cf).abs() > change)
    n_eligible, n_valid = int(eligible.sum()), int(valid.sum())
    return {"cv": n_valid / n_eligible if n_eligible else float("nan"),
            "n_eligible": n_eligible, "n_valid": n_valid}


def not_found(cf: Counterfactual, classifier: nn.Module | None = None) -> Tensor:  # -> [B] bool
    """Per query: no counterfactual was found (``cf.info["found"]`` if given, else not reached)."""
    found = cf.info.get("found") if isinstance(cf.info, dict) else None
    if found is None:
        return ~reached_target(cf, classifier)
    found = torch.as_tensor(found).detach().cpu().bool().reshape(-1)
    if found.numel() != len(cf):
        raise ShapeError(f"cf.info['found']: expected {len(cf)} flags, got {found.numel()}")
    return ~found


def not_found_rate(cf: Counterfactual, classifier: nn.Module | None = None) -> float:
    """Fraction of queries with no counterfactual found."""
    return mean_or_nan(not_found(cf, classifier))


def hidden_information(rows: Iterable[Mapping]) -> dict:
    """Queries whose counterfactual flips the classifier but not the oracle.

    ``rows`` are per-query rows of ``medcf.eval.evaluate_counterfactuals`` scored with an
    oracle (keys ``reached`` and ``oracle_reached``). Returns the count, the rate over all
    queries and over the valid ones, and the flagged query numbers.

    Example:
        >>> hidden_information([{"query": 0, "reached": True, "oracle_reached": False},
        ...                     {"query": 1, "reached": True, "oracle_reached": True}])["count"]
        1
    """
    rows = list(rows)
    if rows and "oracle_reached" not in rows[0]:
        raise ValueError("hidden_information: rows were scored without an oracle (no 'oracle_reached')")
    flagged = [r.get("query", i) for i, r in enumerate(rows) if r["reached"] and not r["oracle_reached"]]
    valid = sum(bool(r["reached"]) for r in rows)
    return {"count": len(flagged), "n": len(rows), "n_valid": valid,
            "rate": len(flagged) / len(rows) if rows else float("nan"),
            "rate_among_valid": len(flagged) / valid if valid else float("nan"), "queries": flagged}
