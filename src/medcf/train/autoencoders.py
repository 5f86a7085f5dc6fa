"""Training recipe for the ``ae`` and ``vae`` backbones on the shared engine.

Loss per step: mean absolute error (L1) between image and reconstruction
+ ``kl_weight`` x KL(q(z|x) || N(0, I)) in nats per image value (C·H·W; VAE only)
+ ``perceptual`` x LPIPS (off by default; needs the LPIPS weights, see
``medcf weights``). Adam with a linear warm-up and cosine decay computed from
the step (so a resumed run continues exactly), EMA of the exported model, the
engine's checkpoints and resume. Validation figures (L1, PSNR of the exported
model on the val split) are logged and stored in the model's ``meta["val"]``.

Example:
    >>> res = train_autoencoder("data/synth64", "runs/vae", kind="vae", steps=1500)  # doctest: +SKIP
    >>> res.val["psnr"]                                                             # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from medcf.errors import DataError
from medcf.eval.ood import record_profile
from medcf.generators.autoencoder import (
    AUTOENCODERS,
    AutoencoderConfig,
    default_widths,
    load_autoencoder,
)
from medcf.io import read_header
from medcf.train.schedules import warmup_cosine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedAutoencoder:
    """What the recipe returns: where the model is and its validation figures."""

    model_dir: Path
    kind: str
    val: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


@torch.no_grad()
def reconstruction_figures(model, dataset: Dataset, *, batch_size: int = 128, limit: int | None = 512,
                           device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean L1 and PSNR (peak-to-peak 2, images in [-1, 1]) of ``decode(encode(x))``.

    Example:
        >>> reconstruction_figures(load_autoencoder("runs/vae"), open_dataset("data", split="val"))  # doctest: +SKIP
    """
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    was_training = model.training
    model.eval().to(device)
    l1, se, n = 0.0, [], 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x = batch["image"].to(device)
        r = model.reconstruct(x)
        l1 += float((r - x).abs().mean(dim=(1, 2, 3)).sum())
        se.append((r - x).pow(2).mean(dim=(1, 2, 3)).cpu())
        n += x.shape[0]
    model.train(was_training)
    mse = torch.cat(se)
    psnr = 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))
    return {"l1": l1 / max(n, 1), "psnr": float(psnr.mean()), "n": n}


def _open(data, split: str, resolution: int | None) -> Dataset:
    from medcf.data import open_dataset

    return open_dataset(data, split=split, resolution=resolution)


def _facts(ds: Dataset) -> tuple[int, int]:
    """(channels, resolution) of a dataset following the sample-dict contract."""
    base = ds.dataset if isinstance(ds, Subset) else ds
    try:
        return int(base.channels), int(base.resolution)
    except AttributeError:
        image = ds[0]["image"]
        return int(image.shape[0]), int(image.shape[-1])


def train_autoencoder(
    data,                                   # dataset dir/file (open_dataset) or a train Dataset
    out_dir: str | os.PathLike,             # run directory (RUN_DIR/model is the result)
    *,
    kind: str = "vae",                      # "vae" | "ae"
    steps: int = 1500,                      # optimizer steps
    batch_size: int = 32,
    lr: float = 2e-3,                       # peak learning rate (Adam)
    latent_dim: int | None = None,          # latent channels (None: 8 for a 16x16 latent, else 16)
    latent_size: int | None = None,         # latent side (None: from widths, else 16)
    widths: tuple[int, ...] | None = None,  # stage widths (None: one per halving from base_width)
    base_width: int = 16,                   # first stage width when ``widths`` is None
    blocks: int = 1,                        # residual blocks per stage
    kl_weight: float = 1e-3,                # VAE: weight of KL per image value
    perceptual: float = 0.0,                # LPIPS weight (0 = off)
    perceptual_net: str = "alex",
    ema_decay: float | None = 0.995,
    seed: int = 0,
    resolution: int | None = None,          # resize the data to this size
    val_data: Dataset | None = None,        # when ``data`` is a Dataset: optional val set
    val_every: int = 500,                   # steps between validation figures (0: never)
    resume: bool = False,
    progress: bool = True,
    log_every: int = 50,
    checkpoint_every: int = 500,
    num_workers: int = 0,
) -> TrainedAutoencoder:
    """Train an ``ae`` or ``vae`` on the images of ``data`` (labels unused).

    Example:
        >>> res = train_autoencoder("data/synth64", "runs/ae", kind="ae", steps=1000)  # doctest: +SKIP
    """
    from medcf.train.engine import Hook, TrainConfig, Trainer

    if kind not in AUTOENCODERS:
        raise ValueError(f"kind: expected one of {sorted(AUTOENCODERS)}, got {kind!r}")
    if steps < 1 or batch_size < 1 or lr <= 0 or kl_weight < 0 or perceptual < 0:
        raise ValueError(f"steps, batch_size, lr must be positive and kl_weight, perceptual >= 0, "
                         f"got {steps}, {batch_size}, {lr}, {kl_weight}, {perceptual}")
    t0 = time.perf_counter()
    where = str(data) if isinstance(data, (str, os.PathLike)) else "data"
    if isinstance(data, (str, os.PathLike)):
        if not Path(data).exists():
            raise DataError(f"{data}: data not found")
        train_ds = _open(data, "train", resolution)
        if val_data is None:
            try:
                val_data = _open(data, "val", resolution)
            except DataError as e:
                log.warning("%s: no validation split (%s)", data, e)
    else:
        train_ds = data
    if len(train_ds) == 0:
        raise DataError(f"{where}: the training split is empty")
    channels, res = _facts(train_ds)
    if latent_size is None:
        latent_size = res >> len(widths) if widths else 16
    if latent_dim is None:
        latent_dim = 8 if latent_size >= 16 else 16
    if latent_size < 1 or res % latent_size or (res // latent_size) & (res // latent_size - 1):
        raise DataError(f"{where}: image size {res} is not latent_size {latent_size} times a power "
                        "of two; pass resolution= to resize")
    widths = tuple(widths) if widths else default_widths(res, latent_size, base=base_width)
    config = AutoencoderConfig(resolution=res, channels=channels, latent_dim=latent_dim,
                               latent_size=latent_size, widths=widths, blocks=blocks)
    model = AUTOENCODERS[kind](config, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    warmup = max(1, min(100, steps // 20))
    per_value = channels * res * res
    lpips_holder: dict[str, Any] = {}
    if perceptual > 0:
        from medcf.eval.lpips import LPIPS

        lpips_holder["net"] = LPIPS(net=perceptual_net)  # fails early without weights

    def step_fn(tr, batch):
        net, optimizer = tr.models["model"], tr.optimizers["model"]
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(tr.step, steps, lr, warmup, floor=0.05)
        x = batch["image"]
        out = net(x, generator=tr.generator)
        l1 = (out.reconstruction - x).abs().mean()
        kl = out.kl().mean() / per_value
        loss = l1 + kl_weight * kl if kind == "vae" else l1
        stats = {"l1": l1.item()}
        if kind == "vae":
            stats["kl"] = kl.item()
        if perceptual > 0:
            lp = lpips_holder["net"].to(x.device)(out.reconstruction, x).mean()
            loss = loss + perceptual * lp
            stats["lpips"] = lp.item()
        optimizer.zero_grad(set_to_none=True)
        tr.backward(loss)
        optimizer.step()
        stats.update(loss=loss.item(), lr=optimizer.param_groups[0]["lr"])
        return stats

    hooks = []
    if val_data is not None and len(val_data) > 0 and val_every > 0:
        def validate(tr):
            figures = reconstruction_figures(tr.ema_model(), val_data, device=tr.device, limit=256)
            return {"val_l1": figures["l1"], "val_psnr": figures["psnr"]}

        hooks.append(Hook(every=val_every, fn=validate))
    run_info = {"recipe": "medcf.train.autoencoders.train_autoencoder", "kind": kind, "data": where,
                "steps": steps, "batch_size": batch_size, "lr": lr, "latent_dim": latent_dim,
                "latent_size": latent_size, "widths": list(config.widths), "blocks": blocks,
                "kl_weight": kl_weight, "perceptual": perceptual, "perceptual_net": perceptual_net,
                "ema_decay": ema_decay, "seed": seed, "resolution": res, "channels": channels}
    tconf = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=batch_size, seed=seed,
                        log_every=log_every, checkpoint_every=checkpoint_every, ema_decay=ema_decay,
                        num_workers=num_workers, progress=progress)
    trainer = Trainer(tconf, models={"model": model}, optimizers={"model": opt}, dataset=train_ds,
                      step_fn=step_fn, export="model", hooks=hooks, run_info=run_info)
    model_dir = Path(trainer.fit(resume=resume))

    val: dict[str, Any] = {}
    if val_data is not None and len(val_data) > 0:
        trained = load_autoencoder(model_dir, kind=kind)
        val = reconstruction_figures(trained, val_data, device=trainer.device)
        meta = dict(read_header(model_dir).get("meta", {}))
        meta.update({"val": val, "data": where})
        trained.save(model_dir, meta=meta)
        log.info("%s validation figures: %s", kind, val)
        # the training distribution's reconstruction errors, for the explain-time OOD warning
        record_profile(trained.reconstruct, DataLoader(val_data, batch_size=64), model_dir,
                       source=f"{where} (val split)", device=trainer.device)
    return TrainedAutoencoder(model_dir=model_dir, kind=kind, val=val, wall_s=time.perf_counter() - t0)
