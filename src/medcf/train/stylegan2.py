"""StyleGAN2-ADA training recipe on the shared engine (Karras et al. 2020).

One engine step = the four phases of the official training loop, in order:

1. G main: non-saturating logistic loss ``softplus(-D(aug(G(z, c))))``;
2. G path-length regularisation, lazily every ``pl_every`` steps;
3. D main: ``softplus(D(aug(G(z, c)))) + softplus(-D(aug(x)))``;
4. D R1 penalty ``gamma/2 * ||grad_x D(aug(x))||^2``, lazily every ``r1_every`` steps;

then the adaptive augmentation policy: the mean sign of D's real logits over
``ada_interval`` steps is compared with ``ada_target`` and ``p`` moves by
``batch * ada_interval / (ada_kimg * 1000)`` toward it. Each phase steps its
optimizer, so lazily regularised optimizers get the paper's correction
(``lr * k/(k+1)``, ``beta ** (k/(k+1))``). Style mixing and per-layer noise use
the engine's per-step generator, so a resumed run continues exactly; ``p``,
the ADA sign accumulator and the path-length mean are resume state.

The exported model ``RUN_DIR/model`` is G_ema: the engine's EMA of ``G`` with
a half-life of ``ema_kimg`` thousand images and the official ramp-up (the
decay is set each step from the image count). The final discriminator is
saved beside it in ``RUN_DIR/discriminator``. Sample grids (fixed seeds) go to
``RUN_DIR/samples/``; FID snapshots with a classifier's features (``fid_oracle``)
are logged to ``stats.jsonl`` as ``fid`` with the extractor's name.

The policies, resume state and network parts live in ``medcf.train.stylegan2_parts``, the
grid/FID hooks in ``medcf.train.stylegan2_hooks``, and the helpers other recipes share
(``save_grid``, ``open_train_split``) in ``medcf.train.recipe_common``.

Example:
    >>> res = train_stylegan2("data/synth64", "runs/sg2", resolution=64, kimg=200)  # doctest: +SKIP
    >>> G = Generator.load(res.model_dir)                                            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medcf.errors import DataError, MedcfError
from medcf.generators.stylegan2 import Discriminator
from medcf.generators.stylegan2.augment import PRESETS, AugmentConfig, AugmentPipe
from medcf.io import read_header
from medcf.train.fid_snapshots import load_fid_oracle
from medcf.train.recipe_common import (
    dataset_facts,
    last_stats,
    open_train_split,
    save_grid,
)
from medcf.train.stylegan2_hooks import collate_gan, fid_hook, grid_hook
from medcf.train.stylegan2_parts import (
    GANState,
    ada_adjust,
    build_networks,
    ema_beta,
    lazy_adam,
    one_hot_labels,
    run_generator,
    stat_dtype,
    stat_on,
    sync_grads,
)

log = logging.getLogger(__name__)

AUG_MODES = ("ada", "none")

# names other modules imported from here before the parts moved out (kept importable)
_open_train_data, _facts = open_train_split, dataset_facts
_load_oracle, _last_stats = load_fid_oracle, last_stats


@dataclass(frozen=True)
class TrainedStyleGAN2:
    """What the recipe returns: the exported G_ema, and the last figures."""

    model_dir: Path                       # RUN_DIR/model (G_ema)
    steps: int
    kimg: float                           # thousands of real images shown to D
    augment_p: float                      # final ADA probability
    fid: dict[str, Any] | None = None     # last FID snapshot ({"fid", "extractor", ...}) or None
    stats: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0


# ----------------------------------------------------------------------------- the recipe


def train_stylegan2(
    data,                                   # dataset dir/file (open_dataset) or a Dataset
    out_dir: str | os.PathLike,             # run directory (RUN_DIR/model is G_ema)
    *,
    resolution: int = 64,                   # images are resized to this (power of two)
    cond: bool = False,                     # label-conditional G and D (one-hot of class_names)
    aug: str = "ada",                       # "ada" (adaptive p) | "none"
    augpipe: str = "bgc",                   # ADA augmentation preset
    ada_target: float = 0.6,                # target of E[sign(D(real))]
    ada_interval: int = 4,                  # steps between p adjustments
    ada_kimg: float = 500.0,                # kimg for p to move by 1
    steps: int | None = None,               # optimizer steps (or give kimg)
    kimg: float | None = None,              # thousands of real images shown to D
    batch_size: int = 32,
    lr: float = 0.0025,                     # G and D learning rate (before the lazy correction)
    r1_gamma: float | None = None,          # R1 weight (None: 0.0002 * resolution^2 / batch_size)
    r1_every: int = 16,                     # lazy R1 interval (0 = off)
    pl_weight: float = 2.0,                 # path-length regularisation weight (0 = off)
    pl_every: int = 4,                      # lazy PL interval
    pl_batch_shrink: int = 2,
    pl_decay: float = 0.01,
    style_mixing: float = 0.9,              # probability of mixing two latents
    ema_kimg: float | None = None,          # G_ema half-life in kimg (None: batch_size * 10 / 32)
    ema_rampup: float | None = 0.05,        # half-life <= rampup * images seen (None: off)
    z_dim: int = 128,
    w_dim: int = 128,
    mapping_layers: int = 2,
    channel_base: int = 4096,               # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 128,
    mbstd_group: int = 4,
    fp16_res: int = 0,                      # highest resolutions in fp16 (CUDA only; 0 = fp32)
    seed: int = 0,
    sample_every: int = 500,                # steps between sample grids (0 = only at the end)
    grid: tuple[int, int] = (8, 8),         # rows, columns of the sample grid
    fid_oracle: str | os.PathLike | None = None,  # classifier run whose features() give domain FID
    fid_every: int = 2000,                  # steps between FID snapshots (0 = only at the end)
    fid_n: int = 1000,                      # real and fake images per FID snapshot
    resume: bool = False,
    progress: bool = True,
    log_every: int = 50,
    checkpoint_every: int = 500,
    num_workers: int = 0,
) -> TrainedStyleGAN2:
    """Train StyleGAN2-ADA on the images (and, with ``cond``, the labels) of ``data``.

    Example:
        >>> res = train_stylegan2("data/synth64", "runs/sg2c", cond=True, steps=5000)  # doctest: +SKIP
    """
    from medcf.train.engine import Hook, TrainConfig, Trainer

    t0 = time.perf_counter()
    if aug not in AUG_MODES:
        raise MedcfError(f"aug: expected one of {list(AUG_MODES)}, got {aug!r}")
    if augpipe not in PRESETS:
        raise MedcfError(f"augpipe: expected one of {sorted(PRESETS)}, got {augpipe!r}")
    if (steps is None) == (kimg is None):
        raise MedcfError("train_stylegan2: give exactly one of steps= or kimg=")
    if batch_size < 1 or lr <= 0 or not 0 <= style_mixing <= 1 or not 0 <= ada_target <= 1:
        raise MedcfError(f"train_stylegan2: need batch_size >= 1, lr > 0, style_mixing and ada_target "
                         f"in [0, 1]; got {batch_size}, {lr}, {style_mixing}, {ada_target}")
    if ada_interval < 1 or ada_kimg <= 0 or r1_every < 0 or pl_every < 1 or pl_weight < 0:
        raise MedcfError("train_stylegan2: need ada_interval >= 1, ada_kimg > 0, r1_every >= 0, "
                         "pl_every >= 1, pl_weight >= 0")
    n_steps = int(steps) if steps is not None else max(1, math.ceil(float(kimg) * 1000 / batch_size))
    group = min(mbstd_group, batch_size)
    if batch_size % group:
        raise MedcfError(f"batch_size={batch_size}: must be a multiple of mbstd_group={group}")

    train_ds, where = open_train_split(data, resolution)
    if len(train_ds) == 0:
        raise DataError(f"{where}: no training images")
    channels, res, class_names = dataset_facts(train_ds)
    if res != resolution:
        raise DataError(f"{where}: images are {res} px, expected resolution={resolution}")
    if cond and not class_names:
        raise DataError(f"{where}: has no labels (empty class_names); conditional training (cond=True) "
                        "needs labelled data, e.g. class subfolders or a labelled CSV")
    c_dim = len(class_names) if cond else 0
    r1_gamma = 0.0002 * resolution**2 / batch_size if r1_gamma is None else float(r1_gamma)
    ema_kimg = batch_size * 10 / 32 if ema_kimg is None else float(ema_kimg)
    G, D = build_networks(channels, resolution, c_dim, z_dim=z_dim, w_dim=w_dim,
                          mapping_layers=mapping_layers, channel_base=channel_base,
                          channel_max=channel_max, mbstd_group=group, fp16_res=fp16_res, seed=seed)
    opt_G = lazy_adam(G.parameters(), lr, pl_every if pl_weight > 0 else 0)
    opt_D = lazy_adam(D.parameters(), lr, r1_every if r1_gamma > 0 else 0)
    augment = AugmentPipe(AugmentConfig.preset(augpipe)) if aug == "ada" else None
    state = GANState(augment)
    oracle = load_fid_oracle(fid_oracle, channels, resolution) if fid_oracle is not None else None

    def labels_of(batch: dict[str, Tensor]) -> Tensor | None:  # [B, K] one-hot or None
        return one_hot_labels(batch["label"], c_dim, where) if c_dim else None

    def run_D(Dnet: Discriminator, img: Tensor, c: Tensor | None, gen: torch.Generator) -> Tensor:
        if augment is not None and state.p > 0:
            img = augment(img, generator=gen)
        return Dnet(img, c)  # [B, 1]

    def step_fn(tr, batch: dict[str, Tensor]) -> dict[str, Tensor | float]:
        G, D = tr.unwrap("G"), tr.unwrap("D")
        opt_G, opt_D = tr.optimizers["G"], tr.optimizers["D"]
        gen, dev = tr.generator, tr.device
        real = batch["image"]                                   # [B, C, R, R]
        real_c = labels_of(batch)                               # [B, K] | None
        b = real.shape[0]
        if augment is not None and augment.p.device != dev:
            augment.to(dev)

        def latents(n: int) -> tuple[Tensor, Tensor | None]:    # z [n, z_dim], c [n, K] | None
            z = torch.randn([n, G.z_dim], generator=gen, device=gen.device).to(dev)
            if real_c is None:
                return z, None
            return z, real_c[torch.randperm(b, generator=gen, device=gen.device).to(dev)[:n]]

        # 0. G_ema decay for this step: half-life ema_kimg, ramped up early in training
        if tr.ema is not None:
            tr.ema.decay = ema_beta(tr.step, tr.config.batch_size, ema_kimg, ema_rampup)
        # figures stay on the device: the engine reads them every log_every steps
        stats: dict[str, Tensor] = {}

        # 1. G main: non-saturating logistic loss on augmented fakes
        G.requires_grad_(True)
        D.requires_grad_(False)
        z, c = latents(b)
        fake, _ = run_generator(G, z, c, gen, style_mixing)
        loss_G = F.softplus(-run_D(D, fake, c, gen)).mean()
        opt_G.zero_grad(set_to_none=True)
        tr.backward(loss_G)
        sync_grads(tr, G)
        opt_G.step()
        stats["loss_G"] = loss_G.detach()

        # 2. G path-length regularisation (lazy): |J_w^T y| should stay constant
        if pl_weight > 0 and tr.step % pl_every == 0:
            z, c = latents(max(b // pl_batch_shrink, 1))
            fake, ws = run_generator(G, z, c, gen, style_mixing)
            noise = torch.randn(fake.shape, generator=gen, device=gen.device).to(dev)
            noise = noise / math.sqrt(fake.shape[2] * fake.shape[3])
            (grad_ws,) = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
            lengths = grad_ws.square().sum(2).mean(1).sqrt()    # [n]
            batch_mean = lengths.mean().detach()
            if tr.world_size > 1:
                batch_mean = tr.accelerator.reduce(batch_mean, "mean")
            state.pl_mean = stat_on(state.pl_mean, dev).lerp(batch_mean.to(stat_dtype(dev)), pl_decay)
            loss_pl = (lengths - state.pl_mean).square().mean() * pl_weight
            opt_G.zero_grad(set_to_none=True)
            tr.backward(loss_pl * pl_every)
            sync_grads(tr, G)
            opt_G.step()
            state.last.update(loss_pl=loss_pl.detach(), pl_mean=state.pl_mean)

        # 3. D main: fakes down, reals up (both augmented)
        G.requires_grad_(False)
        D.requires_grad_(True)
        z, c = latents(b)
        with torch.no_grad():
            fake, _ = run_generator(G, z, c, gen, style_mixing)
        logits_fake = run_D(D, fake, c, gen)
        logits_real = run_D(D, real, real_c, gen)
        loss_D = (F.softplus(logits_fake) + F.softplus(-logits_real)).mean()
        opt_D.zero_grad(set_to_none=True)
        tr.backward(loss_D)
        sync_grads(tr, D)
        opt_D.step()
        state.sign_sum = stat_on(state.sign_sum, dev) + logits_real.detach().sign().sum()
        state.sign_count += b
        stats.update(loss_D=loss_D.detach(), D_real=logits_real.detach().mean(),
                     D_fake=logits_fake.detach().mean())

        # 4. D R1 penalty on augmented reals (lazy)
        if r1_gamma > 0 and r1_every > 0 and tr.step % r1_every == 0:
            x = real.detach().requires_grad_(True)
            logits = run_D(D, x, real_c, gen)
            (grad_x,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
            penalty = grad_x.square().sum(dim=[1, 2, 3])        # [B]
            loss_r1 = (penalty * (r1_gamma / 2)).mean()
            opt_D.zero_grad(set_to_none=True)
            tr.backward(loss_r1 * r1_every)
            sync_grads(tr, D)
            opt_D.step()
            state.last["loss_r1"] = loss_r1.detach()
        G.requires_grad_(True)

        # 5. ADA: every ada_interval steps move p toward E[sign(D(real))] == ada_target
        #    (the one host read of the step's statistics, at the policy's own interval)
        if augment is not None and (tr.step + 1) % ada_interval == 0:
            sums = torch.stack([stat_on(state.sign_sum, dev), stat_on(float(state.sign_count), dev)])
            if tr.world_size > 1:
                sums = tr.accelerator.reduce(sums, "sum")
            total, count = sums.tolist()
            rt = total / max(count, 1.0)
            state.set_p(ada_adjust(state.p, rt, ada_target, int(count), ada_kimg))
            state.sign_sum, state.sign_count = 0.0, 0
            state.last["ada_rt"] = rt
        # lazy figures repeat their latest value so that the engine's interval means stay true
        return {**stats, **state.last, "augment_p": state.p}

    hooks = [Hook(every=sample_every or n_steps, fn=grid_hook(grid, c_dim, seed))]
    fid_holder: dict[str, Any] = {}
    if oracle is not None:
        hooks.append(Hook(every=fid_every or n_steps,
                          fn=fid_hook(oracle, train_ds, fid_n, c_dim, seed, fid_holder)))
    run_info = {"recipe": "medcf.train.stylegan2.train_stylegan2", "data": where,
                "resolution": resolution, "channels": channels, "cond": cond,
                "class_names": list(class_names), "aug": aug, "augpipe": augpipe,
                "ada_target": ada_target, "ada_interval": ada_interval, "ada_kimg": ada_kimg,
                "steps": n_steps, "batch_size": batch_size, "lr": lr, "r1_gamma": r1_gamma,
                "r1_every": r1_every, "pl_weight": pl_weight, "pl_every": pl_every,
                "pl_batch_shrink": pl_batch_shrink, "pl_decay": pl_decay,
                "style_mixing": style_mixing, "ema_kimg": ema_kimg, "ema_rampup": ema_rampup,
                "z_dim": z_dim, "w_dim": w_dim, "mapping_layers": mapping_layers,
                "channel_base": channel_base, "channel_max": channel_max, "mbstd_group": group,
                "fp16_res": fp16_res, "seed": seed,
                "fid_oracle": str(fid_oracle) if fid_oracle is not None else None, "fid_n": fid_n}
    tconf = TrainConfig(out_dir=str(out_dir), steps=n_steps, batch_size=batch_size, seed=seed,
                        log_every=log_every, checkpoint_every=checkpoint_every,
                        ema_decay=ema_beta(n_steps, batch_size, ema_kimg, None),
                        num_workers=num_workers, progress=progress)
    trainer = Trainer(tconf, models={"G": G, "D": D}, optimizers={"G": opt_G, "D": opt_D},
                      dataset=train_ds, step_fn=step_fn, export="G", extra_state=state,
                      hooks=hooks, run_info=run_info, collate_fn=collate_gan)
    model_dir = Path(trainer.fit(resume=resume))

    stats: dict[str, float] = {}
    if trainer.is_main_process:
        # the exported G_ema carries what a user needs: class names, data, kimg, ADA p, FID
        meta = dict(read_header(model_dir).get("meta", {}))
        meta.update({"class_names": list(class_names) if cond else [], "data": where,
                     "kimg": trainer.step * batch_size / 1000, "augment_p": state.p})
        if fid_holder.get("last"):
            meta["fid"] = fid_holder["last"]
        trainer.ema_model().save(model_dir, meta=meta)
        trainer.unwrap("D").save(Path(out_dir) / "discriminator", meta={"steps": trainer.step})
        stats = last_stats(Path(out_dir))
    return TrainedStyleGAN2(model_dir=model_dir, steps=trainer.step,
                            kimg=trainer.step * batch_size / 1000, augment_p=state.p,
                            fid=fid_holder.get("last"), stats=stats, wall_s=time.perf_counter() - t0)


__all__ = ["TrainedStyleGAN2", "train_stylegan2", "ada_adjust", "ema_beta", "run_generator",
           "lazy_adam", "build_networks", "save_grid", "GANState"]
