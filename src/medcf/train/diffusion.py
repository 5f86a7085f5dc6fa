"""Training recipe for the DDPM backbone (kind ``diffusion``) on the shared engine.

Per step: draw t ~ U{0..T-1} and noise eps, form x_t with ``DDPMScheduler.add_noise``
and regress the UNet's output on its target (eps, v or x0 per ``prediction_type``)
with mean squared error. Adam with linear warm-up and cosine decay (a pure function
of the step, so a resumed run continues exactly), EMA of the exported model, the
engine's checkpoints, progress and resume. A conditional model (``cond=True``) sees
the label, dropped to the "no label" class with probability ``p_uncond``. Sample
grids (DDIM, fixed seed) go to ``RUN_DIR/samples/``. With ``fid_oracle`` (a medcf
classifier run), domain-FID snapshots (``medcf.train.fid_snapshots``) compare ``fid_n``
training images with as many DDIM samples (``fid_sample_steps`` steps, fixed noise; a
conditional model samples the real images' classes) every ``fid_every`` steps; the last
one is kept in the model's ``meta["fid"]``.

Example:
    >>> res = train_diffusion("data/synth64", "runs/ddpm", resolution=64, steps=4000)  # doctest: +SKIP
    >>> from diffusers import UNet2DModel
    >>> unet = UNet2DModel.from_pretrained("runs/ddpm/model")                          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medcf.errors import DataError, MedcfError
from medcf.generators.diffusion import DiffusionConfig, DiffusionModel
from medcf.train.fid_snapshots import (
    FIDSnapshots,
    check_fid_settings,
    keep_fid_in_meta,
    load_fid_oracle,
    real_subset,
    spread_indices,
)
from medcf.train.schedules import warmup_cosine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedDiffusion:
    """What the recipe returns."""

    model_dir: Path
    steps: int
    last_loss: float | None = None
    wall_s: float = 0.0
    fid: dict | None = None                 # last domain-FID snapshot ({"fid", "extractor", ...})


def diffusion_loss(model: DiffusionModel, scheduler: Any, x: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of the UNet's prediction on x_t = add_noise(x [B,C,H,W], eps, t); t, eps drawn
    from ``generator`` (on x's device)."""
    b = x.shape[0]
    n_t = scheduler.config.num_train_timesteps
    t = torch.randint(0, n_t, (b,), generator=generator, device=x.device)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_t = scheduler.add_noise(x, eps, t)
    out = model(x_t, t, labels)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = eps
    elif kind == "v_prediction":
        target = scheduler.get_velocity(x, eps, t)
    else:
        target = x
    return F.mse_loss(out.float(), target.float())


def train_diffusion(
    data,                                   # dataset dir/file (open_dataset) or a Dataset of sample dicts
    out_dir: str | os.PathLike,             # run directory (RUN_DIR/model is the EMA UNet, diffusers layout)
    *,
    resolution: int = 64,                   # images are resized to this
    cond: bool = False,                     # class-conditional UNet (labels needed)
    steps: int = 4000,                      # optimizer steps
    batch_size: int = 32,
    lr: float = 2e-4,                       # peak learning rate (Adam)
    widths: tuple[int, ...] = (32, 64, 128),  # UNet channels per level
    layers_per_block: int = 2,
    attention: bool = True,                 # attention at the lowest level and in the mid block
    train_timesteps: int = 1000,
    beta_schedule: str = "linear",
    prediction_type: str = "epsilon",
    p_uncond: float = 0.1,                  # conditional: probability of dropping the label
    ema_decay: float | None = 0.999,
    seed: int = 0,
    sample_every: int = 1000,               # steps between sample grids (0: only at the end)
    sample_steps: int = 50,                 # DDIM steps of the sample grids
    grid: tuple[int, int] = (4, 4),         # rows, columns of the sample grid
    fid_oracle: str | os.PathLike | None = None,  # classifier run for domain-FID snapshots (None: off)
    fid_every: int = 0,                     # steps between FID snapshots (0: only at the end)
    fid_n: int = 500,                       # real images and DDIM samples per snapshot
    fid_sample_steps: int = 20,             # DDIM steps of the FID samples
    resume: bool = False,
    progress: bool = True,
    log_every: int = 50,
    checkpoint_every: int = 500,
    num_workers: int = 0,
) -> TrainedDiffusion:
    """Train a DDPM on the images of ``data`` (labels only with ``cond``).

    Example:
        >>> train_diffusion("data/synth64", "runs/ddpm", steps=2000, widths=(32, 64, 64))  # doctest: +SKIP
    """
    from medcf.train.engine import Hook, TrainConfig, Trainer
    from medcf.train.recipe_common import write_step_grid
    from medcf.train.stylegan2 import _facts, _open_train_data

    if steps < 1 or batch_size < 1 or lr <= 0 or not 0.0 <= p_uncond < 1.0:
        raise MedcfError(f"steps, batch_size, lr must be positive and p_uncond in [0, 1), got "
                         f"{steps}, {batch_size}, {lr}, {p_uncond}")
    if fid_oracle is not None:
        check_fid_settings(fid_every, fid_n)
        if fid_sample_steps < 1:
            raise MedcfError(f"--fid-sample-steps: expected an integer >= 1, got {fid_sample_steps!r}")
    t_start = time.perf_counter()
    train_ds, where = _open_train_data(data, resolution)
    if len(train_ds) == 0:
        raise DataError(f"{where}: the training split is empty")
    channels, res, names = _facts(train_ds)
    if res != resolution:
        raise DataError(f"{where}: images are {res}x{res}, expected {resolution}x{resolution}")
    num_classes = 0
    if cond:
        num_classes = len(names) if names else int(getattr(train_ds, "num_classes", 0) or 0)
        if num_classes < 2:
            raise DataError(f"{where}: --cond needs a labelled dataset with class names (found {names or 'none'})")
    try:
        config = DiffusionConfig(resolution=res, channels=channels, widths=tuple(widths),
                                 layers_per_block=layers_per_block, attention=attention,
                                 num_classes=num_classes, class_names=tuple(names) if cond else (),
                                 train_timesteps=train_timesteps, beta_schedule=beta_schedule,
                                 prediction_type=prediction_type)
    except ValueError as e:
        raise MedcfError(str(e)) from None
    model = DiffusionModel(config, seed=seed)
    scheduler = model.ddpm_scheduler()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    warmup = max(1, min(500, steps // 20))
    last: dict[str, float] = {}

    def step_fn(tr, batch):
        net, optimizer = tr.models["model"], tr.optimizers["model"]
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(tr.step, steps, lr, warmup, floor=0.05)
        x = batch["image"]
        labels = None
        if cond:
            labels = batch["label"].long()
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
                raise DataError(f"{where}: label outside 0..{num_classes - 1}; conditional training needs "
                                "every image labelled")
            drop = torch.rand(labels.shape, generator=tr.generator, device=labels.device) < p_uncond
            labels = torch.where(drop, torch.full_like(labels, num_classes), labels)
        loss = diffusion_loss(net, scheduler, x, tr.generator, labels)
        optimizer.zero_grad(set_to_none=True)
        tr.backward(loss)
        optimizer.step()
        last["loss"] = loss.item()
        return {"loss": last["loss"], "lr": optimizer.param_groups[0]["lr"]}

    rows, cols = grid

    def sample_grid(tr) -> dict[str, Any]:
        net = tr.ema_model()
        labels = (torch.arange(rows * cols) // cols) % num_classes if cond else None
        gen = torch.Generator(device=tr.device).manual_seed(seed + 1000)
        images = net.sample(rows * cols, steps=sample_steps, labels=labels, generator=gen)
        return write_step_grid(tr, images, rows)

    hooks = [Hook(every=sample_every or steps, fn=sample_grid)] if rows * cols > 0 else []
    snaps = None
    if fid_oracle is not None:
        oracle = load_fid_oracle(fid_oracle, channels, res)
        fid_labels = (torch.tensor([int(train_ds[i]["label"]) for i in spread_indices(len(train_ds), fid_n)])
                      if cond else None)                               # [n]: sample the real images' classes

        def fid_sample(tr, n: int) -> torch.Tensor:                    # -> [n, C, R, R], fixed noise
            net = tr.ema_model()
            gen = torch.Generator(device=tr.device).manual_seed(seed + 2000)
            return torch.cat([net.sample(min(64, n - i), steps=fid_sample_steps, generator=gen,
                                         labels=fid_labels[i:i + 64] if cond else None)
                              for i in range(0, n, 64)])

        snaps = FIDSnapshots(oracle, real_subset(train_ds, fid_n), fid_sample, every=fid_every, steps=steps)
        hooks.append(snaps.hook)
    run_info = {"recipe": "medcf.train.diffusion.train_diffusion", "data": where, "resolution": res,
                "channels": channels, "cond": cond, "class_names": list(config.class_names), "steps": steps,
                "batch_size": batch_size, "lr": lr, "widths": list(config.widths),
                "layers_per_block": layers_per_block, "attention": attention, "train_timesteps": train_timesteps,
                "beta_schedule": beta_schedule, "prediction_type": prediction_type, "p_uncond": p_uncond,
                "ema_decay": ema_decay, "seed": seed, "sample_steps": sample_steps,
                "fid_oracle": str(fid_oracle) if fid_oracle is not None else None, "fid_n": fid_n,
                "fid_sample_steps": fid_sample_steps}
    tconf = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=batch_size, seed=seed,
                        log_every=log_every, checkpoint_every=checkpoint_every, ema_decay=ema_decay,
                        num_workers=num_workers, progress=progress)
    trainer = Trainer(tconf, models={"model": model}, optimizers={"model": opt}, dataset=train_ds,
                      step_fn=step_fn, export="model", hooks=hooks, run_info=run_info)
    model_dir = Path(trainer.fit(resume=resume))
    fid = snaps.last_result(out_dir) if snaps is not None else None
    if trainer.is_main_process:                          # the last snapshot travels with the model
        keep_fid_in_meta(trainer.ema_model(), model_dir, fid)
    return TrainedDiffusion(model_dir=model_dir, steps=trainer.step, last_loss=last.get("loss"),
                            wall_s=time.perf_counter() - t_start, fid=fid)


__all__ = ["TrainedDiffusion", "diffusion_loss", "train_diffusion"]
