"""StyleGAN2-ADA training parts (``medcf.train.stylegan2``): the ADA and G_ema policies, the
resume state beyond models and optimizers (``GANState``), the networks, the lazily
regularised Adam, the generator pass with style mixing, and gradient averaging.

Example:
    >>> G, D = build_networks(1, 32, 0, z_dim=64, w_dim=64, mapping_layers=2, channel_base=1024,
    ...                       channel_max=64, mbstd_group=4, fp16_res=0, seed=0)   # doctest: +SKIP
    >>> ada_adjust(0.0, 1.0, 0.6, 128, 100)
    0.00128
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.errors import DataError
from medcf.generators.stylegan2 import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    MappingConfig,
    SynthesisConfig,
)
from medcf.generators.stylegan2.augment import AugmentPipe

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
    the training device (no host sync per step; see :func:`stat_on`); ``p`` is mirrored on the
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


def stat_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def stat_on(value: Tensor | float, device: torch.device) -> Tensor:
    """A running statistic as a 0-dim tensor on ``device`` (float64 where the device has it)."""
    dtype = stat_dtype(device)
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


def sync_grads(tr, module: nn.Module) -> None:
    """Average gradients over processes (we call the unwrapped modules, so DDP does not)."""
    if tr.world_size == 1:
        return
    import torch.distributed as dist

    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= tr.world_size


def one_hot_labels(labels: Tensor, num_classes: int, where: str) -> Tensor:
    """labels [B] int64 -> c [B, K]; a label outside 0..K-1 (e.g. -1 = unlabelled) is an error."""
    if labels.numel():
        lo, hi = torch.stack(torch.aminmax(labels)).tolist()   # one read
        if lo < 0 or hi >= num_classes:
            raise DataError(f"{where}: label {lo}..{hi} outside 0..{num_classes - 1}; "
                            "conditional training needs every image labelled")
    return F.one_hot(labels.long(), num_classes).float()


__all__ = ["GANState", "ada_adjust", "build_networks", "ema_beta", "lazy_adam", "one_hot_labels",
           "run_generator", "stat_dtype", "stat_on", "sync_grads"]
