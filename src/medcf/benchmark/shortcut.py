"""Shortcut-detection study: do counterfactuals reveal a classifier that learned a spurious marker?

Two cardiomegaly classifiers of the same architecture are trained on the
synthetic benchmark: the *shortcut* one where a spurious token (a hollow square
in the lower-right corner) sits on ``spurious_rate`` (all, by default) of the
positive images and on no negative one, the *clean* one on the same images
without any token. The heart cue is made subtle (CTR in ``ctr_range`` =
0.42-0.58, no gap at 0.5) so that the token is the easier of two equally
predictive cues. Both are explained with Latent Shift
(``medcf.counterfactual.LatentShift``, iterative, taken at ``take_at``) through
the same small VAE and, with ``plan.progressive`` set, also with progressive
exaggeration (``medcf.counterfactual.progressive``: one generator trained for
each classifier, both on the decorrelated data), on the same held-out queries
drawn like the shortcut classifier's training data, each toward the class
opposite to the classifier's decision. Two independent judges read the
counterfactuals:

- the foreign-object detector (kind ``fo-detector``) trained with a fourth
  output, ``spurious``, on images where the token is independent of the label;
  ``marker_change`` = among queries where it could happen (target positive and
  no token in x, or target negative and a token in x), the fraction whose
  counterfactual gains / loses the token as the target implies;
- ``marker_prob_toward``: the detector's token probability change in the target's direction
  (mean over all queries); ``corner_share``: the share of ``sum |x_cf - x|`` in the lower-right
  corner where the token is drawn (``CORNER`` = last 20 % of rows and columns, 4 % of the area);
- the CTR regressor: ``ctr_toward`` (CTR moves toward the target class),
  ``ctr_cross`` (crosses 0.5 as the target implies, ``clinical_metrics``'s
  ``crossed``) and ``ctr_change`` (mean CTR change toward the target).

Expected: the shortcut classifier's counterfactuals add/remove the marker, the
clean classifier's change the heart. The classifiers' accuracies on a test set
where the token is independent of the label (``acc_decorrelated``) and where it
sits only on negatives (``acc_anti``) measure the reliance directly.

The judges and the VAE (and the progressive generators) are trained on
*decorrelated* data (the token on half of all images, independent of the label),
so none of them links the token to the label. Everything runs in memory from
``SyntheticDataset`` (no data folder); models go under ``out_dir`` and are
reused by a re-run with the same plan.

Example:
    >>> from medcf.benchmark.shortcut import ShortcutPlan, run_shortcut_study
    >>> res = run_shortcut_study("runs/shortcut", ShortcutPlan(), device="cpu")   # doctest: +SKIP
    >>> res.explainer["shortcut"]["marker_change"], res.explainer["clean"]["ctr_cross"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from medcf.data.synthetic import FO_NAMES, SynthConfig, SyntheticDataset
from medcf.errors import MedcfError
from medcf.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

CLASSIFIERS = ("shortcut", "clean")
TOKEN = "spurious"                      # the detector's output for the marker
TEST_OFFSET = 10_000_000                # test indices: disjoint from training ones
QUERY_OFFSET = 20_000_000
CORNER = 0.2                            # the token lies in the last 20 % of rows and columns


@dataclass(frozen=True)
class ShortcutPlan:
    """Sizes and steps of the study; ``(widths, steps, batch size)`` per trained model."""

    resolution: int = 32
    spurious_rate: float = 1.0                          # P(token | positive) for the shortcut classifier
    ctr_range: tuple = (0.42, 0.58)                     # SynthConfig: CTR range of every data set
    ctr_gap: float = 0.0                                # SynthConfig: |CTR - 0.5| >= ctr_gap
    n_train: int = 6000                                 # training indices (rendered on the fly)
    n_test: int = 1000                                  # test images per figure
    classifier: tuple = ((8, 16, 32, 64), 400, 32)
    ctr_regressor: tuple = ((8, 16, 32, 64), 600, 32)
    fo_detector: tuple = ((8, 16, 32, 64), 300, 32)
    vae: tuple = ((16,), 1000, 32)                      # one halving: a 16x16 latent at 32 px
    n_queries: int = 64
    take_at: float = 0.99999                            # Latent Shift: counterfactual at p >= take_at
    max_steps: int = 100                                # Latent Shift: frames per query at most
    progressive: tuple | None = None                    # (width, steps, batch): also progressive exaggeration
    progressive_take_at: float = 0.9                    # its counterfactual at p >= this
    seed: int = 0

    def __post_init__(self):
        if not 0.5 < self.spurious_rate <= 1.0:
            raise MedcfError(f"ShortcutPlan.spurious_rate: must be in (0.5, 1], got {self.spurious_rate}")
        for name in ("n_train", "n_test", "n_queries"):
            if getattr(self, name) < 1:
                raise MedcfError(f"ShortcutPlan.{name}: must be positive, got {getattr(self, name)}")
        if self.progressive is not None and not (
                len(self.progressive) == 3 and all(isinstance(v, int) and v > 0 for v in self.progressive)):
            raise MedcfError(f"ShortcutPlan.progressive: (width, steps, batch) of positive integers or None, "
                             f"got {self.progressive}")
        _configs(self)  # a CTR range the synthetic generator refuses is a one-line DataError (a MedcfError)


@dataclass(frozen=True)
class ShortcutResult:
    """Figures of the study (also in ``out_dir/shortcut.json``) and where its files are."""

    classifiers: dict[str, dict[str, float]]    # per classifier: accuracies on three test sets
    explainer: dict[str, dict[str, float]]      # per classifier: Latent Shift figures (see module doc)
    judges: dict[str, Any]                      # test figures of the detector and CTR regressor
    json_path: Path
    markdown_path: Path
    figure_path: Path
    wall_s: float
    progressive: dict[str, dict[str, float]] | None = None  # per classifier, when plan.progressive is set


class _WithTokenFlag(Dataset):
    """A synthetic dataset whose ``fo_flags`` gain the spurious token: [F] -> [F + 1]."""

    channels = 1

    def __init__(self, base: SyntheticDataset):
        self.base = base
        self.resolution = base.resolution
        self.class_names = base.class_names
        self.fo_names = (*FO_NAMES, TOKEN)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = dict(self.base[i])
        item["fo_flags"] = torch.cat([item["fo_flags"], item["spurious"].view(1)])
        return item


def _configs(plan: ShortcutPlan) -> dict[str, SynthConfig]:
    base = SynthConfig(task="cardiomegaly", resolution=plan.resolution, ctr_range=tuple(plan.ctr_range),
                       ctr_gap=plan.ctr_gap)
    return {
        "shortcut": dataclasses.replace(base, spurious_rate=plan.spurious_rate),
        "clean": base,
        "decorrelated": dataclasses.replace(base, spurious_rate=0.5, spurious_negative_rate=0.5),
        "anti": dataclasses.replace(base, spurious_negative_rate=1.0),
    }


def _check_plan_dir(out: Path, plan: ShortcutPlan) -> None:
    """Refuse to mix models of two plans in one directory."""
    path = out / "plan.json"
    mine = json.loads(json.dumps(dataclasses.asdict(plan)))
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != mine:
            raise MedcfError(f"{out}: holds a shortcut study with another plan (plan.json); "
                             "use another output directory")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(mine, indent=2) + "\n")


def _train_models(out: Path, plan: ShortcutPlan, device: str | None, progress: bool) -> dict[str, float]:
    """Train (or reuse) the two classifiers, the judges and the VAE; returns seconds per model."""
    from medcf.train.autoencoders import train_autoencoder
    from medcf.train.classifiers import train_classifier

    cfg = _configs(plan)
    n, seed = plan.n_train, plan.seed
    test = lambda c: SyntheticDataset(c, n=plan.n_test, seed=seed, offset=TEST_OFFSET)  # noqa: E731
    jobs = [  # (name, role, train set, test set, (widths, steps, batch))
        ("shortcut", "classifier", SyntheticDataset(cfg["shortcut"], n, seed), test(cfg["shortcut"]), plan.classifier),
        ("clean", "classifier", SyntheticDataset(cfg["clean"], n, seed), test(cfg["clean"]), plan.classifier),
        ("ctr_regressor", "ctr-regressor", SyntheticDataset(cfg["decorrelated"], n, seed),
         test(cfg["decorrelated"]), plan.ctr_regressor),
        ("fo_detector", "fo-detector", _WithTokenFlag(SyntheticDataset(cfg["decorrelated"], n, seed)),
         _WithTokenFlag(test(cfg["decorrelated"])), plan.fo_detector),
    ]
    seconds: dict[str, float] = {}
    for name, role, train, test_set, (widths, steps, batch) in jobs:
        if (out / name / "model" / "config.json").is_file():
            log.info("shortcut study: reusing %s", out / name)
            continue
        t0 = time.perf_counter()
        train_classifier(train, out / name, role=role, widths=widths, blocks=(1,) * len(widths), steps=steps,
                         batch_size=batch, seed=seed + len(seconds), test_data=test_set, val_every=0,
                         device=device, progress=progress, checkpoint_every=0)
        seconds[name] = time.perf_counter() - t0
    if not (out / "vae" / "model" / "config.json").is_file():
        widths, steps, batch = plan.vae
        t0 = time.perf_counter()
        train_autoencoder(SyntheticDataset(cfg["decorrelated"], n, seed + 7), out / "vae", kind="vae",
                          widths=tuple(widths), steps=steps, batch_size=batch, seed=seed, val_every=0,
                          progress=progress, checkpoint_every=0)
        seconds["vae"] = time.perf_counter() - t0
    if plan.progressive:
        from medcf.train.progressive import train_progressive

        width, steps, batch = plan.progressive
        for name in CLASSIFIERS:  # one generator per classifier, both on the decorrelated data
            if (out / f"progressive_{name}" / "model" / "config.json").is_file():
                continue
            t0 = time.perf_counter()
            train_progressive(SyntheticDataset(cfg["decorrelated"], n, seed + 11), out / f"progressive_{name}",
                              classifier=out / name, steps=steps, batch_size=batch, width=width, seed=seed,
                              progress=progress, checkpoint_every=0)
            seconds[f"progressive_{name}"] = time.perf_counter() - t0
    return seconds


def _batches(ds: Dataset, batch: int) -> list[dict[str, Tensor]]:
    items = [ds[i] for i in range(len(ds))]
    return [{k: torch.stack([it[k] for it in items[s:s + batch]]) for k in items[0]}
            for s in range(0, len(items), batch)]


@torch.no_grad()
def _token_logit(detector, x: Tensor) -> Tensor:  # [B, 1, H, W] -> [B] the detector's token logit
    from medcf.eval._common import run

    col = list(detector.class_names).index(TOKEN)
    return run(detector, x)[:, col]


def _token_present(detector, x: Tensor) -> Tensor:  # [B, 1, H, W] -> [B] bool
    return _token_logit(detector, x) > 0


def corner_share(x: Tensor, cf: Tensor, frac: float = CORNER) -> Tensor:  # [B, C, H, W] x2 -> [B]
    """Share of the change ``sum |cf - x|`` that lies in the lower-right corner where the token is
    drawn (the last ``frac`` of rows and columns: ``frac**2`` of the image's area).

    Example:
        >>> x = torch.zeros(1, 1, 10, 10); cf = x.clone(); cf[..., 9, 9] = 1.0
        >>> float(corner_share(x, cf))
        1.0
    """
    d = (cf - x).abs().sum(1)                                 # [B, H, W]
    h, w = d.shape[-2:]
    r0, c0 = h - max(1, round(frac * h)), w - max(1, round(frac * w))
    total = d.sum((1, 2))
    return torch.where(total > 0, d[:, r0:, c0:].sum((1, 2)) / total.clamp_min(1e-12), torch.zeros_like(total))


def marker_figures(token_x: Tensor, token_cf: Tensor, target: Tensor, positive_class: int = 1) -> dict[str, float]:
    """Marker changes from detector decisions [B] (bool) on x and x_cf and the targets [B].

    ``marker_added``: among target-positive queries without a token, the fraction that gain it;
    ``marker_removed``: among target-negative queries with a token, the fraction that lose it;
    ``marker_change``: both together; ``marker_wrong``: fraction of all queries whose token
    changes against the target (NaN where a denominator is empty).

    Example:
        >>> t = torch.tensor([True, False]); marker_figures(t, ~t, torch.tensor([0, 1]))["marker_change"]
        1.0
    """
    up = target.long() == positive_class
    add_ok, rem_ok = up & ~token_x, ~up & token_x
    added, removed = add_ok & token_cf, rem_ok & ~token_cf
    wrong = (up & token_x & ~token_cf) | (~up & ~token_x & token_cf)
    frac = lambda a, b: float(a.sum()) / float(b.sum()) if int(b.sum()) else float("nan")  # noqa: E731
    return {"marker_added": frac(added, add_ok), "marker_removed": frac(removed, rem_ok),
            "marker_change": frac(added | removed, add_ok | rem_ok),
            "marker_wrong": float(wrong.float().mean()) if len(wrong) else float("nan")}


def judge_counterfactuals(cfs: list, detector, ctr) -> dict[str, float]:
    """The study's figures (module doc) of a list of ``Counterfactual`` batches, read by the
    foreign-object detector (with the ``spurious`` output) and the CTR regressor."""
    from medcf.eval.clinical import clinical_metrics

    orig = torch.cat([c.original.cpu() for c in cfs])
    cf_img = torch.cat([c.counterfactual.cpu() for c in cfs])
    target = torch.cat([c.target.cpu() for c in cfs])
    flipped = torch.cat([c.flipped.cpu() for c in cfs])
    fig = {"validity": float(flipped.float().mean())}
    logit_x, logit_cf = _token_logit(detector, orig), _token_logit(detector, cf_img)
    fig.update(marker_figures(logit_x > 0, logit_cf > 0, target))
    # continuous views: the detector's token probability moved toward the target (+ = gained for
    # target positive, lost for target negative), and the share of the change in the token's corner
    sign = (target == 1).float() * 2 - 1
    fig["marker_prob_toward"] = float((sign * (torch.sigmoid(logit_cf) - torch.sigmoid(logit_x))).mean())
    fig["corner_share"] = float(corner_share(orig, cf_img).mean())
    ctr_figs = [clinical_metrics(c, ctr) for c in cfs]
    weights = np.array([len(c) for c in cfs], float)
    for key, out_key in (("toward_target", "ctr_toward"), ("crossed", "ctr_cross"),
                         ("ctr_change_toward_target", "ctr_change")):
        fig[out_key] = float(np.average([f[key] for f in ctr_figs], weights=weights))
    fig["l1"] = float((cf_img - orig).abs().mean())
    return fig


def _explain_all(out: Path, plan: ShortcutPlan, device: str, progress: bool):
    """Explain the same queries for both classifiers; returns accuracies, then figures and counterfactuals
    per explainer (``{"latent-shift": ..., "progressive": ...}``, the latter when the plan asks for it)."""
    from medcf.classifiers import load_classifier
    from medcf.counterfactual import LatentShift
    from medcf.counterfactual.latent_shift import LatentShiftConfig
    from medcf.counterfactual.progressive import Progressive, ProgressiveConfig
    from medcf.generators.autoencoder import load_autoencoder
    from medcf.generators.progressive import load_progressive
    from medcf.train.classifiers import evaluate

    cfg = _configs(plan)
    vae = load_autoencoder(out / "vae", device=device).eval()
    detector = load_classifier(out / "fo_detector", kind="fo-detector", device=device).eval()
    ctr = load_classifier(out / "ctr_regressor", kind="ctr-regressor", device=device).eval()
    queries = SyntheticDataset(cfg["shortcut"], n=plan.n_queries, seed=plan.seed, offset=QUERY_OFFSET)
    batches = _batches(queries, 16)
    ls_cfg = LatentShiftConfig(iterative=True, take_at=plan.take_at, stop_probability=None,
                               max_steps=plan.max_steps, compose="residual", keep_path=False)
    acc: dict[str, dict[str, float]] = {}
    methods = ("latent-shift", "progressive") if plan.progressive else ("latent-shift",)
    figures: dict[str, dict[str, dict]] = {m: {} for m in methods}
    cfs: dict[str, dict[str, list]] = {m: {} for m in methods}
    for name in CLASSIFIERS:
        clf = load_classifier(out / name, kind="classifier", device=device).eval()
        acc[name] = {}
        for test_name in ("shortcut", "decorrelated", "anti"):
            ds = SyntheticDataset(cfg[test_name], n=plan.n_test, seed=plan.seed, offset=TEST_OFFSET)
            acc[name][f"acc_{test_name}"] = float(evaluate(clf, ds, role="classifier", device=device)["accuracy"])
        for method in methods:
            if method == "latent-shift":
                explainer = LatentShift(autoencoder=vae, classifier=clf, config=ls_cfg)
            else:
                explainer = Progressive(generator=load_progressive(out / f"progressive_{name}", device=device),
                                        classifier=clf, config=ProgressiveConfig(take_at=plan.progressive_take_at))
            t0 = time.perf_counter()
            cfs[method][name] = [explainer.explain(b["image"].to(device)) for b in
                                 tqdm(batches, desc=f"explain ({method}, {name})", disable=not progress)]
            sec = (time.perf_counter() - t0) / len(queries)
            figures[method][name] = judge_counterfactuals(cfs[method][name], detector, ctr) | {"sec_per_query": sec}
    truth = torch.cat([b["spurious"] for b in batches]) > 0.5
    figures["latent-shift"]["queries"] = {
        "n": len(queries), "with_token": float(truth.float().mean()),
        "detector_agrees_on_x": float((_token_present(detector, torch.cat(
            [b["image"] for b in batches]).to(device)) == truth).float().mean())}
    return acc, figures, cfs


_ROWS = (("validity", "validity"),
         ("marker_change", "marker added/removed as the target implies"),
         ("marker_added", "  marker added (target positive, no token in x)"),
         ("marker_removed", "  marker removed (target negative, token in x)"),
         ("marker_wrong", "marker changed against the target"),
         ("marker_prob_toward", "detector's P(token) moved toward the target, mean"),
         ("corner_share", f"share of the change in the token's corner ({CORNER:.0%} x {CORNER:.0%} of the image)"),
         ("ctr_toward", "CTR moves toward the target"),
         ("ctr_cross", "CTR crosses 0.5 as the target implies"),
         ("ctr_change", "mean CTR change toward the target"),
         ("l1", "mean |x_cf - x|"))
METHOD_NAMES = {"latent-shift": "Latent Shift", "progressive": "progressive exaggeration"}


def _markdown(acc, figs: dict, judges, plan: ShortcutPlan) -> str:
    rate = f"{plan.spurious_rate:.0%}"
    lines = ["| figure | shortcut classifier | clean classifier |", "|---|---|---|"]
    for key, label in (("acc_shortcut", f"accuracy, token on {rate} of positives (shortcut data)"),
                       ("acc_decorrelated", "accuracy, token independent of the label"),
                       ("acc_anti", "accuracy, token only on negatives")):
        lines.append(f"| {label} | {acc['shortcut'][key]:.3f} | {acc['clean'][key]:.3f} |")
    for method, per in figs.items():
        lines.append(f"| **{METHOD_NAMES[method]}** | | |")
        lines += [f"| {label} | {per['shortcut'][key]:.3f} | {per['clean'][key]:.3f} |" for key, label in _ROWS]
    q = figs["latent-shift"]["queries"]
    lines += ["", f"{q['n']} queries drawn like the shortcut classifier's training data "
              f"({q['with_token']:.0%} carry the token; the detector agrees with the truth on "
              f"{q['detector_agrees_on_x']:.0%} of them); judges' test figures: "
              f"detector F1 on the token {judges['fo_detector'].get('f1', {}).get(TOKEN, float('nan')):.3f}, "
              f"CTR regressor MAE {judges['ctr_regressor'].get('mae', float('nan')):.4f}.",
              f"Plan: {json.dumps(dataclasses.asdict(plan))}"]
    return "\n".join(lines) + "\n"


def _figure(path: Path, cfs: dict, figs: dict, k: int = 4) -> Path:
    """Queries (input, then counterfactual and difference for both classifiers, per explainer) and the
    headline bars; ``cfs``/``figs``: per explainer, per classifier."""
    from matplotlib.figure import Figure

    cat = lambda name, method, attr: torch.cat([getattr(c, attr) for c in cfs[method][name]]).cpu()  # noqa: E731
    orig, target = cat("shortcut", "latent-shift", "original"), cat("shortcut", "latent-shift", "target")
    pick = [int(i) for i in torch.nonzero(target == 0)[: k // 2, 0]] + \
           [int(i) for i in torch.nonzero(target == 1)[: k - k // 2, 0]]
    rows = [("input", orig, "gray")]
    for method in cfs:
        tag = "LS" if method == "latent-shift" else "PE"
        for name in CLASSIFIERS:
            cf = cat(name, method, "counterfactual")
            rows += [(f"{tag}, {name}: cf", cf, "gray"), (f"{tag}, {name}: cf - x", cf - orig, "bwr")]
    fig = Figure(figsize=(1.5 * len(pick) + 5.5, 1.5 * len(rows) + 0.6), dpi=100)
    left, right = fig.subfigures(1, 2, width_ratios=[1.5 * len(pick), 5.5])
    axes = left.subplots(len(rows), len(pick), squeeze=False)
    for j, i in enumerate(pick):
        for r, (label, imgs, cmap) in enumerate(rows):
            ax = axes[r, j]
            lim = (-1, 1) if cmap == "gray" else (-0.5, 0.5)
            ax.imshow(imgs[i, 0].numpy(), cmap=cmap, vmin=lim[0], vmax=lim[1], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
        axes[0, j].set_title("to " + ("cardiomegaly" if int(target[i]) else "normal"), fontsize=8)
    keys = [("marker_change", "marker added/\nremoved"), ("marker_prob_toward", "P(token)\ntoward target"),
            ("corner_share", "change in the\ntoken's corner"), ("ctr_toward", "CTR toward\ntarget"),
            ("ctr_cross", "CTR crosses\n0.5")]
    xs = np.arange(len(keys))
    bars = [(method, name) for method in cfs for name in CLASSIFIERS]
    colours = {("latent-shift", "shortcut"): "tab:red", ("latent-shift", "clean"): "tab:blue",
               ("progressive", "shortcut"): "salmon", ("progressive", "clean"): "lightskyblue"}
    axs = right.subplots(2, 1, height_ratios=[3, 1]) if len(bars) > 2 else [right.subplots(1, 1)]
    ax = axs[0]
    w = 0.8 / len(bars)
    for b, (method, name) in enumerate(bars):
        ax.bar(xs + (b - (len(bars) - 1) / 2) * w, [figs[method][name][k_] for k_, _ in keys], width=w,
               color=colours[(method, name)], label=f"{METHOD_NAMES[method]}, {name} classifier")
    ax.set_xticks(xs, [lbl for _, lbl in keys], fontsize=7)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_ylim(min(0.0, *(figs[m][n][k_] for m, n in bars for k_, _ in keys)) - 0.05, 1.05)
    ax.set_ylabel("fraction of counterfactuals")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12) if len(bars) > 2 else None)
    ax.set_title("counterfactuals judged by the detector and the CTR regressor", fontsize=9)
    if len(axs) > 1:
        axs[1].axis("off")
    return atomic_write(path, lambda p: fig.savefig(p, format="png"))


def run_shortcut_study(out_dir: str | os.PathLike, plan: ShortcutPlan = ShortcutPlan(), *,
                       device: str = "cpu", progress: bool = True) -> ShortcutResult:
    """Run the study (see module doc) under ``out_dir``; what ``medcf benchmark --task shortcut`` calls.

    Signature: ``run_shortcut_study(out_dir, plan=ShortcutPlan(), *, device="cpu", progress=True)
    -> ShortcutResult``. Trains (or reuses, when ``out_dir`` holds the same plan) five models
    under ``out_dir`` (``shortcut``, ``clean``, ``ctr_regressor``, ``fo_detector``, ``vae``),
    explains ``plan.n_queries`` queries with Latent Shift for both classifiers and writes
    ``shortcut.json`` (plan, figures, seconds), ``shortcut.md`` (the table) and
    ``shortcut.png`` (the figure). A directory holding another plan is a one-line
    ``MedcfError``. ``device``: "cpu", "cuda" or "auto" (the engine's choice).

    Example:
        >>> res = run_shortcut_study("runs/shortcut", ShortcutPlan(n_queries=32))    # doctest: +SKIP
        >>> print(res.markdown_path.read_text())                                      # doctest: +SKIP
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MedcfError(f"{out}: output path exists and is not a directory")
    if device == "cpu":  # accelerate reads this when the engine creates its Accelerator
        os.environ["ACCELERATE_USE_CPU"] = "1"
    _check_plan_dir(out, plan)
    train_s = _train_models(out, plan, None if device == "auto" else device, progress)
    run_device = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    acc, figs, cfs = _explain_all(out, plan, run_device, progress)
    judges = {}
    for name in ("fo_detector", "ctr_regressor"):
        header = json.loads((out / name / "model" / "config.json").read_text())
        judges[name] = header.get("meta", {}).get("test", {})
    md = atomic_write_text(out / "shortcut.md", _markdown(acc, figs, judges, plan))
    png = _figure(out / "shortcut.png", cfs, figs)
    wall = time.perf_counter() - t0
    payload = {"plan": dataclasses.asdict(plan), "classifiers": acc, "explainer": figs["latent-shift"],
               "progressive": figs.get("progressive"), "judges": judges, "train_seconds": train_s, "wall_s": wall}
    js = atomic_write_text(out / "shortcut.json", json.dumps(payload, indent=2, default=float) + "\n")
    return ShortcutResult(classifiers=acc, explainer=figs["latent-shift"], judges=judges, json_path=Path(js),
                          markdown_path=Path(md), figure_path=Path(png), wall_s=wall,
                          progressive=figs.get("progressive"))
