"""``results.csv`` and ``results.md`` of ``medcf benchmark``: one row per (method, task).

The columns are fixed (``COLUMNS``). A cell is empty where the metric does not
apply or could not be computed, never a placeholder number; every empty cell's
reason is kept in the row's ``notes`` (column -> reason) and listed in results.md.
Rows of an existing results.csv are kept and updated by (method, task), so
``medcf benchmark --methods NAME`` refreshes only that method's rows.

Example:
    >>> rows = merge_rows(read_results("out/results.csv"), [new_row])       # doctest: +SKIP
    >>> write_results_csv("out/results.csv", rows)                           # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from medcf.io import atomic_write_text

COLUMNS: tuple[str, ...] = ("method", "task", "n_queries", "validity", "cv_singla", "oracle_validity", "fop",
                            "fid_domain", "lpips", "l1", "ncc", "auroc", "ctr_cross", "cpr_change",
                            "sec_per_query", "train_min")
COUNTERFACTUAL_COLUMNS = ("validity", "cv_singla", "oracle_validity", "fop", "fid_domain", "lpips", "l1",
                          "ctr_cross", "cpr_change")
DEFINITIONS = {
    "n_queries": "held-out test images explained (the same images for every method)",
    "validity": "fraction whose counterfactual the explained classifier assigns to the target (p >= 0.5)",
    "cv_singla": "Singla et al.'s counterfactual validity: fraction with |f(x) - f(x_cf)| > 0.8 among "
                 "queries with f(x) > 0.8 (f: probability of the original decision)",
    "oracle_validity": "validity judged by an independently trained oracle classifier",
    "fop": "foreign-object preservation: among (query, object) pairs the detector finds in x, the "
           "fraction it still finds in x_cf",
    "fid_domain": "FID of valid counterfactuals vs real test images, oracle features (not comparable "
                  "to Inception FIDs)",
    "lpips": "LPIPS (alex) between x and x_cf",
    "l1": "mean |x_cf - x| (images in [-1, 1])",
    "ncc": "normalised cross-correlation of |difference| (or |attribution|) with the truth region",
    "auroc": "pixel AUROC of |difference| (or |attribution|) for the truth region",
    "ctr_cross": "fraction whose CTR (regressor) crosses 0.5 toward the target (cardiomegaly only)",
    "cpr_change": "fraction whose costophrenic-recess score crosses as the target implies (effusion only)",
    "sec_per_query": "wall seconds of the explainer (or attribution) per query, batched",
    "train_min": "wall minutes to train the method's backbones and fit it (recorded when trained; "
                 "a cached re-run keeps the first figure)",
}


def fmt(v: Any) -> str:
    """A CSV cell: '' for None/NaN, integers as is, floats to 6 significant digits."""
    if v is None or isinstance(v, float) and math.isnan(v):
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def read_results(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of an existing results.csv (empty when absent)."""
    p = Path(path)
    if not p.is_file():
        return []
    with p.open(newline="") as f:
        return list(csv.DictReader(f))


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows with those of the same (method, task) replaced by ``new``; sorted by task, method."""
    key = lambda r: (r["method"], r["task"])  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})
    return sorted(merged.values(), key=lambda r: (r["task"], r["method"].startswith("baseline-"), r["method"]))


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([fmt(r.get(c)) for c in COLUMNS])
    return buf.getvalue()


def write_results_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    atomic_write_text(path, csv_text(rows))
    return Path(path)


def _md_cell(v: Any) -> str:
    s = fmt(v)
    try:
        f = float(s)
        return s if s.lstrip("-").isdigit() else f"{f:.3f}" if abs(f) >= 0.001 or f == 0 else f"{f:.2e}"
    except ValueError:
        return s or "–"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_md_cell(r.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def results_markdown(rows: list[dict], notes: dict[tuple[str, str], dict[str, str]], meta: dict) -> str:
    """results.md: the table, why cells are empty, the definitions, machine/commit/profile/seeds."""
    out = [f"# medcf benchmark: {meta.get('profile_label', meta.get('profile'))}", ""]
    if meta.get("profile") != "full":
        out += [f"**These are {meta.get('profile')}-profile figures**: small models trained for minutes; "
                "they compare the methods under one budget, not at their best.", ""]
    out += [markdown_table(rows), "", "Empty cells (–) mean the metric does not apply or could not be "
            "computed; never a placeholder number. Why, per row:", ""]
    for r in rows:
        k = (r["method"], r["task"])
        reasons = notes.get(k, {})
        if reasons:
            by_reason: dict[str, list[str]] = {}
            for col, why in reasons.items():
                by_reason.setdefault(why, []).append(col)
            text = "; ".join(f"{', '.join(cols)}: {why}" for why, cols in by_reason.items())
            out.append(f"- **{k[0]} / {k[1]}**: {text}")
    skipped = meta.get("not_benchmarked") or {}
    if skipped:
        out += ["", "Not benchmarked (no row):", ""]
        out += [f"- **{m}**: {why}" for m, why in sorted(skipped.items())]
    judges = meta.get("judges") or {}
    if judges:
        out += ["", "Test-split figures of the judges (read the rows against them: a weak classifier "
                "or detector limits what its row can show):", ""]
        for task, roles in judges.items():
            for role, test in (roles or {}).items():
                if test:
                    shown = ", ".join(f"{k} {_md_cell(v)}" if not isinstance(v, dict) else
                                      f"{k} {{{', '.join(f'{a} {_md_cell(b)}' for a, b in v.items())}}}"
                                      for k, v in test.items())
                    out.append(f"- {task} / {role}: {shown}")
    for name, path in (meta.get("studies") or {}).items():
        out += ["", f"The {name} study (its own table and figure): `{path}`"]
    out += ["", "## Columns", ""]
    out += [f"- `{c}`: {d}" for c, d in DEFINITIONS.items()]
    out += ["", "## Run", ""]
    for key in ("command", "profile", "profile_source", "seed", "tasks", "device", "commit", "machine",
                "versions", "wall_s", "cpu_s", "started", "finished"):
        if key in meta:
            out.append(f"- {key}: `{meta[key]}`")
    return "\n".join(out) + "\n"
