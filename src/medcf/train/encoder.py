"""Training recipe for the StyleGAN2 encoder (image -> W+) on generated pairs.

No dataset is read: every step samples ``z ~ N(0, I)`` from the engine's per-step
``torch.Generator``, maps it to ``w`` (optionally truncated), renders ``x = G(w)``
with the generator's constant noise, and trains the encoder E on

    latent_weight · MSE(E(x), w)  +  l1_weight · |G(E(x)) - x|  +  lpips_weight · LPIPS(G(E(x)), x)

(the image terms backpropagate through the frozen generator). Adam with a
linear warm-up and cosine decay computed from the step, EMA of the exported
encoder, the engine's checkpoints and exact resume. A fixed validation set of
generated pairs gives latent MSE, image L1 and LPIPS, logged and stored in the
model's ``meta["val"]``.

Example:
    >>> res = train_encoder("runs/stylegan2", "runs/encoder", steps=2000)   # doctest: +SKIP
    >>> res.val["image_l1"]                                                  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from medcf.encoders.generator_io import load_stylegan2_generator, map_z
from medcf.encoders.stylegan_encoder import StyleGANEncoder
from medcf.errors import MedcfError
from medcf.eval.ood import record_profile
from medcf.io import read_header
from medcf.train.schedules import warmup_cosine

log = logging.getLogger(__name__)

EPOCH = 1 << 20  # length of the index "dataset" (the engine needs one; samples are generated)


class _Steps(Dataset):
    """A stand-in dataset of indices: the engine draws batches of it, the recipe ignores them."""

    def __len__(self) -> int:
        return EPOCH

    def __getitem__(self, i: int) -> dict:
        return {"index": torch.tensor(i)}


@dataclass(frozen=True)
class TrainedEncoder:
    model_dir: Path
    val: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


@torch.no_grad()
def generated_pairs(G: nn.Module, n: int, *, seed: int, truncation_psi: float = 1.0,
                    device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(ws [n, num_ws, w_dim], images [n, C, R, R]) from z drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=g).to(device)
    ws = map_z(G, z, truncation_psi=truncation_psi, rng=g)
    return ws, G.synthesis(ws, noise_mode="const")


@torch.no_grad()
def encoder_figures(encoder: nn.Module, G: nn.Module, ws: torch.Tensor, images: torch.Tensor, *,
                    lpips: nn.Module | None = None, batch_size: int = 64) -> dict[str, float]:
    """Latent MSE, image L1 and (with ``lpips``) LPIPS of G(E(x)) against x over generated pairs."""
    flags = encoder.training
    encoder.eval()
    mse, l1, lp, n = 0.0, 0.0, 0.0, 0
    for i in range(0, images.shape[0], batch_size):
        x, w = images[i:i + batch_size], ws[i:i + batch_size]
        pred = encoder(x)
        rec = G.synthesis(pred, noise_mode="const")
        mse += float((pred - w).square().mean(dim=(1, 2)).sum())
        l1 += float((rec - x).abs().mean(dim=(1, 2, 3)).sum())
        if lpips is not None:
            lp += float(lpips.to(x.device)(rec, x).sum())
        n += x.shape[0]
    encoder.train(flags)
    out = {"latent_mse": mse / n, "image_l1": l1 / n, "n": n}
    if lpips is not None:
        out["lpips"] = lp / n
    return out


def inversion_step_fn(G: nn.Module, *, steps: int, lr: float, pairs, render, latent_weight: float,
                      image_weight: float, lpips_weight: float, lpips: nn.Module | None, image_terms: bool,
                      extra=None):
    """The engine ``step_fn`` of an encoder trained on generated pairs (this recipe and
    ``medcf.train.gan_encoder``): warm-up + cosine learning rate from the step, then

        latent_weight · MSE(E(x), target)  +  image_weight · |render(E(x)) - x|  +  lpips_weight · LPIPS

    ``pairs(tr, b)`` -> (target latent, x [b, C, R, R]) is called without gradients;
    ``render(latent)`` -> image; the image terms (and the ``image_l1`` figure) only with
    ``image_terms``; ``extra(tr, net, b)`` -> (weighted loss term, figures) adds a term.

    Example:
        >>> fn = inversion_step_fn(G, steps=1000, lr=1e-3, pairs=pairs, render=G, latent_weight=1.0,
        ...                        image_weight=1.0, lpips_weight=0.0, lpips=None, image_terms=True)  # doctest: +SKIP
    """
    warmup = max(1, min(200, steps // 20))

    def step_fn(tr, batch):
        net, optimizer = tr.models["model"], tr.optimizers["model"]
        G.to(tr.device)
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(tr.step, steps, lr, warmup, floor=0.05)
        b = batch["index"].shape[0]
        with torch.no_grad():
            target, x = pairs(tr, b)                               # latent, [b, C, R, R]
        pred = net(x)
        latent = (pred - target).square().mean()
        loss = latent_weight * latent
        stats = {"latent_mse": latent.item()}
        if image_terms:
            rec = render(pred)                                     # [b, C, R, R]
            l1 = (rec - x).abs().mean()
            loss = loss + image_weight * l1
            stats["image_l1"] = l1.item()
            if lpips_weight > 0:
                lp = lpips.to(tr.device)(rec, x).mean()
                loss = loss + lpips_weight * lp
                stats["lpips"] = lp.item()
        if extra is not None:
            term, figures = extra(tr, net, b)
            loss = loss + term
            stats.update(figures)
        optimizer.zero_grad(set_to_none=True)
        tr.backward(loss)
        optimizer.step()
        stats.update(loss=loss.item(), lr=optimizer.param_groups[0]["lr"])
        return stats

    return step_fn


def train_encoder(
    generator,                              # a StyleGAN2 Generator, or its model/run directory
    out_dir: str | os.PathLike,             # run directory (RUN_DIR/model is the encoder)
    *,
    steps: int = 5000,
    batch_size: int = 32,
    lr: float = 1e-3,                       # peak Adam learning rate
    latent_weight: float = 1.0,             # MSE to the true ws
    l1_weight: float = 1.0,                 # image L1 through G
    lpips_weight: float = 0.5,              # image LPIPS through G (0 = off: no weights needed)
    truncation_psi: float = 1.0,            # truncation of the sampled w
    base_channels: int = 32,
    max_channels: int = 256,
    blocks: int = 1,
    ema_decay: float | None = 0.995,
    seed: int = 0,
    val_samples: int = 256,                 # generated validation pairs (0 = none)
    val_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    log_every: int = 50,
    checkpoint_every: int = 500,
    lpips: nn.Module | None = None,         # an LPIPS module to reuse (default: from the medcf cache)
) -> TrainedEncoder:
    """Train a ``StyleGANEncoder`` for ``generator`` on generated (w, G(w)) pairs.

    Example:
        >>> res = train_encoder("runs/stylegan2", "runs/encoder", steps=2000, batch_size=32)  # doctest: +SKIP
    """
    from medcf.train.engine import Hook, TrainConfig, Trainer

    if steps < 1 or batch_size < 1 or lr <= 0 or min(latent_weight, l1_weight, lpips_weight) < 0:
        raise MedcfError(f"train_encoder: steps, batch_size, lr must be positive and loss weights >= 0, "
                         f"got {steps}, {batch_size}, {lr}, {latent_weight}, {l1_weight}, {lpips_weight}")
    if latent_weight + l1_weight + lpips_weight == 0:
        raise MedcfError("train_encoder: every loss weight is 0 (nothing to train)")
    t0 = time.perf_counter()
    where = str(generator) if isinstance(generator, (str, os.PathLike)) else ""
    # a private copy: frozen, in eval mode (no w_avg updates), the caller's module untouched
    G = load_stylegan2_generator(generator) if where else copy.deepcopy(generator)
    G = G.eval().requires_grad_(False)
    encoder = StyleGANEncoder.for_generator(G, seed=seed, generator_path=where, base_channels=base_channels,
                                            max_channels=max_channels, blocks=blocks)
    opt = torch.optim.Adam(encoder.parameters(), lr=lr, betas=(0.9, 0.99))
    if lpips is None and lpips_weight > 0:
        from medcf.eval.lpips import LPIPS

        lpips = LPIPS()  # fails early without weights

    def pairs(tr, b: int):  # (ws [b, num_ws, w_dim], x [b, C, R, R]) from the step's generator
        z = torch.randn(b, G.z_dim, generator=tr.generator, device=tr.generator.device).to(tr.device)
        ws = map_z(G, z, truncation_psi=truncation_psi, rng=tr.generator)
        return ws, G.synthesis(ws, noise_mode="const")

    step_fn = inversion_step_fn(G, steps=steps, lr=lr, pairs=pairs,
                                render=lambda w: G.synthesis(w, noise_mode="const"),
                                latent_weight=latent_weight, image_weight=l1_weight, lpips_weight=lpips_weight,
                                lpips=lpips, image_terms=l1_weight > 0 or lpips_weight > 0)

    val: dict[str, Any] = {}
    hooks = []
    if val_samples > 0:
        # validation pairs from a seed that training never uses
        val_ws, val_x = generated_pairs(G, val_samples, seed=seed + 0x5EED, truncation_psi=truncation_psi)

        def validate(tr):
            f = encoder_figures(tr.ema_model(), G.to(tr.device), val_ws.to(tr.device), val_x.to(tr.device),
                                lpips=lpips)
            return {f"val_{k}": v for k, v in f.items() if k != "n"}

        if val_every > 0:
            hooks.append(Hook(every=val_every, fn=validate))
    run_info = {"recipe": "medcf.train.encoder.train_encoder", "generator": where,
                "generator_fingerprint": encoder.config.generator_fingerprint, "steps": steps,
                "batch_size": batch_size, "lr": lr, "latent_weight": latent_weight, "l1_weight": l1_weight,
                "lpips_weight": lpips_weight, "truncation_psi": truncation_psi,
                "base_channels": base_channels, "max_channels": max_channels, "blocks": blocks,
                "ema_decay": ema_decay, "seed": seed, "val_samples": val_samples}
    tconf = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=batch_size, seed=seed,
                        log_every=log_every, checkpoint_every=checkpoint_every, ema_decay=ema_decay,
                        progress=progress)
    trainer = Trainer(tconf, models={"model": encoder}, optimizers={"model": opt}, dataset=_Steps(),
                      step_fn=step_fn, export="model", hooks=hooks, run_info=run_info)
    model_dir = Path(trainer.fit(resume=resume))

    if val_samples > 0:
        trained = StyleGANEncoder.load(model_dir, device=trainer.device)
        val = encoder_figures(trained, G.to(trainer.device), val_ws.to(trainer.device),
                              val_x.to(trainer.device), lpips=lpips)
        meta = dict(read_header(model_dir).get("meta", {}))
        meta.update({"val": val, "generator": where})
        trained.save(model_dir, meta=meta)
        log.info("encoder validation figures: %s", val)
        # G(E(x)) errors on held-out generated images, for the explain-time OOD warning
        G_dev = G.to(trainer.device)
        record_profile(lambda x: G_dev.synthesis(trained(x), noise_mode="const"),
                       val_x.to(trainer.device).split(64), model_dir,
                       source=f"{val_samples} generated validation images of {where}")
    return TrainedEncoder(model_dir=model_dir, val=val, wall_s=time.perf_counter() - t0)
