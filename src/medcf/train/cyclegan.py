"""Training recipe for the ``cyclegan`` backbone on the shared engine.

Per step, on an unpaired batch (a from domain A, b from domain B, see
``medcf.train.domains.UnpairedDomains``):

1. generators: LSGAN adversarial loss against both discriminators + ``lambda_cycle`` x
   (cycle L1 + ``lambda_identity`` x identity L1), one Adam step on both generators;
2. discriminators: 0.5 x (LSGAN on real + LSGAN on a fake drawn from the image pool), one
   Adam step on both discriminators.

Adam(lr, betas (0.5, 0.999)); the learning rate is constant for the first half of the run
and decays linearly to 0 over the second half (computed from the step, so a resumed run
continues exactly). The image pools are part of the resume state. Sample grids of fixed
validation images (rows: A, G_AB(A), B, G_BA(B)) go to RUN_DIR/samples/. With ``fid_oracle``
(a medcf classifier run), domain-FID snapshots of the translation (``translation_fid``:
G_AB of up to ``fid_n`` training images of A against as many real B images) every
``fid_every`` steps; the last one is kept in the model's ``meta["fid"]``.

Example:
    >>> res = train_cyclegan("data/synth64", "runs/cyclegan", domain_a="normal",
    ...                      domain_b="cardiomegaly", steps=3000)          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from medcf.errors import DataError, MedcfError
from medcf.eval._common import evaluating
from medcf.generators.cyclegan import (
    CycleGAN,
    CycleGANConfig,
    ImagePool,
    PatchDiscriminator,
    cycle_losses,
    discriminator_loss,
)
from medcf.train.domains import (
    UnpairedDomains,
    class_names_of,
    grid_hook,
    grid_pairs,
    open_split,
    resolve_domains,
)
from medcf.train.fid_snapshots import keep_fid_in_meta, translation_fid
from medcf.train.recipe_common import frozen, optimizer_step
from medcf.train.schedules import linear_decay, set_lr  # linear_decay: importable from here too

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedTranslator:
    """What the CycleGAN and ICAM recipes return."""

    model_dir: Path
    kind: str
    domains: tuple[str, str]
    val: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    fid: dict | None = None                 # last domain-FID snapshot of A -> B ({"fid", "extractor", ...})


class _Pools:
    """The two image pools as one resumable ``extra_state``."""

    def __init__(self, size: int):
        self.a, self.b = ImagePool(size), ImagePool(size)

    def state_dict(self) -> dict[str, Any]:
        return {"a": self.a.state_dict(), "b": self.b.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.a.load_state_dict(state["a"])
        self.b.load_state_dict(state["b"])


def prepare_domains(data, domain_a, domain_b, resolution: int | None, val_data: Dataset | None
                    ) -> tuple[Dataset, Dataset | None, int, int, str]:
    """(train set, val set or None, class of A, class of B, where) with one-line errors."""
    where = str(data) if isinstance(data, (str, os.PathLike)) else "data"
    if isinstance(data, (str, os.PathLike)):
        train_ds = open_split(data, "train", resolution)
        if val_data is None:
            try:
                val_data = open_split(data, "val", resolution)
            except DataError as e:
                log.warning("%s: no validation split (%s)", data, e)
    else:
        train_ds = data
    if len(train_ds) == 0:
        raise DataError(f"{where}: the training split is empty")
    a, b = resolve_domains(train_ds, domain_a, domain_b, where=where)
    return train_ds, val_data, a, b, where


def train_cyclegan(
    data,                                   # dataset dir/file (open_dataset) or a labelled Dataset
    out_dir: str | os.PathLike,             # run directory (RUN_DIR/model is the CycleGAN)
    *,
    domain_a: str | int | None = None,      # class name/index of domain A (None: class 0)
    domain_b: str | int | None = None,      # class name/index of domain B (None: class 1)
    steps: int = 3000,
    batch_size: int = 8,
    lr: float = 2e-4,
    width: int = 32,                        # generator width (ngf)
    blocks: int = 6,                        # residual blocks
    disc_width: int = 32,                   # discriminator width (ndf)
    disc_layers: int = 3,
    lambda_cycle: float = 10.0,
    lambda_identity: float = 0.5,
    pool_size: int = 50,
    seed: int = 0,
    resolution: int | None = None,          # resize the data to this size
    val_data: Dataset | None = None,
    sample_every: int = 500,                # steps between sample grids
    fid_oracle: str | os.PathLike | None = None,  # classifier run for domain-FID snapshots (None: off)
    fid_every: int = 0,                     # steps between FID snapshots (0: only at the end)
    fid_n: int = 500,                       # A images translated / real B images per snapshot
    resume: bool = False,
    progress: bool = True,
    log_every: int = 50,
    checkpoint_every: int = 500,
    num_workers: int = 0,
) -> TrainedTranslator:
    """Train a CycleGAN between two classes of ``data``.

    Example:
        >>> res = train_cyclegan("data/synth64", "runs/cyclegan", steps=3000)   # doctest: +SKIP
        >>> res.domains
        ('normal', 'cardiomegaly')                                              # doctest: +SKIP
    """
    from medcf.train.engine import Hook, TrainConfig, Trainer

    if steps < 1 or batch_size < 1 or lr <= 0 or lambda_cycle < 0 or lambda_identity < 0 or pool_size < 0:
        raise MedcfError(f"--steps, --batch-size, --lr must be positive and --lambda-cycle, --lambda-identity, "
                         f"--pool-size >= 0, got {steps}, {batch_size}, {lr}, {lambda_cycle}, {lambda_identity}, "
                         f"{pool_size}")
    t0 = time.perf_counter()
    train_ds, val_data, a_cls, b_cls, where = prepare_domains(data, domain_a, domain_b, resolution, val_data)
    image = train_ds[0]["image"]
    names = class_names_of(train_ds)
    try:
        config = CycleGANConfig(resolution=int(image.shape[-1]), channels=int(image.shape[0]), width=width,
                                blocks=blocks, disc_width=disc_width, disc_layers=disc_layers,
                                domain_a=a_cls, domain_b=b_cls, class_names=names)
    except ValueError as e:
        raise MedcfError(f"{where}: {e}") from None
    model = CycleGAN(config, seed=seed)
    d_a, d_b = PatchDiscriminator(config, seed=seed + 1), PatchDiscriminator(config, seed=seed + 2)
    betas = (0.5, 0.999)
    opt_g = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam([*d_a.parameters(), *d_b.parameters()], lr=lr, betas=betas)
    pools = _Pools(pool_size)

    def step_fn(tr, batch):
        g, da, db = tr.models["model"], tr.models["d_a"], tr.models["d_b"]
        rate = set_lr(tr.optimizers.values(), linear_decay(tr.step, steps, lr))
        a, b = batch["image_a"], batch["image_b"]
        with frozen(da, db):                    # 1. generators
            out = g(a, b, identity=lambda_identity > 0)
            losses = cycle_losses(out, da, db, a, b, lambda_cycle=lambda_cycle, lambda_identity=lambda_identity)
            optimizer_step(tr, "g", losses.total)
        # 2. discriminators on real images and pooled fakes
        loss_da = discriminator_loss(da, a, pools.a.query(out.fake_a, tr.generator))
        loss_db = discriminator_loss(db, b, pools.b.query(out.fake_b, tr.generator))
        optimizer_step(tr, "d", loss_da + loss_db)
        return {"g_adv": losses.adv.item(), "cycle": losses.cycle.item(), "identity": losses.identity.item(),
                "g_total": losses.total.item(), "d_a": loss_da.item(), "d_b": loss_db.item(), "lr": rate}

    x_a, x_b = grid_pairs(val_data, train_ds, a_cls, b_cls)

    def translate(tr, xa, xb):                  # grid rows: A, G_AB(A), B, G_BA(B)
        with evaluating(tr.unwrap("model")) as m:
            return torch.cat([xa, m.g_ab(xa), xb, m.g_ba(xb)])

    hooks = [Hook(every=sample_every or steps, fn=grid_hook(translate, x_a, x_b, 2))]
    snaps = None
    if fid_oracle is not None:
        snaps = translation_fid(fid_oracle, train_ds, a_cls, b_cls, lambda tr, xa, xb: tr.unwrap("model").eval().g_ab(xa),
                                n=fid_n, every=fid_every, steps=steps, channels=config.channels,
                                resolution=config.resolution)
        hooks.append(snaps.hook)
    run_info = {"recipe": "medcf.train.cyclegan.train_cyclegan", "kind": CycleGAN.kind, "data": where,
                "domains": [config.domain_name("a"), config.domain_name("b")], "steps": steps,
                "batch_size": batch_size, "lr": lr, "width": width, "blocks": blocks, "disc_width": disc_width,
                "disc_layers": disc_layers, "lambda_cycle": lambda_cycle, "lambda_identity": lambda_identity,
                "pool_size": pool_size, "seed": seed,
                "fid_oracle": str(fid_oracle) if fid_oracle is not None else None, "fid_n": fid_n}
    tconf = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=batch_size, seed=seed, log_every=log_every,
                        checkpoint_every=checkpoint_every, ema_decay=None, num_workers=num_workers,
                        progress=progress)
    trainer = Trainer(tconf, models={"model": model, "d_a": d_a, "d_b": d_b},
                      optimizers={"g": opt_g, "d": opt_d}, dataset=UnpairedDomains(train_ds, a_cls, b_cls, seed=seed),
                      step_fn=step_fn, export="model", extra_state=pools, hooks=hooks, run_info=run_info)
    model_dir = Path(trainer.fit(resume=resume))
    fid = snaps.last_result(out_dir) if snaps is not None else None
    if trainer.is_main_process:
        keep_fid_in_meta(trainer.unwrap("model"), model_dir, fid)
    return TrainedTranslator(model_dir=model_dir, kind=CycleGAN.kind,
                             domains=(config.domain_name("a"), config.domain_name("b")),
                             wall_s=time.perf_counter() - t0, fid=fid)


# quick-profile sizes (a profile's [methods.cyclegan] table overrides any of them; ``explain``
# holds build options)
BENCH_DEFAULTS: dict[str, Any] = {"width": 8, "blocks": 2, "disc_width": 8, "disc_layers": 2, "steps": 150,
                                  "batch_size": 4, "lr": 2e-4}


def prepare_cyclegan(data_dir, out_dir, *, classifier_dir, task: str, profile: dict[str, Any],
                     device="cpu", seed: int = 0, progress: bool = True) -> dict:
    """``prepare`` hook of the ``cyclegan`` row of ``medcf benchmark``: train (or reuse) a CycleGAN
    between classes 0 and 1 of the data; returns ``{"generator_dir", **profile["explain"]}``.

    Example:
        >>> kw = prepare_cyclegan("out/cache/data", "out/methods/cyclegan/cardiomegaly",
        ...                       classifier_dir="out/cache/classifier", task="cardiomegaly",
        ...                       profile={"steps": 150})                         # doctest: +SKIP
    """
    from medcf.benchmark.cache import profile_stage, stage_checkpoint_every

    def train(cfg: dict, d, resume: bool):  # cfg: BENCH_DEFAULTS updated by the profile table
        return train_cyclegan(
            data_dir, d, steps=int(cfg["steps"]), batch_size=int(cfg["batch_size"]), lr=float(cfg["lr"]),
            width=int(cfg["width"]), blocks=int(cfg["blocks"]), disc_width=int(cfg["disc_width"]),
            disc_layers=int(cfg["disc_layers"]), seed=seed, sample_every=0,
            checkpoint_every=stage_checkpoint_every(cfg["steps"]), resume=resume, progress=progress)

    return profile_stage(out_dir, "cyclegan", data_dir, profile, BENCH_DEFAULTS, seed, train)
