"""Training recipe for progressive exaggeration (Singla et al.) and DISSECT (Ghandeharioun
et al.) on the shared engine: a generator trained FOR one classifier.

Per step, with the explained classifier ``f`` frozen (probability of class 1, ``p``),
``b_x`` the bin of ``f(x)``, a random target bin ``c`` and (DISSECT) each concept ``k``:

1. ``x_c = G(x, c, k)``;
2. discriminator (hinge loss, projection on the bin): real ``(x, b_x)`` vs fake ``(x_c, c)``;
3. generator: ``adv_weight`` x hinge adversarial term
   + ``cls_weight`` x classifier consistency, BCE(f(x_c), target of bin c) (= KL up to a constant);
     the target is the bin's centre, or with ``bin_targets="data"`` the classifier's mean posterior
     over the training images in the bin (``bin_targets_from_data``)
   + ``rec_weight`` x (L1(G(x, b_x, k), x) + L1(G(x_c, b_x, k), x))  (reconstruction + cycle)
   + ``fo_weight`` x L1 between x_c and x inside the foreign-object masks of the batch
     (``fo_masks`` of the synthetic benchmark; the MedIA version's object-preservation term)
   + ``tv_weight`` x total variation of x_c - x (``change_tv``; off by default)
   (with ``consistency_aug`` the consistency term reads a randomly translated / noised / blurred /
   weakened copy of x_c, ``medcf.train.consistency_aug``; ``target_scale`` multiplies the targets'
   log-odds; both off by default and, on the 64 px benchmark, not better: docs/progressive.md)
   + DISSECT only: ``dis_weight`` x CE(R(x, x_c), k), the disentangler R (Adam at ``dis_lr``)
     trained jointly to tell which concept produced the change.

DISSECT batches: ``ceil(batch_size / K)`` images, each rendered under every concept with
the same target bin (so R compares the K concepts' edits of one image toward one posterior,
and every batch holds every concept); pairs whose target bin is the image's own bin
(``c == b_x``: G must return x, so nothing tells the concepts apart) are left out of R's
loss, as Ghandeharioun et al. label them "no concept".

Weights: Singla et al. use consistency 1 and reconstruction 100 over long trainings; at
medcf's CPU budgets (hundreds to a few thousand steps) that generator stays the identity
(measured: consistency BCE 3.3 after 300 steps, unchanged), so the defaults are 20 and 10
(BCE 0.67 after 300 steps, near the bins' entropy floor of 0.47; docs/progressive.md).
DISSECT's R: Ghandeharioun et al. weight it 10x the consistency term. medcf's earlier recipe
(weight 1, R fed the raw pair, random concepts, R at G's learning rate) left R's gradient
on G at ~2 % of the consistency term's and R's loss at chance (ln K) in every real run (and,
on the test's toy, with weight 30 too); with R reading the normalised change (``Disentangler``), the paired
batches and ``dis_lr`` 1e-3, weight 30 (1.5x consistency) gets R to ~99 % accuracy
(docs/progressive.md, tests/test_dissect.py).

Oracle validity at 64 px (issue 13): the recipe above makes f-specific texture edits (the
independent oracle agreed with 0.52 of the counterfactuals on the val split); a change made at
16 x 16 (``delta_scale=4``, the generator's config) with the data's bin targets moves both
judges (docs/progressive.md, "What moves the oracle"). ``d_steps`` / ``d_width`` / ``d_lr`` and
``adv_weight`` set the discriminator's share (tried; not what limited it).

The classifier's fingerprint (``classifier_hash``) is stored in the model's meta; the
explainer refuses another classifier unless forced.

Example:
    >>> res = train_progressive("data/synth64", "runs/prog", classifier="runs/demo/classifier",
    ...                         steps=2000)                                    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medcf.errors import DataError, MedcfError
from medcf.generators.progressive import (
    Disentangler,
    ProgressiveGenerator,
    ProgressiveGeneratorConfig,
    ProjectionDiscriminator,
    bin_center,
    posterior_bin,
)
from medcf.train.consistency_aug import ConsistencyAug

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedProgressive:
    model_dir: Path
    classifier_hash: str
    wall_s: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


DIS_WEIGHT = 30.0  # DISSECT's disentangler weight; with cls_weight 20 (module doc, docs/progressive.md)


def concept_batch(x: torch.Tensor, masks, concepts: int):
    """DISSECT's batch: the first ``ceil(B / K)`` images of ``x`` [B, C, H, W], each repeated under
    every concept (concept-major), cut to B; returns (x [B, C, H, W], masks or None, concepts [B]).

    Example:
        >>> xs, _, k = concept_batch(torch.zeros(5, 1, 8, 8), None, 2)
        >>> k.tolist()
        [0, 0, 0, 1, 1]
    """
    b = x.shape[0]
    h = -(-b // concepts)
    k = torch.arange(concepts, device=x.device).repeat_interleave(h)[:b]
    x = x[:h].repeat(concepts, 1, 1, 1)[:b]
    if isinstance(masks, torch.Tensor) and masks.ndim == 4:
        masks = masks[:h].repeat(concepts, 1, 1, 1)[:b]
    return x, masks, k


def bin_targets_from_data(classifier: nn.Module, dataset, bins: int, *, limit: int = 4096,
                          batch: int = 256) -> torch.Tensor:
    """[bins] consistency targets: per bin, the classifier's mean class-1 probability over the
    (first ``limit``) training images whose probability falls in that bin; the bin's centre where
    none does. For a confident classifier the end bins' means lie far past the centres (medcf's
    64 px classifier: 0.011 / 0.987 against 0.05 / 0.95), so G is asked for images as confident
    as the real ones of the bin rather than for the bin's border region.

    Example:
        >>> t = bin_targets_from_data(clf, train_ds, 10)                     # doctest: +SKIP
    """
    n = min(len(dataset), limit)
    probs = []
    with torch.no_grad():
        for i in range(0, n, batch):
            x = torch.stack([dataset[j]["image"] for j in range(i, min(i + batch, n))])   # [b, C, H, W]
            probs.append(torch.sigmoid(prob_class1(classifier, x)).float().cpu())
    p = torch.cat(probs)                                                                # [n]
    b = posterior_bin(p, bins)
    count = torch.bincount(b, minlength=bins).float()                                   # [bins]
    total = torch.zeros(bins).index_add_(0, b, p)
    centre = bin_center(torch.arange(bins), bins)
    return torch.where(count > 0, total / count.clamp_min(1.0), centre)


def change_tv(d: torch.Tensor) -> torch.Tensor:
    """Total variation of a change d [B, C, H, W]: mean |vertical| + mean |horizontal| neighbour
    difference (a scalar). Per unit of L1, a solid band of width w costs about 2 / w, a one-pixel
    streak about 2, so weighting it favours region-like edits over texture-like ones.

    Example:
        >>> band = torch.zeros(1, 1, 8, 8); band[..., 2:6] = 1.0
        >>> round(float(change_tv(band)), 3)                # 2 steps in 7 differences per row
        0.286
    """
    return (d[:, :, 1:] - d[:, :, :-1]).abs().mean() + (d[..., 1:] - d[..., :-1]).abs().mean()


def classifier_fingerprint(classifier: nn.Module) -> str:
    """16 hex digits identifying a classifier by its config and weights."""
    from medcf.generators.fingerprint import generator_fingerprint

    return generator_fingerprint(classifier)


def prob_class1(classifier: nn.Module, images) -> torch.Tensor:
    """[B, C, H, W] -> [B] log-odds of class 1 of a binary classifier."""
    from medcf.counterfactual.base import log_odds_of

    logits = classifier(images).float()
    if logits.ndim != 2 or logits.shape[1] > 2:
        raise MedcfError(f"progressive: the classifier must be binary (logits [B, 1] or [B, 2]), "
                         f"got {tuple(logits.shape)}")
    return log_odds_of(logits, torch.ones(images.shape[0], dtype=torch.long, device=images.device))


def train_progressive(
    data,                                   # dataset dir (open_dataset) or a train Dataset
    out_dir: str | os.PathLike,             # run directory (RUN_DIR/model is the generator)
    *,
    classifier,                             # the classifier to explain: run/model dir or nn.Module
    bins: int = 10,                         # posterior bins
    concepts: int = 1,                      # K > 1: DISSECT
    steps: int = 3000,
    batch_size: int = 16,
    lr: float = 2e-4,                       # Adam (0.0, 0.9) for G, D and R
    width: int = 32,                        # generator width (discriminator/disentangler width too)
    downsamples: int = 2,
    blocks: int = 2,
    delta_scale: int = 1,                   # the change at resolution / delta_scale (ProgressiveGeneratorConfig)
    adv_weight: float = 1.0,
    cls_weight: float = 20.0,               # classifier consistency (Singla et al.: 1; see the module doc)
    rec_weight: float = 10.0,               # reconstruction and cycle (Singla et al.: 100)
    fo_weight: float = 100.0,               # foreign-object preservation (0 = off)
    tv_weight: float = 0.0,                 # total variation of the change G(x, c) - x (0 = off)
    bin_targets: str = "centre",            # consistency target per bin: "centre" or "data" (bin_targets_from_data)
    consistency_aug=None,                   # ConsistencyAug or spec "shift=2,noise=0.02" (None: off)
    target_scale: float = 1.0,              # the targets' log-odds times this (> 1: more confident end bins)
    dis_weight: float = DIS_WEIGHT,         # DISSECT disentangler term (see the module doc)
    dis_lr: float = 1e-3,                   # the disentangler's Adam learning rate
    d_steps: int = 1,                       # discriminator updates per generator update
    d_width: int | None = None,             # discriminator width (None: ``width``)
    d_lr: float | None = None,              # discriminator learning rate (None: ``lr``)
    ema_decay: float | None = None,
    seed: int = 0,
    resolution: int | None = None,
    resume: bool = False,
    progress: bool = True,
    log_every: int = 50,
    checkpoint_every: int = 500,
) -> TrainedProgressive:
    """Train a classifier-conditioned generator; returns where it is and the classifier hash.

    Example:
        >>> train_progressive("data", "runs/dissect", classifier=clf, concepts=2, steps=100)  # doctest: +SKIP
    """
    from medcf.train.engine import TrainConfig, Trainer

    if steps < 1 or batch_size < 2 or lr <= 0 or dis_lr <= 0 or concepts < 1:
        raise MedcfError(f"progressive: steps >= 1, batch_size >= 2, lr > 0, dis_lr > 0, concepts >= 1 needed, "
                         f"got {steps}, {batch_size}, {lr}, {dis_lr}, {concepts}")
    if not 1 <= d_steps <= 10 or (d_width is not None and not 1 <= d_width <= 512) or (d_lr is not None
                                                                                       and d_lr <= 0):
        raise MedcfError(f"progressive: d_steps in 1..10, d_width in 1..512, d_lr > 0 needed, "
                         f"got {d_steps}, {d_width}, {d_lr}")
    if not 0 < target_scale <= 10:
        raise MedcfError(f"progressive: target_scale must be in (0, 10], got {target_scale}")
    if bin_targets not in ("centre", "data"):
        raise MedcfError(f"progressive: bin_targets must be 'centre' or 'data', got {bin_targets!r}")
    aug = ConsistencyAug.parse(consistency_aug)
    if min(adv_weight, cls_weight, rec_weight, fo_weight, tv_weight, dis_weight) < 0:
        raise MedcfError("progressive: loss weights must be >= 0")
    t0 = time.perf_counter()
    if isinstance(classifier, (str, os.PathLike)):
        from medcf.explain_runner import load_explained_classifier

        clf = load_explained_classifier(classifier)
        where_clf = str(classifier)
    else:
        clf, where_clf = classifier, "module"
    clf = clf.eval().requires_grad_(False)
    if isinstance(data, (str, os.PathLike)):
        from medcf.data import open_dataset

        if not Path(data).exists():
            raise DataError(f"{data}: data not found")
        train_ds: Dataset = open_dataset(data, split="train", resolution=resolution)
        where = str(data)
    else:
        train_ds, where = data, "data"
    if len(train_ds) < batch_size:
        raise DataError(f"{where}: {len(train_ds)} training images, fewer than --batch-size {batch_size}")
    first = train_ds[0]["image"]
    channels, res = int(first.shape[0]), int(first.shape[-1])
    try:
        config = ProgressiveGeneratorConfig(resolution=res, channels=channels, bins=bins, concepts=concepts,
                                            width=width, downsamples=downsamples, blocks=blocks,
                                            delta_scale=delta_scale)
    except ValueError as e:
        raise MedcfError(f"progressive: {e}") from None
    with torch.no_grad():
        prob_class1(clf, first[None])  # binary check before training starts
    chash = classifier_fingerprint(clf)
    targets = bin_center(torch.arange(bins), bins)                          # [bins]
    if bin_targets == "data":
        targets = bin_targets_from_data(clf, train_ds, bins)
    if target_scale != 1.0:
        targets = torch.sigmoid(torch.logit(targets.double()) * target_scale).float()
    log.info("progressive: consistency targets per bin %s", [round(float(t), 4) for t in targets])
    G = ProgressiveGenerator(config, seed=seed)
    G.classifier_hash = chash
    D = ProjectionDiscriminator(channels, res, bins, width=width if d_width is None else d_width)
    models: dict[str, nn.Module] = {"generator": G, "discriminator": D}
    betas = (0.0, 0.9)
    optimizers = {"generator": torch.optim.Adam(G.parameters(), lr=lr, betas=betas),
                  "discriminator": torch.optim.Adam(D.parameters(), lr=lr if d_lr is None else d_lr, betas=betas)}
    if concepts > 1:
        R = Disentangler(channels, res, concepts, width=width)
        models["disentangler"] = R
        optimizers["disentangler"] = torch.optim.Adam(R.parameters(), lr=dis_lr, betas=betas)

    def step_fn(tr, batch):
        gen, disc = tr.models["generator"], tr.models["discriminator"]
        opt_g, opt_d = tr.optimizers["generator"], tr.optimizers["discriminator"]
        f = clf.to(tr.device)
        x, masks = batch["image"], batch.get("fo_masks")
        b = x.shape[0]
        c = torch.randint(0, bins, (b,), generator=tr.generator, device=tr.device)
        k = torch.randint(0, concepts, (b,), generator=tr.generator, device=tr.device)  # K = 1: all 0
        if concepts > 1:  # ceil(b / K) images, each under every concept with one target bin
            x, masks, k = concept_batch(x, masks, concepts)
            c = c[: -(-b // concepts)].repeat(concepts)[:b]
        with torch.no_grad():
            bx = posterior_bin(torch.sigmoid(prob_class1(f, x)), bins)
        xc = gen(x, c, k)                                                   # [b, C, H, W]

        # 1. discriminator: hinge loss, conditioned on the bin (d_steps updates on this batch)
        for _ in range(d_steps):
            loss_d = F.relu(1 - disc(x, bx)).mean() + F.relu(1 + disc(xc.detach(), c)).mean()
            opt_d.zero_grad(set_to_none=True)
            tr.backward(loss_d)
            opt_d.step()

        # 2. generator (+ disentangler)
        adv = -disc(xc, c).mean()
        xf = aug(xc, tr.generator, x) if aug.active else xc                   # [b, C, H, W] what f judges
        cls = F.binary_cross_entropy_with_logits(prob_class1(f, xf), targets.to(xc.device)[c])
        rec = (gen(x, bx, k) - x).abs().mean()
        cyc = (gen(xc, bx, k) - x).abs().mean()
        loss_g = adv_weight * adv + cls_weight * cls + rec_weight * (rec + cyc)
        stats = {"loss_d": loss_d.detach(), "adv": adv.detach(), "cls": cls.detach(), "rec": rec.detach(),
                 "cyc": cyc.detach()}
        if tv_weight > 0:
            tv = change_tv(xc - x)
            loss_g = loss_g + tv_weight * tv
            stats["tv"] = tv.detach()
        if fo_weight > 0 and isinstance(masks, torch.Tensor) and masks.ndim == 4 and masks.shape[1] > 0:
            m = (masks.amax(1, keepdim=True) > 0).float()                   # [b, 1, H, W] any object
            m = F.max_pool2d(m, 3, stride=1, padding=1)                     # and its border
            fo = ((xc - x).abs() * m).sum() / (m.sum() * x.shape[1]).clamp_min(1.0)
            loss_g = loss_g + fo_weight * fo
            stats["fo"] = fo.detach()
        if concepts > 1:
            opt_r = tr.optimizers["disentangler"]
            logits_r = tr.models["disentangler"](x, xc)                    # [b, K]
            moved = (c != bx).float()                                       # [b] c == b_x: no change to tell
            dis = (F.cross_entropy(logits_r, k, reduction="none") * moved).sum() / moved.sum().clamp_min(1.0)
            loss_g = loss_g + dis_weight * dis
            stats["dis"] = dis.detach()
            stats["dis_acc"] = ((logits_r.argmax(1) == k).float() * moved).sum() / moved.sum().clamp_min(1.0)
            opt_r.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        tr.backward(loss_g)
        opt_g.step()
        if concepts > 1:
            opt_r.step()
        stats["loss_g"] = loss_g.detach()
        return {key: float(v) for key, v in stats.items()}

    run_info = {"recipe": "medcf.train.progressive.train_progressive", "data": where, "classifier": where_clf,
                "classifier_hash": chash, "bins": bins, "concepts": concepts, "steps": steps,
                "batch_size": batch_size, "lr": lr, "width": width, "downsamples": downsamples, "blocks": blocks,
                "delta_scale": delta_scale,
                "weights": {"adv": adv_weight, "cls": cls_weight, "rec": rec_weight, "fo": fo_weight,
                            "tv": tv_weight, "dis": dis_weight}, "dis_lr": dis_lr,
                "d_steps": d_steps, "d_width": d_width, "d_lr": d_lr,
                "bin_targets": bin_targets, "consistency_aug": aug.spec(), "target_scale": target_scale,
                "targets": [float(t) for t in targets], "ema_decay": ema_decay, "seed": seed, "resolution": res}
    tconf = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=batch_size, seed=seed, log_every=log_every,
                        checkpoint_every=checkpoint_every, ema_decay=ema_decay, progress=progress)
    trainer = Trainer(tconf, models=models, optimizers=optimizers, dataset=train_ds, step_fn=step_fn,
                      export="generator", run_info=run_info)
    model_dir = Path(trainer.fit(resume=resume))
    return TrainedProgressive(model_dir=model_dir, classifier_hash=chash, wall_s=time.perf_counter() - t0)


def prepare_benchmark(data_dir, out_dir, *, classifier_dir, task: str, profile: dict[str, Any], device="cpu",
                      seed: int = 0, progress: bool = True, concepts: int = 1) -> dict:
    """``MethodSpec.prepare`` of ``progressive`` (``concepts`` 1) and ``dissect`` (``profile["concepts"]``,
    default 2): train (or reuse) the generator for this classifier; profile keys steps, batch_size,
    width, bins, lr (defaults 3000, 16, 32, 10, 2e-4), cls_weight, rec_weight, optionally adv_weight,
    tv_weight, d_steps, d_width, d_lr, bin_targets, target_scale, consistency_aug (cached under their
    values only when set) and, for DISSECT, dis_weight, dis_lr; its ``explain`` table passes to ``build``."""
    from medcf.benchmark.cache import cached_stage, stage_checkpoint_every

    k = int(profile.get("concepts", concepts))
    cfg = {"data": str(data_dir), "classifier": str(classifier_dir), "concepts": k,
           "steps": int(profile.get("steps", 3000)), "batch_size": int(profile.get("batch_size", 16)),
           "width": int(profile.get("width", 32)), "bins": int(profile.get("bins", 10)),
           "lr": float(profile.get("lr", 2e-4)), "cls_weight": float(profile.get("cls_weight", 20.0)),
           "rec_weight": float(profile.get("rec_weight", 10.0)), "seed": seed}
    extra = {}
    if k > 1:  # DISSECT only (progressive's cache key stays as it was); the recipe's batching changed
        extra = {"dis_weight": float(profile.get("dis_weight", DIS_WEIGHT)),
                 "dis_lr": float(profile.get("dis_lr", 1e-3)), "concept_batch": 1}
        cfg |= extra
    knobs = {"delta_scale": int, "adv_weight": float, "tv_weight": float, "d_steps": int, "d_width": int, "d_lr": float,
             "bin_targets": str, "target_scale": float, "consistency_aug": lambda v: ConsistencyAug.parse(v).spec()}
    set_knobs = {key: cast(profile[key]) for key, cast in knobs.items() if key in profile}
    cfg |= set_knobs  # only the keys a profile sets enter the cache key (older stages stay valid)
    name = "dissect" if k > 1 else "progressive"
    run = cached_stage(out_dir, name, cfg, lambda d, resume: train_progressive(
        data_dir, d, classifier=classifier_dir, concepts=k, bins=cfg["bins"], steps=cfg["steps"],
        batch_size=cfg["batch_size"], width=cfg["width"], lr=cfg["lr"], cls_weight=cfg["cls_weight"],
        rec_weight=cfg["rec_weight"], seed=seed, resume=resume,
        progress=progress, checkpoint_every=stage_checkpoint_every(cfg["steps"]), **set_knobs,
        **{key: v for key, v in extra.items() if key != "concept_batch"}))
    return {"generator_dir": str(run), **profile.get("explain", {})}


def prepare_dissect(data_dir, out_dir, **kwargs) -> dict:
    """``MethodSpec.prepare`` of ``dissect`` (K = ``profile["concepts"]``, default 2)."""
    return prepare_benchmark(data_dir, out_dir, concepts=2, **kwargs)
