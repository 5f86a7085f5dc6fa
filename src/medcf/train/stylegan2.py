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

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from medcf.errors import DataError, MedcfError
from medcf.generators.stylegan2 import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    MappingConfig,
    SynthesisConfig,
)
from medcf.generators.stylegan2.augment import PRESETS, AugmentConfig, AugmentPipe
from medcf.io import atomic_write, read_header

log = logging.getLogger(__name__)

AUG_MODES = ("ada", "none")


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


# ----------------------------------------------------------------------------- policies


def ada_adjust(p: float, sign_mean: float, target: float, n_images: int, ada_kimg: float) -> float:
    """ADA heuristic r_t = E[sign(D(real))]: move p by n_images / (ada_kimg * 1000) toward target.

    p rises while r_t > target (D over-confident on reals, i.e. overfitting), falls
    otherwise, and never drops below 0. Example: ``ada_adjust(0.0, 1.0, 0.6, 128, 100)`` -> 0.00128.
    """
    step = np.sign(sign_mean - target) * n_images / (ada_kimg * 1000.0)
    return max(p + float(step), 0.0)


def ema_beta(step: int, batch_size: int, ema_kimg: float, rampup: float | None) -> float:
    """Per-step EMA decay for a half-life of ``ema_kimg`` thousand images (optional ramp-up).

    With ramp-up the half-life is capped at ``rampup`` x the images seen so far, so
    early G_ema follows G closely (decay 0 at step 0).
    """
    ema_nimg = ema_kimg * 1000.0
    if rampup is not None:
        ema_nimg = min(ema_nimg, step * batch_size * rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


class GANState:
    """Resume state beyond models/optimizers: ADA p and its sign accumulator, the PL mean.

    While training, ``sign_sum``, ``pl_mean`` and the ``last`` figures are 0-dim tensors on
    the training device (no host sync per step; see :func:`_on`); ``p`` is mirrored on the
    host, since only :meth:`set_p` changes it. ``state_dict`` holds plain floats.
    """

    def __init__(self, augment: AugmentPipe | None):
        self.augment = augment
        self._p = augment.get_p() if augment is not None else 0.0  # host copy of augment.p
        self.sign_sum: Tensor | float = 0.0   # sum of sign(D(real)) since the last p adjustment
        self.sign_count = 0                   # number of real logits in sign_sum
        self.pl_mean: Tensor | float = 0.0    # running mean of path lengths
        self.last: dict[str, Tensor | float] = {}  # latest lazy-phase figures, reported every step

    @property
    def p(self) -> float:
        return self._p

    def set_p(self, value: float) -> None:
        """Set the augmentation probability (the buffer's float32 value is mirrored exactly)."""
        if self.augment is not None:
            self.augment.set_p(value)
            self._p = float(torch.tensor(float(value), dtype=self.augment.p.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "sign_sum": float(self.sign_sum), "sign_count": self.sign_count,
                "pl_mean": float(self.pl_mean), "last": {k: float(v) for k, v in self.last.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.set_p(float(state["p"]))
        self.sign_sum, self.sign_count = float(state["sign_sum"]), int(state["sign_count"])
        self.pl_mean = float(state["pl_mean"])
        self.last = {k: float(v) for k, v in state.get("last", {}).items()}


def _stat_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _on(value: Tensor | float, device: torch.device) -> Tensor:
    """A running statistic as a 0-dim tensor on ``device`` (float64 where the device has it)."""
    dtype = _stat_dtype(device)
    if isinstance(value, Tensor):
        return value.to(device, dtype)
    return torch.tensor(value, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- building blocks


def build_networks(channels: int, resolution: int, c_dim: int, *, z_dim: int, w_dim: int,
                   mapping_layers: int, channel_base: int, channel_max: int, mbstd_group: int,
                   fp16_res: int, seed: int) -> tuple[Generator, Discriminator]:
    """A fresh G and D (official architectures: skip G, resnet D)."""
    clamp = 256.0 if fp16_res > 0 else None
    g_cfg = GeneratorConfig(z_dim=z_dim, w_dim=w_dim, c_dim=c_dim, img_resolution=resolution,
                            img_channels=channels, mapping=MappingConfig(num_layers=mapping_layers),
                            synthesis=SynthesisConfig(channel_base=channel_base, channel_max=channel_max,
                                                      num_fp16_res=fp16_res, conv_clamp=clamp))
    d_cfg = DiscriminatorConfig(c_dim=c_dim, img_resolution=resolution, img_channels=channels,
                                channel_base=channel_base, channel_max=channel_max,
                                num_fp16_res=fp16_res, conv_clamp=clamp, mbstd_group_size=mbstd_group)
    return Generator(g_cfg, seed=seed), Discriminator(d_cfg, seed=seed + 1)


def lazy_adam(params, lr: float, every: int) -> torch.optim.Adam:
    """Adam(betas=(0, 0.99)) with the lazy-regularisation correction for interval ``every``.

    The fused implementation where this torch has it for the parameters' device (CUDA, and
    CPU since torch 2.4), else the multi-tensor (foreach) one.
    """
    params = list(params)
    ratio = every / (every + 1) if every > 0 else 1.0
    kw = dict(lr=lr * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, foreach=True, **kw)


def run_generator(G: Generator, z: Tensor, c: Tensor | None, gen: torch.Generator,
                  style_mixing: float) -> tuple[Tensor, Tensor]:
    """z [B, z_dim], c [B, K] | None -> (images [B, C, R, R], ws [B, num_ws, w_dim]).

    With probability ``style_mixing`` the layers from a random cutoff on take the
    ws of a second latent (one cutoff per call). As in the official loop the second
    latent is always mapped and the choice is made on the device (no host sync).
    """
    ws = G.mapping(z, c)                                        # [B, num_ws, w_dim]
    if style_mixing > 0:
        n = ws.shape[1]
        u = torch.rand([2], generator=gen, device=gen.device).to(z.device)
        cutoff = 1 + (u[1] * (n - 1)).long()                   # in [1, num_ws)
        cutoff = torch.where(u[0] < style_mixing, cutoff, n)   # n: no mixing
        z2 = torch.randn(z.shape, generator=gen, device=gen.device).to(z.device)
        ws2 = G.mapping(z2, c, skip_w_avg_update=True)
        mix = torch.arange(n, device=z.device) >= cutoff      # [num_ws]
        ws = torch.where(mix[None, :, None], ws2, ws)
    img = G.synthesis(ws, noise_mode="random", generator=gen)
    return img, ws


def _sync_grads(tr, module: nn.Module) -> None:
    """Average gradients over processes (we call the unwrapped modules, so DDP does not)."""
    if tr.world_size == 1:
        return
    import torch.distributed as dist

    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= tr.world_size


def _one_hot(labels: Tensor, num_classes: int, where: str) -> Tensor:
    """labels [B] int64 -> c [B, K]; a label outside 0..K-1 (e.g. -1 = unlabelled) is an error."""
    if labels.numel():
        lo, hi = torch.stack(torch.aminmax(labels)).tolist()   # one read
        if lo < 0 or hi >= num_classes:
            raise DataError(f"{where}: label {lo}..{hi} outside 0..{num_classes - 1}; "
                            "conditional training needs every image labelled")
    return F.one_hot(labels.long(), num_classes).float()


def _open_train_data(data, resolution: int) -> tuple[Dataset, str]:
    """A path (train split where the data has splits, else all of it) or a Dataset as given."""
    if not isinstance(data, (str, os.PathLike)):
        return data, "data"
    from medcf.data import open_dataset

    if not Path(data).exists():
        raise DataError(f"{data}: data not found")
    try:
        return open_dataset(data, split="train", resolution=resolution), str(data)
    except DataError as e:
        log.info("%s: no train split (%s); using all images", data, e)
        return open_dataset(data, resolution=resolution), str(data)


def _facts(ds: Dataset) -> tuple[int, int, tuple[str, ...]]:
    """(channels, resolution, class_names) of a dataset following the sample-dict contract."""
    base = ds.dataset if isinstance(ds, Subset) else ds
    names = tuple(getattr(base, "class_names", ()) or ())
    image = ds[0]["image"]
    return int(image.shape[0]), int(image.shape[-1]), names


def save_grid(images: Tensor, rows: int, path: str | os.PathLike) -> Path:
    """images [N, C, H, W] in [-1, 1] (N = rows * cols, C = 1 or 3) -> PNG grid at ``path``."""
    n, c, h, w = images.shape
    cols = n // rows
    a = ((images[: rows * cols].detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    a = a.reshape(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c).numpy()
    img = Image.fromarray(a[..., 0] if c == 1 else a)
    return atomic_write(path, lambda p: img.save(p, format="PNG"))


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

    train_ds, where = _open_train_data(data, resolution)
    if len(train_ds) == 0:
        raise DataError(f"{where}: no training images")
    channels, res, class_names = _facts(train_ds)
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
    oracle = _load_oracle(fid_oracle, channels, resolution) if fid_oracle is not None else None

    def labels_of(batch: dict[str, Tensor]) -> Tensor | None:  # [B, K] one-hot or None
        return _one_hot(batch["label"], c_dim, where) if c_dim else None

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
        _sync_grads(tr, G)
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
            state.pl_mean = _on(state.pl_mean, dev).lerp(batch_mean.to(_stat_dtype(dev)), pl_decay)
            loss_pl = (lengths - state.pl_mean).square().mean() * pl_weight
            opt_G.zero_grad(set_to_none=True)
            tr.backward(loss_pl * pl_every)
            _sync_grads(tr, G)
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
        _sync_grads(tr, D)
        opt_D.step()
        state.sign_sum = _on(state.sign_sum, dev) + logits_real.detach().sign().sum()
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
            _sync_grads(tr, D)
            opt_D.step()
            state.last["loss_r1"] = loss_r1.detach()
        G.requires_grad_(True)

        # 5. ADA: every ada_interval steps move p toward E[sign(D(real))] == ada_target
        #    (the one host read of the step's statistics, at the policy's own interval)
        if augment is not None and (tr.step + 1) % ada_interval == 0:
            sums = torch.stack([_on(state.sign_sum, dev), _on(float(state.sign_count), dev)])
            if tr.world_size > 1:
                sums = tr.accelerator.reduce(sums, "sum")
            total, count = sums.tolist()
            rt = total / max(count, 1.0)
            state.set_p(ada_adjust(state.p, rt, ada_target, int(count), ada_kimg))
            state.sign_sum, state.sign_count = 0.0, 0
            state.last["ada_rt"] = rt
        # lazy figures repeat their latest value so that the engine's interval means stay true
        return {**stats, **state.last, "augment_p": state.p}

    hooks = [Hook(every=sample_every or n_steps, fn=_grid_hook(grid, c_dim, seed))]
    fid_holder: dict[str, Any] = {}
    if oracle is not None:
        hooks.append(Hook(every=fid_every or n_steps,
                          fn=_fid_hook(oracle, train_ds, fid_n, c_dim, seed, fid_holder)))
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
                      hooks=hooks, run_info=run_info, collate_fn=_collate)
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
        stats = _last_stats(Path(out_dir))
    return TrainedStyleGAN2(model_dir=model_dir, steps=trainer.step,
                            kimg=trainer.step * batch_size / 1000, augment_p=state.p,
                            fid=fid_holder.get("last"), stats=stats, wall_s=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- hooks and helpers


def _collate(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Only what GAN training reads: image [B, C, R, R] and label [B]."""
    return {"image": torch.stack([it["image"] for it in items]),
            "label": torch.stack([torch.as_tensor(it["label"]) for it in items])}


def _fixed_inputs(G: Generator, n: int, c_dim: int, seed: int, labels: Tensor | None = None
                  ) -> tuple[Tensor, Tensor | None]:
    """Fixed-seed z [n, z_dim] on CPU, and labels c [n, K] (given, or cycling through the classes)."""
    z = torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))
    if not c_dim:
        return z, None
    if labels is None:
        labels = torch.arange(n) % c_dim
    return z, F.one_hot(labels.long(), c_dim).float()


@torch.no_grad()
def _generate(G: Generator, z: Tensor, c: Tensor | None, batch: int = 64) -> Tensor:
    """G(z, c) with constant noise, in chunks. -> [n, C, R, R] on CPU."""
    dev = G.mapping.fc0.weight.device
    out = []
    for i in range(0, z.shape[0], batch):
        ci = c[i:i + batch].to(dev) if c is not None else None
        out.append(G(z[i:i + batch].to(dev), ci, noise_mode="const").cpu())
    return torch.cat(out)


def _grid_hook(grid: tuple[int, int], c_dim: int, seed: int):
    rows, cols = grid

    def sample_grid(tr) -> dict[str, Any]:
        G = tr.ema_model()
        # one class per row for a conditional G (row r shows class r mod K)
        labels = (torch.arange(rows * cols) // cols) % c_dim if c_dim else None
        z, c = _fixed_inputs(G, rows * cols, c_dim, seed + 1000, labels)
        images = _generate(G, z, c)                              # [rows*cols, C, R, R]
        name = f"samples/{tr.step:07d}.png"
        save_grid(images, rows, tr.run_dir / name)
        return {"samples_png": name}

    return sample_grid


def _load_oracle(path, channels: int, resolution: int) -> nn.Module:
    """A medcf classifier run (any kind with ``features``), checked against the data's image shape."""
    from medcf.classifiers import load_classifier

    model = load_classifier(path)
    try:
        model.features(torch.zeros(2, channels, resolution, resolution))
    except MedcfError as e:
        raise MedcfError(f"{path}: --fid-oracle does not accept the training images ({e})") from e
    return model


def _fid_hook(oracle: nn.Module, dataset: Dataset, n: int, c_dim: int, seed: int,
              holder: dict[str, Any]):
    from medcf.eval.fid import FID

    n = min(n, len(dataset))
    idx = np.linspace(0, len(dataset) - 1, n).round().astype(int).tolist()
    cache: dict[str, Tensor] = {}

    def fid_snapshot(tr) -> dict[str, Any]:
        if not cache:  # real images (and their labels) once, evenly spread over the data
            loader = DataLoader(Subset(dataset, idx), batch_size=64, collate_fn=_collate)
            batches = list(loader)
            cache["real"] = torch.cat([b["image"] for b in batches])
            cache["labels"] = torch.cat([b["label"] for b in batches])
        oracle.to(tr.device)
        G = tr.ema_model()
        z, c = _fixed_inputs(G, n, c_dim, seed + 2000, cache["labels"] if c_dim else None)
        fid = FID(oracle)
        for i in range(0, n, 64):
            fid.update(cache["real"][i:i + 64], real=True)
        fake = _generate(G, z, c)
        for i in range(0, n, 64):
            fid.update(fake[i:i + 64], real=False)
        result = fid.compute()
        holder["last"] = {**result.as_dict(), "step": tr.step}
        return {"fid": result.fid, "fid_extractor": result.extractor}

    return fid_snapshot


def _last_stats(run_dir: Path) -> dict[str, float]:
    """The last logged value of every numeric key in stats.jsonl."""
    import json

    out: dict[str, float] = {}
    path = run_dir / "stats.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            out.update({k: float(v) for k, v in rec.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


__all__ = ["TrainedStyleGAN2", "train_stylegan2", "ada_adjust", "ema_beta", "run_generator",
           "lazy_adam", "build_networks", "save_grid", "GANState"]
