"""Optimisation-based projection of images into a StyleGAN2 latent space (W or W+).

Follows the projector of Karras et al. (StyleGAN2, CVPR 2020; stylegan2-ada
``projector.py``), batched and with a pixel term:

1. statistics of W from ``w_avg_samples`` mapped z: mean ``w̄`` and spread ``σ_w``;
2. the latent starts at ``w̄`` (or at ``init``: an encoder's output, or a saved
   latent to resume from); W optimises one w per image ``[B, 1, w_dim]`` broadcast
   to every layer, W+ one per layer ``[B, num_ws, w_dim]``;
3. per-image noise maps ``[B, 1, R, R]`` of every synthesis layer are optimised too
   (``optimize_noise``), regularised toward white noise by the multi-scale
   autocorrelation penalty and renormalised to mean 0 / std 1 after each step;
4. per step: ``lpips_weight·LPIPS(G(w), x) + l2_weight·MSE(G(w), x) +
   noise_reg_weight·reg``; Adam with a cosine ramp-down and a linear ramp-up of the
   learning rate; on a cold start, Gaussian noise ``σ_w·initial_noise_factor`` added
   to w decays to zero over the first ``noise_ramp`` of the steps (resumed runs
   skip it: they continue from where the saved latent was).

Grayscale needs nothing special: the pixel term works on the generator's own
channels and medcf's LPIPS repeats one channel to three. Images in a batch are
independent (the loss is a sum of per-image terms and Adam works elementwise),
so projecting a batch gives the same latents as projecting each image alone.

The generator is not modified: its noise buffers are swapped for the optimised
maps during ``project`` and restored afterwards; gradients go only to the latents.

Example:
    >>> proj = Projector(G, config=ProjectorConfig(space="w+", steps=300))      # doctest: +SKIP
    >>> res = proj.project(x, generator=torch.Generator().manual_seed(0))       # doctest: +SKIP
    >>> res.save("out/latents.safetensors")                                     # doctest: +SKIP
    >>> more = proj.project(x, init=load_latents("out/latents.safetensors"))    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from medcf.errors import CheckpointError, DataError, ShapeError
from medcf.generators.stylegan2.loading import latent_shape, map_z
from medcf.io import atomic_write, first_line
from medcf.progress import tqdm  # a live bar on a terminal, plain lines in a log
from medcf.types import check_images

log = logging.getLogger(__name__)

SPACES = ("w", "w+")
LATENTS_FORMAT = "medcf-latents"


@dataclass(frozen=True)
class ProjectorConfig:
    space: str = "w+"                 # "w": one w per image | "w+": one w per synthesis layer
    steps: int = 300                  # optimisation steps
    lr: float = 0.1                   # peak Adam learning rate
    lr_rampup: float = 0.05           # fraction of steps of the linear warm-up
    lr_rampdown: float = 0.25         # fraction of steps of the final cosine ramp-down
    lpips_weight: float = 1.0         # LPIPS (real weights) term; 0 = off (no weights needed)
    l2_weight: float = 1.0            # mean squared pixel error term
    noise_reg_weight: float = 1e5     # noise-map autocorrelation penalty
    optimize_noise: bool = True       # optimise per-image noise maps (else keep G's constant noise)
    initial_noise_factor: float = 0.05  # cold start: w noise std as a fraction of σ_w
    noise_ramp: float = 0.75          # fraction of steps over which that w noise decays to 0
    w_avg_samples: int = 2000         # z samples for the W statistics
    stats_seed: int = 0               # seed of those samples (a private torch.Generator)
    lpips_net: str = "alex"           # "alex" | "vgg"
    progress: bool = True             # tqdm progress bar

    def __post_init__(self):
        where = "ProjectorConfig"
        if self.space not in SPACES:
            raise ValueError(f"{where}.space: expected one of {SPACES}, got {self.space!r}")
        if self.steps < 0 or self.lr <= 0 or self.w_avg_samples < 2:
            raise ValueError(f"{where}: steps >= 0, lr > 0 and w_avg_samples >= 2 needed, "
                             f"got {self.steps}, {self.lr}, {self.w_avg_samples}")
        if min(self.lpips_weight, self.l2_weight, self.noise_reg_weight) < 0:
            raise ValueError(f"{where}: loss weights must be >= 0")
        if self.lpips_weight == 0 and self.l2_weight == 0:
            raise ValueError(f"{where}: lpips_weight and l2_weight are both 0 (nothing to fit)")
        if not (0 < self.lr_rampup <= 1 and 0 < self.lr_rampdown <= 1 and 0 < self.noise_ramp <= 1):
            raise ValueError(f"{where}: lr_rampup, lr_rampdown and noise_ramp must lie in (0, 1]")


@dataclass
class ProjectionResult:
    """Latents, their images and the loss history of one ``project`` call."""

    latents: Tensor                   # [B, num_ws, w_dim] (space "w+") or [B, w_dim] (space "w")
    images: Tensor                    # [B, C, H, W] G(latents) with the optimised noise
    losses: dict[str, list[float]]    # per step, batch means: "loss", "lpips", "l2", "noise_reg"
    final: dict[str, Tensor]          # per image [B] at the returned latents
    noise: dict[str, Tensor] = field(default_factory=dict)  # layer name -> [B, 1, R, R]
    space: str = "w+"
    steps: int = 0
    seconds: float = 0.0

    def save(self, path: str | os.PathLike, *, meta: dict[str, Any] | None = None) -> Path:
        """Write latents (+ noise maps) as safetensors; ``Projector.project(init=...)`` resumes from it."""
        info = {"space": self.space, "steps": self.steps,
                "final": {k: v.tolist() for k, v in self.final.items()}, **(meta or {})}
        return save_latents(path, self.latents, noise=self.noise, meta=info)


@dataclass
class SavedLatents:
    latents: Tensor                   # [B, num_ws, w_dim] or [B, w_dim]
    noise: dict[str, Tensor]          # layer name -> [B, 1, R, R] (may be empty)
    meta: dict[str, Any]


def save_latents(path: str | os.PathLike, latents: Tensor, *, noise: dict[str, Tensor] | None = None,
                 meta: dict[str, Any] | None = None) -> Path:
    """Atomically write ``latents`` (and optional per-layer noise maps) to a .safetensors file."""
    tensors = {"latents": latents.detach().cpu().float().contiguous()}
    for name, t in (noise or {}).items():
        tensors[f"noise/{name}"] = t.detach().cpu().float().contiguous()
    header = {"format": LATENTS_FORMAT, "meta": json.dumps(meta or {})}
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=header))


def load_latents(path: str | os.PathLike) -> SavedLatents:
    """Read a file written by ``save_latents`` / ``ProjectionResult.save``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: latents file not found")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({first_line(e)})") from e
    if header.get("format") != LATENTS_FORMAT or "latents" not in tensors:
        raise CheckpointError(f"{path}: not a medcf latents file (format {header.get('format')!r})")
    try:
        meta = json.loads(header.get("meta", "{}"))
    except ValueError:
        meta = {}
    noise = {k[len("noise/"):]: v for k, v in tensors.items() if k.startswith("noise/")}
    return SavedLatents(latents=tensors["latents"], noise=noise, meta=meta)


def noise_regularization(noise: list[Tensor]) -> Tensor:
    """Per-image autocorrelation penalty of noise maps [B, 1, R, R] at every octave -> [B]."""
    total = None
    for v in noise:
        while True:
            a = (v * torch.roll(v, shifts=1, dims=3)).mean(dim=(1, 2, 3)).square()
            b = (v * torch.roll(v, shifts=1, dims=2)).mean(dim=(1, 2, 3)).square()
            total = a + b if total is None else total + a + b
            if v.shape[-1] <= 8:
                break
            v = F.avg_pool2d(v, kernel_size=2)
    return total


def lr_schedule(t: float, cfg: ProjectorConfig) -> float:
    """Learning-rate factor at progress ``t`` in [0, 1): linear warm-up, cosine ramp-down."""
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * min(1.0, t / cfg.lr_rampup)


def _noise_layers(generator: nn.Module) -> dict[str, nn.Module]:
    synthesis = getattr(generator, "synthesis", None)
    if synthesis is None:
        return {}
    return {name: m for name, m in synthesis.named_modules()
            if isinstance(getattr(m, "_buffers", {}).get("noise_const"), Tensor)}


@contextlib.contextmanager
def _swapped_noise(layers: dict[str, nn.Module], maps: dict[str, Tensor]):
    """Use ``maps`` as the layers' constant noise inside the block; restore the originals after."""
    saved = {name: m._buffers["noise_const"] for name, m in layers.items()}
    try:
        for name, t in maps.items():
            layers[name]._buffers["noise_const"] = t
        yield
    finally:
        for name, t in saved.items():
            layers[name]._buffers["noise_const"] = t


@contextlib.contextmanager
def _eval(module: nn.Module):
    flag = module.training
    try:
        yield module.eval()
    finally:
        module.train(flag)


class Projector:
    """Fits StyleGAN2 latents to images by gradient descent (see the module docstring).

    Args:
        generator: the in-house StyleGAN2 ``Generator`` (never modified).
        config: a ``ProjectorConfig``.
        lpips: an ``LPIPS`` module to reuse (default: built from the medcf cache when
            ``lpips_weight > 0``).

    Example:
        >>> proj = Projector(G, config=ProjectorConfig(space="w", steps=200))   # doctest: +SKIP
        >>> res = proj.project(x)                                              # doctest: +SKIP
        >>> res.latents.shape                                                  # doctest: +SKIP
        torch.Size([4, 512])
    """

    def __init__(self, generator: nn.Module, *, config: ProjectorConfig | None = None,
                 lpips: nn.Module | None = None):
        self.generator = generator
        self.config = config or ProjectorConfig()
        self.num_ws, self.w_dim = latent_shape(generator)
        self._lpips = lpips
        if self._lpips is None and self.config.lpips_weight > 0:
            from medcf.eval.lpips import LPIPS

            self._lpips = LPIPS(net=self.config.lpips_net)  # fails early without weights
        self._stats: tuple[Tensor, float] | None = None

    @property
    def device(self) -> torch.device:
        p = next(self.generator.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def w_stats(self) -> tuple[Tensor, float]:
        """(mean w [w_dim], σ_w) over ``w_avg_samples`` mapped z (computed once, privately seeded)."""
        if self._stats is None:
            g = torch.Generator().manual_seed(self.config.stats_seed)
            z = torch.randn(self.config.w_avg_samples, self.generator.z_dim, generator=g).to(self.device)
            with torch.no_grad(), _eval(self.generator):
                w = map_z(self.generator, z, rng=g)[:, 0].float()  # [N, w_dim]
            mean = w.mean(0)
            std = float((w - mean).square().sum(1).mean().sqrt())
            self._stats = (mean, std)
        return self._stats

    def _start(self, b: int, init: Tensor | SavedLatents | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Initial latents [B, L, w_dim] (L = 1 for W, num_ws for W+) and any saved noise maps."""
        noise: dict[str, Tensor] = {}
        if isinstance(init, SavedLatents):
            init, noise = init.latents, init.noise
        L = 1 if self.config.space == "w" else self.num_ws
        if init is None:
            return self.w_stats()[0].view(1, 1, -1).repeat(b, L, 1), noise
        w = init.detach().to(self.device, torch.float32)
        if w.ndim == 2 and w.shape == (b, self.w_dim):
            w = w.unsqueeze(1)
        if w.ndim != 3 or w.shape[0] != b or w.shape[2] != self.w_dim or w.shape[1] not in (1, self.num_ws):
            raise ShapeError(f"init: expected latents [{b}, {self.w_dim}] or [{b}, {self.num_ws}, "
                             f"{self.w_dim}], got {tuple(w.shape)}")
        if L == 1 and w.shape[1] > 1:
            if not torch.allclose(w, w[:, :1].expand_as(w)):
                raise ShapeError("init: W+ latents with different layers cannot start a projection "
                                 "into W; use space='w+'")
            w = w[:, :1]
        return w.repeat(1, L // w.shape[1], 1).clone(), noise

    def project(self, x: Tensor, init: Tensor | SavedLatents | None = None, *,
                generator: torch.Generator | None = None) -> ProjectionResult:
        """Latents of images ``x`` [B, C, H, W] in [-1, 1].

        ``init``: latents [B, w_dim] / [B, num_ws, w_dim] to start from (an encoder's
        output), or a ``SavedLatents`` from ``load_latents`` to resume (noise maps too).
        ``generator`` draws the initial noise maps and the w noise (default: a fresh
        ``torch.Generator`` seeded 0, so repeated calls agree; the global RNG is never used).
        """
        cfg = self.config
        t0 = time.perf_counter()
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        G = self.generator
        check_images(x, channels=G.img_channels, resolution=G.img_resolution, name="Projector input")
        device = self.device
        if self._lpips is not None:
            self._lpips.to(device)
        target = x.detach().to(device, torch.float32)
        b = target.shape[0]
        resumed = init is not None
        w_opt, saved_noise = self._start(b, init)
        w_opt.requires_grad_(True)
        w_std = self.w_stats()[1]

        layers = _noise_layers(G) if cfg.optimize_noise else {}
        maps: dict[str, Tensor] = {}
        for name, m in layers.items():
            r = m._buffers["noise_const"].shape[-1]
            if name in saved_noise and saved_noise[name].shape == (b, 1, r, r):
                t = saved_noise[name].to(device, torch.float32).clone()
            else:
                if name in saved_noise:
                    log.warning("projector: saved noise %s has shape %s, expected %s; drawing new noise",
                                name, tuple(saved_noise[name].shape), (b, 1, r, r))
                t = torch.randn((b, 1, r, r), generator=generator,
                                device=generator.device).to(device)
            maps[name] = t.requires_grad_(True)
        params = [w_opt, *maps.values()]
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
        history: dict[str, list[float]] = {"loss": [], "lpips": [], "l2": [], "noise_reg": []}

        with _eval(G), _swapped_noise(layers, maps):
            bar = tqdm(range(cfg.steps), desc="project", unit="step", disable=not cfg.progress,
                       dynamic_ncols=True, leave=False)
            for step in bar:
                t = step / max(cfg.steps, 1)
                scale = 0.0 if resumed else w_std * cfg.initial_noise_factor * max(0.0, 1 - t / cfg.noise_ramp) ** 2
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * lr_schedule(t, cfg)
                w = w_opt
                if scale > 0:
                    w = w + scale * torch.randn(w.shape, generator=generator, device=generator.device).to(device)
                with torch.enable_grad():
                    terms = self._losses(w, target, list(maps.values()))
                    grads = torch.autograd.grad(terms["loss"].sum(), params)
                for p, g in zip(params, grads, strict=True):
                    p.grad = g
                opt.step()
                with torch.no_grad():  # keep the noise maps white: mean 0, std 1 per image
                    for v in maps.values():
                        v -= v.mean(dim=(1, 2, 3), keepdim=True)
                        v *= v.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
                for k, v in terms.items():
                    history[k].append(float(v.detach().mean()))
                if cfg.progress and step % 10 == 0:
                    bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", refresh=False)
            with torch.no_grad():
                final = self._losses(w_opt, target, list(maps.values()), keep_images=True)
        images = final.pop("images")
        w_out = w_opt.detach()[:, 0] if cfg.space == "w" else w_opt.detach()
        seconds = time.perf_counter() - t0
        log.info("projected %d image(s) into %s in %d steps, %.1f s (loss %.4f)", b, cfg.space, cfg.steps,
                 seconds, float(final["loss"].mean()))
        return ProjectionResult(latents=w_out, images=images.detach(), losses=history,
                                final={k: v.detach().cpu() for k, v in final.items()},
                                noise={k: v.detach() for k, v in maps.items()}, space=cfg.space,
                                steps=cfg.steps, seconds=seconds)

    def _losses(self, w: Tensor, target: Tensor, noise: list[Tensor], *,
                keep_images: bool = False) -> dict[str, Tensor]:
        """Per-image loss terms [B] of latents w [B, L, w_dim] (L broadcast to num_ws)."""
        cfg = self.config
        ws = w.expand(-1, self.num_ws, -1) if w.shape[1] == 1 else w
        images = self.generator.synthesis(ws, noise_mode="const")  # [B, C, H, W]
        zero = torch.zeros(target.shape[0], device=target.device)
        l2 = (images - target).square().mean(dim=(1, 2, 3))
        lp = self._lpips(images, target).reshape(-1) if cfg.lpips_weight > 0 else zero
        reg = noise_regularization(noise) if noise and cfg.noise_reg_weight > 0 else zero
        loss = cfg.l2_weight * l2 + cfg.lpips_weight * lp + cfg.noise_reg_weight * reg
        out = {"loss": loss, "lpips": lp, "l2": l2, "noise_reg": reg}
        if keep_images:
            out["images"] = images
        return out

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)
