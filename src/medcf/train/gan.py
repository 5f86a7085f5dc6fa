"""Training recipe for the DCGAN backbone of GVR (``medcf train gan``), on the shared engine.

One engine step is one critic (discriminator) update; every ``n_critic``-th step the
generator is updated too, so ``steps`` generator updates take ``steps * n_critic``
engine steps and resume is exact at any of them. Two losses:

- ``wgan-gp`` (default; Gulrajani et al. 2017): critic ``D(fake) - D(real) + λ·GP`` with
  ``GP = E[(||∇_x̂ D(x̂)||₂ - 1)²]`` on random interpolates ``x̂`` (``gradient_penalty``,
  shared with VA-GAN), generator ``-D(G(z))``; Adam (0.0, 0.9); ``n_critic`` 5.
- ``ns`` (non-saturating; Goodfellow et al. 2014): critic ``softplus(-D(real)) +
  softplus(D(fake))``, generator ``softplus(-D(G(z)))``; Adam (0.5, 0.999); ``n_critic`` 1.

Labels are never read. The exported model is the EMA of the generator
(``RUN/model``, kind ``dcgan-generator``); the critic is saved to ``RUN/critic``.
Sample grids (``RUN/samples/STEP.png``) and, with ``fid_oracle`` (a medcf classifier
run), FID on that classifier's features (domain FID, not comparable to Inception FID)
are written every ``sample_every`` / ``fid_every`` engine steps.

Example:
    >>> res = train_gan("data/synth64", "runs/gan", steps=2000, loss="wgan-gp")   # doctest: +SKIP
    >>> res.model_dir                                                             # doctest: +SKIP
    PosixPath('runs/gan/model')
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
from torch import Tensor, nn

from medcf.errors import DataError, MedcfError
from medcf.generators.dcgan import DCGANConfig, DCGANCritic, DCGANGenerator
from medcf.io import read_header
from medcf.train.fid_snapshots import (
    FIDSnapshots,
    check_fid_settings,
    load_fid_oracle,
    real_subset,
)
from medcf.train.recipe_common import (  # open_train_split: used by vagan too
    frozen,
    last_stats,
    open_train_split,
    optimizer_step,
    write_step_grid,
)

log = logging.getLogger(__name__)

LOSSES = ("wgan-gp", "ns")


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, *, eps: Tensor | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP penalty ``mean_b (||∇_x̂ D(x̂_b)||₂ - 1)²`` with ``x̂ = eps·real + (1 - eps)·fake``.

    real, fake [B, C, H, W]; ``eps`` [B] (default: U(0, 1) drawn with ``generator``).
    Differentiable with respect to the critic's parameters (``create_graph``).

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, bias=False))
        >>> gp = gradient_penalty(lin, torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2))  # (||w|| - 1)^2
    """
    b = real.shape[0]
    if eps is None:
        dev = generator.device if generator is not None else real.device
        eps = torch.rand(b, generator=generator, device=dev).to(real)
    eps = eps.reshape(b, *([1] * (real.ndim - 1)))
    mixed = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    score = critic(mixed).reshape(b, -1).sum()
    (grad,) = torch.autograd.grad(score, mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


@dataclass(frozen=True)
class TrainedGAN:
    model_dir: Path
    steps: int
    fid: dict | None = None
    stats: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0


def images_only(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Collate only the images [B, C, R, R] (labels unused)."""
    return {"image": torch.stack([it["image"] for it in items])}


def grid_hook(sample_fn, run_dir_name: str = "samples", n: int = 16, seed: int = 0):
    """A hook writing ``sample_fn(z_seed)`` ([n, C, R, R]) as RUN/samples/STEP.png."""
    def sample_grid(tr) -> dict[str, Any]:
        return write_step_grid(tr, sample_fn(tr, n, seed).cpu(), max(1, int(n ** 0.5)), run_dir_name)

    return sample_grid


def train_gan(
    data,                                   # dataset dir/file (open_dataset) or a Dataset; labels unused
    out_dir: str | os.PathLike,             # run directory (RUN_DIR/model is the EMA generator)
    *,
    loss: str = "wgan-gp",                  # "wgan-gp" | "ns"
    steps: int = 2000,                      # generator updates
    n_critic: int | None = None,            # critic updates per generator update (None: 5 / 1)
    gp_weight: float = 10.0,                # WGAN-GP λ
    batch_size: int = 64,
    lr: float = 2e-4,
    z_dim: int = 128,
    base_channels: int = 32,
    max_channels: int = 256,
    resolution: int | None = None,          # resize the data to this size
    ema_decay: float | None = 0.999,
    seed: int = 0,
    sample_every: int = 1000,               # engine steps between sample grids
    fid_oracle: str | os.PathLike | None = None,  # classifier run for domain FID snapshots
    fid_every: int = 0,                     # engine steps between FID snapshots (0: at the end)
    fid_n: int = 500,
    resume: bool = False,
    progress: bool = True,
    log_every: int = 50,
    checkpoint_every: int = 1000,
) -> TrainedGAN:
    """Train a DCGAN on the images of ``data`` (labels unused).

    Example:
        >>> res = train_gan("data/synth64", "runs/gan", steps=1000, loss="ns")   # doctest: +SKIP
    """
    from medcf.train.engine import Hook, TrainConfig, Trainer

    if loss not in LOSSES:
        raise MedcfError(f"--loss: expected one of {list(LOSSES)}, got {loss!r}")
    n_critic = n_critic if n_critic is not None else (5 if loss == "wgan-gp" else 1)
    if steps < 1 or n_critic < 1 or batch_size < 1 or lr <= 0 or gp_weight < 0:
        raise MedcfError(f"train_gan: steps, n_critic, batch_size, lr must be positive and gp_weight >= 0, "
                         f"got {steps}, {n_critic}, {batch_size}, {lr}, {gp_weight}")
    t0 = time.perf_counter()
    train_ds, where = open_train_split(data, resolution)
    if len(train_ds) == 0:
        raise DataError(f"{where}: no training images")
    image = train_ds[0]["image"]
    channels, res = int(image.shape[0]), int(image.shape[-1])
    try:
        config = DCGANConfig(resolution=res, channels=channels, z_dim=z_dim, base_channels=base_channels,
                             max_channels=max_channels)
    except ValueError as e:
        raise DataError(f"{where}: {e}; pass --resolution to resize") from None
    G, D = DCGANGenerator(config, seed=seed), DCGANCritic(config, seed=seed + 1)
    betas = (0.0, 0.9) if loss == "wgan-gp" else (0.5, 0.999)
    opt_G = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    last: dict[str, float] = {}

    def step_fn(tr, batch: dict[str, Tensor]) -> dict[str, float]:
        Gn, Dn = tr.models["G"], tr.models["D"]
        real = batch["image"]
        b = real.shape[0]
        gen = tr.generator
        # 1. critic step on real images and a fresh batch of fakes
        z = torch.randn(b, z_dim, generator=gen, device=gen.device).to(real)
        with torch.no_grad():
            fake = Gn(z)
        d_real, d_fake = Dn(real), Dn(fake)
        if loss == "wgan-gp":
            gp = gradient_penalty(Dn, real, fake, generator=gen)
            loss_D = d_fake.mean() - d_real.mean() + gp_weight * gp
            stats = {"loss_D": loss_D.item(), "gp": gp.item(), "wdist": (d_real.mean() - d_fake.mean()).item()}
        else:
            loss_D = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            stats = {"loss_D": loss_D.item()}
        optimizer_step(tr, "D", loss_D)
        # 2. generator step every n_critic critic steps
        if (tr.step + 1) % n_critic == 0:
            with frozen(Dn):
                z = torch.randn(b, z_dim, generator=gen, device=gen.device).to(real)
                score = Dn(Gn(z))
                loss_G = -score.mean() if loss == "wgan-gp" else F.softplus(-score).mean()
                optimizer_step(tr, "G", loss_G)
            last["loss_G"] = loss_G.item()
        return {**stats, **last}

    def sample(tr, n: int, s: int) -> Tensor:
        Gm = tr.ema_model()
        z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(s)).to(tr.device)
        with torch.no_grad():
            return torch.cat([Gm(z[i:i + 64]) for i in range(0, n, 64)])

    n_steps = steps * n_critic
    hooks = [Hook(every=sample_every if sample_every > 0 else n_steps, fn=grid_hook(sample, seed=seed + 1000))]
    snaps = None
    if fid_oracle is not None:
        check_fid_settings(fid_every, fid_n)
        oracle = load_fid_oracle(fid_oracle, channels, res)
        snaps = FIDSnapshots(oracle, real_subset(train_ds, fid_n), lambda tr, n: sample(tr, n, seed + 2000),
                             every=fid_every, steps=n_steps)
        hooks.append(snaps.hook)
    run_info = {"recipe": "medcf.train.gan.train_gan", "data": where, "loss": loss, "steps": steps,
                "n_critic": n_critic, "gp_weight": gp_weight, "batch_size": batch_size, "lr": lr,
                "z_dim": z_dim, "base_channels": base_channels, "max_channels": max_channels,
                "resolution": res, "channels": channels, "ema_decay": ema_decay, "seed": seed,
                "fid_oracle": str(fid_oracle) if fid_oracle is not None else None, "fid_n": fid_n}
    tconf = TrainConfig(out_dir=str(out_dir), steps=n_steps, batch_size=batch_size, seed=seed,
                        log_every=log_every, checkpoint_every=checkpoint_every, ema_decay=ema_decay,
                        progress=progress)
    trainer = Trainer(tconf, models={"G": G, "D": D}, optimizers={"G": opt_G, "D": opt_D},
                      dataset=train_ds, step_fn=step_fn, export="G", hooks=hooks, run_info=run_info,
                      collate_fn=images_only)
    model_dir = Path(trainer.fit(resume=resume))
    meta = dict(read_header(model_dir).get("meta", {}))
    meta.update({"data": where, "loss": loss, "generator_steps": trainer.step // n_critic})
    fid = snaps.last_result(out_dir) if snaps is not None else None
    if fid:
        meta["fid"] = fid
    trainer.ema_model().save(model_dir, meta=meta)
    trainer.unwrap("D").save(Path(out_dir) / "critic", meta={"steps": trainer.step})
    return TrainedGAN(model_dir=model_dir, steps=trainer.step, fid=fid,
                      stats=last_stats(Path(out_dir)), wall_s=time.perf_counter() - t0)


__all__ = ["LOSSES", "TrainedGAN", "gradient_penalty", "train_gan"]
