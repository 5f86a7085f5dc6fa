"""The evaluation report on disk: metrics.json, queries.csv, figures and report.md.

``write_evaluation(out_dir, summary, rows, examples, settings)`` writes

- ``metrics.json``: ``{"summary": ..., "settings": ...}`` (settings: every option,
  checkpoint paths, FID extractor, versions);
- ``queries.csv``: one row per query (the ``rows`` of ``evaluate_counterfactuals``);
- ``examples.png``: original / reconstruction / counterfactual / difference for a few queries;
- ``ctr_hist.png``: CTR before and after, per target class (when a CTR regressor was used);
- ``report.md``: a table of the headline metrics with their definitions and the figures.

Every file is written atomically. ``render_report`` returns the markdown alone.

Example:
    >>> summary, rows, ex = evaluate_explainer(ls, test_ds, oracle=oracle)      # doctest: +SKIP
    >>> write_evaluation("runs/eval", summary, rows, ex, settings={"method": "latent-shift"})  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcf.io import atomic_write, atomic_write_text, json_safe
from medcf.types import Counterfactual

# (summary path, label, definition) of the headline table; missing entries are skipped.
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("n", "queries", "number of explained images"),
    ("validity", "validity", "fraction whose counterfactual reaches the target class (p >= 0.5)"),
    ("not_found_rate", "not found", "fraction the explainer reports as not found"),
    ("singla_cv.cv", "Singla CV", "among confident inputs (p > 0.8), fraction whose probability moves by > 0.8"),
    ("oracle_validity", "oracle validity", "validity judged by the independent oracle"),
    ("oracle_validity_among_valid", "oracle validity (valid)", "oracle validity among classifier-valid queries"),
    ("fop.fop", "FOP", "foreign objects detected in x that the detector still finds in x'"),
    ("fop_gt.fop", "FOP (truth)", "foreign objects present by ground truth still detected in x'"),
    ("clinical.crossed", "CTR crosses 0.5", "CTR (regressor) of x' on the target side of 0.5 and of x on the other"),
    ("clinical.toward_target", "CTR toward target", "CTR moves toward the target class"),
    ("clinical.monotone", "CTR monotone", "every path step moves the CTR toward the target"),
    ("clinical.ctr_change_toward_target", "CTR change", "mean CTR change in the target direction"),
    ("clinical_cpr.cpr_change", "CPR change", "costophrenic-recess score (cpr-scorer) crosses 0.5 as the target implies"),
    ("localization.auroc", "localization AUROC", "|difference| vs the truth region (heart border band / lesion)"),
    ("localization.ncc", "localization NCC", "normalised cross-correlation of |difference| and the truth region"),
    ("l1", "L1", "mean |x - x'|"),
    ("ssim", "SSIM", "structural similarity of x and x'"),
    ("lpips", "LPIPS", "learned perceptual distance of x and x' (AlexNet)"),
    ("fid.fid", "FID", "Frechet distance of valid counterfactuals to real target images"),
    ("seconds_per_explanation", "seconds / explanation", "explainer time per query (batch time split evenly)"),
)


def lookup(d: dict, dotted: str) -> Any:
    """``lookup(d, "a.b")`` is ``d["a"]["b"]`` (None when absent)."""
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def versions() -> dict[str, str]:
    """Versions of medcf, torch, numpy and python, and the platform."""
    import torch

    import medcf

    return {"medcf": medcf.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


# ----------------------------------------------------------------------------- figures


def _save_figure(fig, path: Path) -> Path:
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))


def example_grid(examples: Sequence[Counterfactual], path: str | os.PathLike) -> Path | None:
    """One row per example: original, reconstruction (if any), counterfactual, difference map."""
    from matplotlib.figure import Figure

    from medcf.viz import overlay_heatmap, to_uint8

    if not examples:
        return None
    has_rec = any(cf.reconstruction is not None for cf in examples)
    cols = 4 if has_rec else 3
    fig = Figure(figsize=(2.0 * cols, 2.1 * len(examples)), layout="constrained")
    axes = np.asarray(fig.subplots(len(examples), cols, squeeze=False))
    for r, cf in enumerate(examples):
        names = cf.info.get("class_names") if isinstance(cf.info, dict) else None
        t = int(cf.target[0])
        tname = names[t] if names and t < len(names) else str(t)
        panels = [("original", to_uint8(cf.original[0]), f"p({tname})={float(cf.prob_original[0]):.2f}")]
        if has_rec:
            rec = cf.reconstruction if cf.reconstruction is not None else cf.original
            panels.append(("reconstruction", to_uint8(rec[0]), ""))
        panels.append(("counterfactual", to_uint8(cf.counterfactual[0]),
                       f"p={float(cf.prob_counterfactual[0]):.2f}"))
        panels.append(("difference", overlay_heatmap(cf.original[0], cf.difference[0]), ""))
        for c, (title, img, sub) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(f"{title}\n{sub}" if sub else title, fontsize=7)
            ax.set_axis_off()
    return _save_figure(fig, Path(path))


def ctr_histograms(rows: Sequence[dict], path: str | os.PathLike,
                   class_names: Sequence[str] | None = None) -> Path | None:
    """Histograms of the CTR of inputs and counterfactuals, one panel per target class."""
    from matplotlib.figure import Figure

    have = [r for r in rows if r.get("ctr_original") is not None and r.get("ctr_counterfactual") is not None]
    if not have:
        return None
    targets = sorted({int(r["target"]) for r in have})
    fig = Figure(figsize=(4.2 * len(targets), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(targets)))
    allv = [r["ctr_original"] for r in have] + [r["ctr_counterfactual"] for r in have]
    bins = np.linspace(min(allv) - 0.01, max(allv) + 0.01, 25)
    for ax, t in zip(axes, targets, strict=True):
        sel = [r for r in have if int(r["target"]) == t]
        ax.hist([r["ctr_original"] for r in sel], bins=bins, alpha=0.6, label="input")
        ax.hist([r["ctr_counterfactual"] for r in sel], bins=bins, alpha=0.6, label="counterfactual")
        ax.axvline(0.5, color="k", ls="--", lw=1)
        name = class_names[t] if class_names and t < len(class_names) else f"class {t}"
        ax.set_title(f"target: {name} (n={len(sel)})", fontsize=9)
        ax.set_xlabel("CTR (regressor)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("queries")
    return _save_figure(fig, Path(path))


# ----------------------------------------------------------------------------- markdown


def render_report(summary: dict, settings: dict, figures: dict[str, str] | None = None) -> str:
    """The report.md text: headline table, FID/FOP details, settings, figures."""
    figures = figures or {}
    lines = [f"# Counterfactual evaluation: {settings.get('method', 'explainer')}", ""]
    data = settings.get("data")
    if data:
        lines += [f"Data: `{data}` (split `{settings.get('split')}`), target: "
                  f"`{settings.get('target')}`.", ""]
    lines += ["| metric | value | definition |", "|---|---|---|"]
    for key, label, definition in HEADLINE:
        v = lookup(summary, key)
        if v is None and key not in ("n",):
            continue
        lines.append(f"| {label} | {_fmt(v)} | {definition.replace('|', chr(92) + '|')} |")
    lines.append("")
    fid = summary.get("fid")
    if isinstance(fid, dict):
        lines += [f"FID feature extractor: `{fid.get('extractor')}` ({fid.get('n_real')} real images, "
                  f"{fid.get('n_fake')} images from the {fid.get('fake_set', 'counterfactuals')}). "
                  "Domain-feature FIDs are not comparable to published Inception FIDs.", ""]
    fop = summary.get("fop")
    if isinstance(fop, dict):
        lines += [f"FOP pairs: {fop.get('n_preserved')}/{fop.get('n_pairs')} (objects: "
                  f"{', '.join(fop.get('objects', []))}).", ""]
    loc = summary.get("localization")
    if isinstance(loc, dict):
        lines += [f"Localization truth region: {loc.get('region')}; {loc.get('n_scored')} maps scored.", ""]
    if figures.get("examples"):
        lines += ["## Examples", "",
                  "Original, generator reconstruction, counterfactual and difference "
                  "(red: brighter in the counterfactual, blue: darker).", "",
                  f"![examples]({figures['examples']})", ""]
    if figures.get("ctr_hist"):
        lines += ["## CTR before and after", "",
                  "Cardiothoracic ratio measured by the CTR regressor on the inputs and on the "
                  "counterfactuals; the dashed line is the decision boundary 0.5.", "",
                  f"![CTR histograms]({figures['ctr_hist']})", ""]
    lines += ["## Settings", "", "```json", json.dumps(settings, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def _csv_text(rows: Sequence[dict]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue()


def write_evaluation(out_dir: str | os.PathLike, summary: dict, rows: Sequence[dict],
                     examples: Sequence[Counterfactual], settings: dict) -> dict[str, Path]:
    """Write metrics.json, queries.csv, examples.png, ctr_hist.png and report.md into ``out_dir``.

    Example:
        >>> paths = write_evaluation("runs/eval", summary, rows, examples, {"method": "latent-shift"})  # doctest: +SKIP
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = json_safe({**settings, "fid_extractor": lookup(summary, "fid.extractor"),
                           "versions": versions()})
    summary = json_safe(summary)
    paths: dict[str, Path] = {}
    figures: dict[str, str] = {}
    names = None
    for cf in examples:
        names = cf.info.get("class_names") if isinstance(cf.info, dict) else None
        break
    p = example_grid(examples, out / "examples.png")
    if p is not None:
        paths["examples"], figures["examples"] = p, p.name
    p = ctr_histograms(rows, out / "ctr_hist.png", names)
    if p is not None:
        paths["ctr_hist"], figures["ctr_hist"] = p, p.name
    paths["metrics"] = atomic_write_text(
        out / "metrics.json", json.dumps({"summary": summary, "settings": settings}, indent=2,
                                         default=str, allow_nan=False) + "\n")
    paths["queries"] = atomic_write_text(out / "queries.csv", _csv_text(rows))
    paths["report"] = atomic_write_text(out / "report.md", render_report(summary, settings, figures))
    return paths
