"""Training recipe for VA-GAN (``medcf train vagan``): map generator + WGAN-GP critic.

Baumgartner et al. (CVPR 2018). For source-class images x, ``y = clamp(x + M(x))``;
the critic D separates y from real target-class images with the WGAN-GP loss
``D(y) - D(real) + gp_weight · GP`` (``medcf.train.gan.gradient_penalty``, weight 10);
the first ``critic_warmup`` engine steps train the critic alone (on y = x, i.e. source
against target images), then every ``n_critic``-th engine step the map generator M is
updated on ``-D(y) + l1_weight · mean|M(x)|``. One engine step is one critic update, so
resume is exact at any step.

Why the warm-up and the slow map (``map_lr`` 1e-5 against the critic's ``lr`` 1e-4):
the map's only guide is the critic's input gradient. With both at 1e-4 and no warm-up
(medcf's first recipe), the map moved faster than the critic could follow: it learned
global intensity changes the critic had not yet learned to reject (the Wasserstein
estimate went negative: the map fooled the critic), and on the 64 px opacity task it
never learned to remove the lesion (docs/vagan.md). The paper's code also gives the
critic a head start (100 critic updates per map update for the first 25). A critic
trained alone on source vs target images for a few hundred updates already has an input
gradient that points at the lesion; a map 10x slower than the critic then follows a
critic that keeps up with it.

Model selection: the Wasserstein estimate is a poor guide (the authors chose by eye),
so every ``snapshot_every`` steps M is saved to ``RUN/snapshots/STEP`` and scored on
held-out source-class images (the val split where the data has one): with an
``oracle`` (an independently trained medcf classifier), ``oracle_validity`` is the
fraction of ``y`` the oracle assigns to the target class and ``l1`` the mean |y - x|;
the score is ``oracle_validity - proximity_weight · l1``. After training, the best
snapshot is copied to ``RUN/model`` and its config's ``meta["selection"]`` says which
one and why (``medcf info RUN`` shows it). Without an oracle the last snapshot is kept
and the selection says so.

Example:
    >>> res = train_vagan("data/opacity64", "runs/vagan", source="opacity", target="normal",
    ...                   oracle="runs/oracle", steps=1000)                   # doctest: +SKIP
    >>> res.selection["step"], res.selection["score"]                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from medcf.errors import DataError, MedcfError
from medcf.generators.dcgan import DCGANConfig, DCGANCritic
from medcf.generators.vagan import VAGANConfig, VAGANMap
from medcf.io import read_header
from medcf.train.gan import gradient_penalty
from medcf.train.recipe_common import frozen, optimizer_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedVAGAN:
    model_dir: Path
    steps: int
    selection: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


def _labels(ds: Dataset) -> list[int]:
    labels = getattr(ds, "labels", None)
    if labels is not None:
        return [int(v) for v in labels]
    return [int(ds[i]["label"]) for i in range(len(ds))]


def resolve_class(value: str | int, names: tuple[str, ...], flag: str, where: str) -> int:
    """``--source`` / ``--target`` (a class name or index) -> class index; one-line error otherwise."""
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        if 0 <= int(value) < len(names):
            return int(value)
    raise DataError(f"{where}: {flag} {value!r} is not a class of the data (classes: {list(names)})")


class SourceTargetPairs(Dataset):
    """Item i: ``{"image": source image, "real": target image}`` with a seeded fixed pairing;
    length max(|source|, |target|) (the shorter class cycles)."""

    def __init__(self, ds: Dataset, src: list[int], tgt: list[int], *, seed: int = 0):
        self.ds, self.src, self.tgt = ds, src, tgt
        g = torch.Generator().manual_seed(seed)
        n = len(self)
        self.order_src = (torch.randperm(n, generator=g) % len(src)).tolist()
        self.order_tgt = (torch.randperm(n, generator=g) % len(tgt)).tolist()

    def __len__(self) -> int:
        return max(len(self.src), len(self.tgt))

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.ds[self.src[self.order_src[i]]]["image"],
                "real": self.ds[self.tgt[self.order_tgt[i]]]["image"]}


class Selection:
    """Snapshot scores (saved with the training state, so a resumed run keeps them)."""

    def __init__(self):
        self.records: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"records": list(self.records)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = list(state.get("records", []))

    def best(self) -> dict[str, Any] | None:
        scored = [r for r in self.records if r.get("score") is not None]
        if scored:  # highest score; ties: the smaller change, then the earlier snapshot
            return max(scored, key=lambda r: (r["score"], -r["l1"], -r["step"]))
        return self.records[-1] if self.records else None


@torch.no_grad()
def validation_figures(M: nn.Module, images: Tensor, target: int, oracle: nn.Module | None,
                       batch_size: int = 64) -> dict[str, float | None]:
    """Mean |y - x| and (with ``oracle``) the fraction of y = M.counterfactual(x) the oracle puts in
    class ``target`` (probability >= 0.5) over ``images`` [n, C, R, R]."""
    from medcf.counterfactual.base import log_odds_of

    l1, hits, n = 0.0, 0, images.shape[0]
    for i in range(0, n, batch_size):
        x = images[i:i + batch_size]
        y = M.counterfactual(x)
        l1 += float((y - x).abs().mean(dim=(1, 2, 3)).sum())
        if oracle is not None:
            t = torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
            s = log_odds_of(oracle(y).float(), t, head=getattr(oracle, "head", None))
            hits += int((s >= 0).sum())
    return {"l1": l1 / n, "oracle_validity": hits / n if oracle is not None else None}


def train_vagan(
    data,                                   # labelled dataset dir/file (open_dataset)
    out_dir: str | os.PathLike,             # run directory (RUN_DIR/model is the selected map generator)
    *,
    source: str | int,                      # class whose images are mapped (e.g. the disease)
    target: str | int,                      # class the mapped images should look like
    steps: int = 2000,                      # map-generator updates
    n_critic: int = 5,                      # critic updates per map update
    critic_warmup: int = 500,               # critic-only updates before the first map update
    gp_weight: float = 10.0,
    l1_weight: float = 10.0,                # weight of mean|M(x)| (100 collapsed M to ~0 here: docs/vagan.md)
    batch_size: int = 32,
    lr: float = 1e-4,                       # the critic's Adam learning rate
    map_lr: float = 1e-5,                   # the map's: 10x slower than the critic's (see above)
    base_channels: int = 16,
    depth: int = 3,
    critic_channels: int = 16,
    resolution: int | None = None,
    oracle: str | os.PathLike | None = None,  # classifier run scoring the snapshots
    snapshot_every: int = 0,                # map updates between snapshots (0: steps // 5)
    val_n: int = 64,                        # held-out source images scored per snapshot
    proximity_weight: float = 1.0,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    log_every: int = 50,
    checkpoint_every: int = 0,              # engine steps (0: at every snapshot)
) -> TrainedVAGAN:
    """Train VA-GAN's map generator from ``source`` to ``target`` images of ``data``.

    Example:
        >>> res = train_vagan("data/opacity64", "runs/vagan", source="opacity", target="normal")  # doctest: +SKIP
    """
    from medcf.train.engine import Hook, TrainConfig, Trainer
    from medcf.train.gan import open_train_split

    if min(steps, n_critic, batch_size, val_n) < 1 or min(lr, map_lr) <= 0 or critic_warmup < 0 \
            or min(gp_weight, l1_weight, proximity_weight) < 0:
        raise MedcfError(f"train_vagan: steps, n_critic, batch_size, val_n, lr, map_lr must be positive and "
                         f"weights, critic_warmup >= 0, got {steps}, {n_critic}, {batch_size}, {val_n}, {lr}, "
                         f"{map_lr}, {(gp_weight, l1_weight, proximity_weight)}, {critic_warmup}")
    warm = -(-critic_warmup // n_critic) * n_critic  # rounded up to whole map-update cycles
    t0 = time.perf_counter()
    train_ds, where = open_train_split(data, resolution)
    names = tuple(str(n) for n in (getattr(train_ds, "class_names", ()) or ()))
    labels = _labels(train_ds)
    present = sorted(set(labels) - {-1})
    if len(names) < 2 or len(present) < 2:
        raise DataError(f"{where}: has {max(len(names), len(present))} class(es) {list(names)}; VA-GAN needs "
                        "labelled images of two classes (--source and --target)")
    s_idx = resolve_class(source, names, "--source", where)
    t_idx = resolve_class(target, names, "--target", where)
    if s_idx == t_idx:
        raise MedcfError(f"--source and --target: both name class {names[s_idx]!r}; give two different classes")
    src = [i for i, v in enumerate(labels) if v == s_idx]
    tgt = [i for i, v in enumerate(labels) if v == t_idx]
    for flag, c, idx in (("--source", s_idx, src), ("--target", t_idx, tgt)):
        if not idx:
            raise DataError(f"{where}: no training images of class {names[c]!r} ({flag})")
    image = train_ds[src[0]]["image"]
    channels, res = int(image.shape[0]), int(image.shape[-1])
    try:
        config = VAGANConfig(resolution=res, channels=channels, base_channels=base_channels, depth=depth,
                             source_class=names[s_idx], target_class=names[t_idx], class_names=names)
        critic_cfg = DCGANConfig(resolution=res, channels=channels, z_dim=1, base_channels=critic_channels)
    except ValueError as e:
        raise DataError(f"{where}: {e}; pass --resolution to resize") from None
    M, D = VAGANMap(config, seed=seed), DCGANCritic(critic_cfg, seed=seed + 1)
    opt_M = torch.optim.Adam(M.parameters(), lr=map_lr, betas=(0.0, 0.9))
    opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.0, 0.9))

    # held-out source images for the snapshot score
    val_images, held_out = _validation_images(data, train_ds, src, s_idx, res, val_n)
    oracle_net = None
    if oracle is not None:
        from medcf.train.gan import load_fid_oracle

        oracle_net = load_fid_oracle(oracle, channels, res, flag="--oracle").eval()
    selection = Selection()
    last: dict[str, float] = {}

    def step_fn(tr, batch: dict[str, Tensor]) -> dict[str, float]:
        Mn, Dn = tr.models["M"], tr.models["D"]
        x, real = batch["image"], batch["real"]
        # 1. critic step: y = x + M(x) against real target images
        with torch.no_grad():
            y = (x + Mn(x)).clamp(-1, 1)
        d_y, d_real = Dn(y), Dn(real)
        gp = gradient_penalty(Dn, real, y, generator=tr.generator)
        loss_D = d_y.mean() - d_real.mean() + gp_weight * gp
        optimizer_step(tr, "D", loss_D)
        stats = {"loss_D": loss_D.item(), "gp": gp.item(), "wdist": (d_real.mean() - d_y.mean()).item()}
        # 2. map step every n_critic critic steps, after the critic-only warm-up
        if tr.step >= warm and (tr.step - warm + 1) % n_critic == 0:
            with frozen(Dn):
                m = Mn(x)
                adv = -Dn((x + m).clamp(-1, 1)).mean()
                l1 = m.abs().mean()
                loss_M = adv + l1_weight * l1
                optimizer_step(tr, "M", loss_M)
            last.update(loss_M=loss_M.item(), map_l1=l1.item())
        return {**stats, **last}

    def snapshot(tr) -> dict[str, Any] | None:
        if tr.step != n_steps and (tr.step <= warm or (tr.step - warm) % every):
            return None                                   # not a snapshot's map update (nor the last)
        Mm = tr.unwrap("M")
        name = f"snapshots/{tr.step:07d}"
        Mm.save(tr.run_dir / name, meta={"steps": tr.step})
        if oracle_net is not None:
            oracle_net.to(tr.device)
        was = Mm.training
        Mm.eval()
        fig = validation_figures(Mm, val_images.to(tr.device), t_idx, oracle_net)
        Mm.train(was)
        score = (fig["oracle_validity"] - proximity_weight * fig["l1"]) if oracle_net is not None else None
        rec = {"step": tr.step, "snapshot": name, "score": score, **fig}
        selection.records = [r for r in selection.records if r["step"] != tr.step] + [rec]
        out = {"val_l1": fig["l1"]}
        if score is not None:
            out.update(val_oracle_validity=fig["oracle_validity"], val_score=score)
        return out

    n_steps = warm + steps * n_critic
    every = (snapshot_every if snapshot_every > 0 else max(1, steps // 5)) * n_critic
    run_info = {"recipe": "medcf.train.vagan.train_vagan", "data": where, "source": names[s_idx],
                "target": names[t_idx], "steps": steps, "n_critic": n_critic, "critic_warmup": warm,
                "gp_weight": gp_weight, "l1_weight": l1_weight, "batch_size": batch_size, "lr": lr,
                "map_lr": map_lr, "base_channels": base_channels,
                "depth": depth, "critic_channels": critic_channels, "resolution": res, "channels": channels,
                "oracle": str(oracle) if oracle is not None else None, "snapshot_every": every // n_critic,
                "val_n": int(val_images.shape[0]), "held_out": held_out, "proximity_weight": proximity_weight,
                "seed": seed}
    tconf = TrainConfig(out_dir=str(out_dir), steps=n_steps, batch_size=batch_size, seed=seed,
                        log_every=log_every, checkpoint_every=checkpoint_every or every, progress=progress)
    trainer = Trainer(tconf, models={"M": M, "D": D}, optimizers={"M": opt_M, "D": opt_D},
                      dataset=SourceTargetPairs(train_ds, src, tgt, seed=seed), step_fn=step_fn, export="M",
                      extra_state=selection, hooks=[Hook(every=n_critic, fn=snapshot)], run_info=run_info)
    model_dir = Path(trainer.fit(resume=resume))

    best = selection.best()
    chosen: dict[str, Any] = {}
    if best is not None:
        rule = (f"highest oracle_validity - {proximity_weight:g} * l1 on {int(val_images.shape[0])} "
                f"{'held-out' if held_out else 'training'} {names[s_idx]!r} images"
                if best.get("score") is not None else "no --oracle: the last snapshot (not validated)")
        chosen = {**best, "rule": rule, "candidates": len(selection.records),
                  "scores": [{k: r[k] for k in ("step", "score", "oracle_validity", "l1")}
                             for r in selection.records]}
        picked = VAGANMap.load(Path(out_dir) / best["snapshot"])
        meta = dict(read_header(model_dir).get("meta", {}))
        meta.update({"data": where, "class_names": list(names), "selection": chosen,
                     "steps": max(0, trainer.step - warm) // n_critic})
        picked.save(model_dir, meta=meta)
        log.info("%s: selected snapshot %s (%s)", out_dir, best["snapshot"], rule)
    trainer.unwrap("D").save(Path(out_dir) / "critic", meta={"steps": trainer.step})
    return TrainedVAGAN(model_dir=model_dir, steps=trainer.step, selection=chosen,
                        wall_s=time.perf_counter() - t0)


def _validation_images(data, train_ds: Dataset, src: list[int], s_idx: int, res: int, n: int
                       ) -> tuple[Tensor, bool]:
    """Up to ``n`` source-class images [n, C, R, R] of the val split (held out), else of training."""
    from medcf.data import open_dataset

    if isinstance(data, (str, os.PathLike)):
        try:
            val = open_dataset(data, split="val", resolution=res)
            idx = [i for i, v in enumerate(_labels(val)) if v == s_idx][:n]
            if idx:
                return torch.stack([val[i]["image"] for i in idx]), True
        except DataError as e:
            log.info("%s: no val split (%s); snapshots are scored on training images", data, e)
    return torch.stack([train_ds[i]["image"] for i in src[:n]]), False


__all__ = ["SourceTargetPairs", "TrainedVAGAN", "resolve_class", "train_vagan", "validation_figures"]
