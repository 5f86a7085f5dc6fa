"""Training recipe for the encoder that inverts a DCGAN (``medcf train gan-encoder``).

Every step samples ``z ~ N(0, I)`` from the engine's per-step ``torch.Generator``,
renders ``x = G(z)`` with the frozen generator and trains the encoder E on

    latent_weight · MSE(E(x), z)  +  image_weight · |G(E(x)) - x|  (+ lpips_weight · LPIPS)

and, with ``data`` (real, unlabelled images), adds ``real_weight · |G(E(x_real)) - x_real|``
so the encoder also sees the images GVR will explain. Adam with warm-up + cosine from
the step (exact resume), EMA of the exported encoder. Validation on held-out generated
pairs (latent MSE, image L1) and, with data, on real images (image L1) is stored in the
model's ``meta["val"]``.

Example:
    >>> res = train_gan_encoder("runs/gan", "runs/gan-encoder", data="data/synth64", steps=2000)  # doctest: +SKIP
    >>> res.val["image_l1"]                                                                      # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medcf.encoders.gan_encoder import GANEncoder
from medcf.errors import MedcfError, ShapeError
from medcf.generators.dcgan import load_dcgan_generator
from medcf.io import read_header
from medcf.train.encoder import TrainedEncoder, _Steps, inversion_step_fn

log = logging.getLogger(__name__)


class TrainedGANEncoder(TrainedEncoder):
    """What ``train_gan_encoder`` returns: ``model_dir``, validation figures ``val``, ``wall_s``."""


@torch.no_grad()
def gan_encoder_figures(E: nn.Module, G: nn.Module, z: Tensor, x: Tensor, real: Tensor | None = None,
                        batch_size: int = 64) -> dict[str, float]:
    """Latent MSE and image L1 of G(E(x)) over generated pairs (z [n, z_dim], x [n, C, R, R]);
    ``real_l1`` over real images [m, C, R, R] when given."""
    flags = E.training
    E.eval()
    mse, l1 = 0.0, 0.0
    for i in range(0, x.shape[0], batch_size):
        pred = E(x[i:i + batch_size])
        mse += float((pred - z[i:i + batch_size]).square().mean(1).sum())
        l1 += float((G(pred) - x[i:i + batch_size]).abs().mean(dim=(1, 2, 3)).sum())
    out = {"latent_mse": mse / x.shape[0], "image_l1": l1 / x.shape[0]}
    if real is not None and real.shape[0]:
        r = sum(float((G(E(real[i:i + batch_size])) - real[i:i + batch_size]).abs().mean(dim=(1, 2, 3)).sum())
                for i in range(0, real.shape[0], batch_size))
        out["real_l1"] = r / real.shape[0]  # training images: an inversion check, not held out
    E.train(flags)
    return out


def train_gan_encoder(
    generator,                              # a DCGANGenerator or its model/run directory
    out_dir: str | os.PathLike,             # run directory (RUN_DIR/model is the encoder)
    *,
    data=None,                              # optional real images (path or Dataset) for the real-image term
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-3,
    latent_weight: float = 1.0,
    image_weight: float = 1.0,
    real_weight: float = 1.0,               # weight of the real-image L1 (with data)
    lpips_weight: float = 0.0,              # LPIPS through G (0 = off: no weights needed)
    base_channels: int = 32,
    max_channels: int = 256,
    ema_decay: float | None = 0.995,
    seed: int = 0,
    val_samples: int = 256,
    resume: bool = False,
    progress: bool = True,
    log_every: int = 50,
    checkpoint_every: int = 500,
) -> TrainedGANEncoder:
    """Train a ``GANEncoder`` for ``generator`` on generated (z, G(z)) pairs (+ real images).

    Example:
        >>> res = train_gan_encoder("runs/gan", "runs/gan-encoder", steps=1000)   # doctest: +SKIP
    """
    from medcf.train.engine import TrainConfig, Trainer
    from medcf.train.gan import open_train_split, real_subset

    weights = (latent_weight, image_weight, real_weight, lpips_weight)
    if steps < 1 or batch_size < 1 or lr <= 0 or min(weights) < 0:
        raise MedcfError(f"train_gan_encoder: steps, batch_size, lr must be positive and loss weights >= 0, "
                         f"got {steps}, {batch_size}, {lr}, {weights}")
    t0 = time.perf_counter()
    where = str(generator) if isinstance(generator, (str, os.PathLike)) else ""
    G = load_dcgan_generator(generator) if where else copy.deepcopy(generator)
    G = G.eval().requires_grad_(False)
    E = GANEncoder.for_generator(G, seed=seed, generator_path=where, base_channels=base_channels,
                                 max_channels=max_channels)
    real_ds, data_where = (None, None)
    if data is not None:
        real_ds, data_where = open_train_split(data, G.img_resolution)
        image = real_ds[0]["image"]
        if image.shape[0] != G.img_channels:
            raise ShapeError(f"{data_where}: images have {image.shape[0]} channel(s) but the generator "
                             f"makes {G.img_channels}")
    lpips = None
    if lpips_weight > 0:
        from medcf.eval.lpips import LPIPS

        lpips = LPIPS()  # fails early without weights
    opt = torch.optim.Adam(E.parameters(), lr=lr, betas=(0.9, 0.99))

    def pairs(tr, b: int):  # (z [b, z_dim], G(z) [b, C, R, R]) from the step's generator
        z = torch.randn(b, G.z_dim, generator=tr.generator, device=tr.generator.device).to(tr.device)
        return z, G(z)

    def real_term(tr, net, b: int):  # real_weight · |G(E(x_real)) - x_real| on images picked by the step
        idx = torch.randint(0, len(real_ds), (b,), generator=tr.generator, device=tr.generator.device)
        xr = torch.stack([real_ds[int(i)]["image"] for i in idx.tolist()]).to(tr.device)  # [b, C, R, R]
        real_l1 = (G(net(xr)) - xr).abs().mean()
        return real_weight * real_l1, {"real_l1": real_l1.item()}

    step_fn = inversion_step_fn(G, steps=steps, lr=lr, pairs=pairs, render=G, latent_weight=latent_weight,
                                image_weight=image_weight, lpips_weight=lpips_weight, lpips=lpips,
                                image_terms=True,
                                extra=real_term if real_ds is not None and real_weight > 0 else None)

    run_info = {"recipe": "medcf.train.gan_encoder.train_gan_encoder", "generator": where, "data": data_where,
                "generator_fingerprint": E.config.generator_fingerprint, "steps": steps,
                "batch_size": batch_size, "lr": lr, "latent_weight": latent_weight,
                "image_weight": image_weight, "real_weight": real_weight, "lpips_weight": lpips_weight,
                "base_channels": base_channels, "max_channels": max_channels, "ema_decay": ema_decay,
                "seed": seed}
    tconf = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=batch_size, seed=seed,
                        log_every=log_every, checkpoint_every=checkpoint_every, ema_decay=ema_decay,
                        progress=progress)
    trainer = Trainer(tconf, models={"model": E}, optimizers={"model": opt}, dataset=_Steps(),
                      step_fn=step_fn, export="model", run_info=run_info)
    model_dir = Path(trainer.fit(resume=resume))

    val: dict[str, Any] = {}
    if val_samples > 0:
        g = torch.Generator().manual_seed(seed + 0x5EED)  # a seed training never uses
        z_val = torch.randn(val_samples, G.z_dim, generator=g).to(trainer.device)
        with torch.no_grad():
            x_val = G.to(trainer.device)(z_val)
        real = real_subset(real_ds, min(256, len(real_ds))).to(trainer.device) if real_ds is not None else None
        trained = GANEncoder.load(model_dir, device=trainer.device)
        val = gan_encoder_figures(trained, G, z_val, x_val, real)
        meta = dict(read_header(model_dir).get("meta", {}))
        meta.update({"val": val, "generator": where})
        trained.save(model_dir, meta=meta)
        log.info("gan-encoder validation figures: %s", val)
    return TrainedGANEncoder(model_dir=model_dir, val=val, wall_s=time.perf_counter() - t0)


__all__ = ["TrainedGANEncoder", "gan_encoder_figures", "train_gan_encoder"]
