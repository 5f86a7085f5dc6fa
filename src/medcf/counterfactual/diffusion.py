"""Diffusion counterfactuals: noise the input part-way, then denoise with classifier guidance.

One explainer, three modes (``DiffusionCFConfig.mode``):

- ``fast`` (FastDiME-style, Weng et al. 2024): noise x to step t0 (a fraction of the
  schedule), then run DDIM (eta 0) back to 0. At each step the one-step clean-image
  estimate x0-hat is pushed along the gradient of the classifier's target
  log-probability, less an L1 (and optional LPIPS) pull toward the input; the guided
  x0-hat gives the noise estimate for ``DDIMScheduler.step``. One UNet call per step.
- ``dime`` (DiME, Jeanneret et al. 2022): the same, but the gradient is taken on an
  x0-hat from an inner unguided DDIM run to 0 at every step (O(steps^2) UNet calls),
  the quality/speed reference.
- ``masked`` (ACE/FastDiME-style): a first ``fast`` pass, compared with an unguided
  denoising from the same noise, gives the change the guidance made (not the backbone's
  reconstruction error; ``mask_source``: their difference, or the guided pass's excess change
  over the unguided one); it is thresholded and dilated into a mask, and a second guided pass regenerates only
  inside the mask (RePaint-style: outside, x_t is the input noised with the same
  noise). Every pixel outside the mask is the input, bit for bit.

In every mode, ``encode="invert"`` reaches t0 by deterministic DDIM inversion of x instead
of seeded noise (details survive; ``steps`` more UNet calls).

In all modes the gradient on x0-hat is applied to the noisy sample through x0-hat
(DiME's shortcut: no backpropagation through the UNet). Each gradient is scaled to
unit RMS per image, so ``guidance`` is a per-step change in pixel units. When a
query's final image does not reach the target, its denoising is rerun with the
guidance multiplied by ``escalate`` (up to ``max_tries`` runs), as DiME does.

The path (for the GIF) is the input, then the guided x0-hat after every step, then the
final sample. The counterfactual is the final sample (``take="final"``; the input when it
already reaches ``take_at``), or, with ``take="trajectory"``, the first frame of the path
reaching ``take_at`` by the shared rule (early x0-hat frames are blurry).

Example:
    >>> from medcf.generators.diffusion import load_diffusion
    >>> cf = DiffusionCF(model=load_diffusion("runs/ddpm"), classifier=clf,
    ...                  config=DiffusionCFConfig(mode="fast")).explain(x)      # doctest: +SKIP
    >>> cf.flipped                                                               # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medcf.counterfactual._common import change_mask, check_mask_settings, threshold_map
from medcf.counterfactual.base import Explainer, PathConfig
from medcf.errors import CheckpointError, MedcfError
from medcf.generators.diffusion import KIND, DiffusionModel, check_diffusion_input
from medcf.types import Counterfactual, Target

MODES = ("fast", "masked", "dime")
TAKES = ("final", "trajectory")
ENCODES = ("noise", "invert")
MASK_SOURCES = ("difference", "excess")


@dataclass(frozen=True)
class DiffusionCFConfig(PathConfig):
    mode: str = "fast"                # fast | masked | dime
    t0: float = 0.4                   # start noise level: fraction of the training schedule
    steps: int = 20                   # DDIM steps from t0 back to 0
    guidance: float = 0.05            # classifier push on x0-hat per step (RMS pixel units)
    l1: float = 0.3                   # L1 pull toward the input, relative to the classifier push
    lpips: float = 0.0                # LPIPS pull (relative; needs the LPIPS weights, `medcf weights`)
    escalate: float = 2.0             # guidance multiplier for queries that did not reach the target
    max_tries: int = 3                # denoising runs per query (1: no escalation)
    mask_threshold: float = 0.25      # masked: |difference| >= this fraction of its per-image maximum
    mask_dilate: int = 2              # masked: dilation radius of the mask in pixels
    mask_smooth: int = 0              # masked: box-average radius of |difference| before thresholding
    mask_source: str = "difference"   # masked: difference: |guided - unguided|; excess: how much more
                                      # the guided pass moved from x than the unguided one (a detail both
                                      # lose, or redraw, counts zero)
    seed: int = 0                     # noise used to reach t0
    encode: str = "noise"             # how x reaches t0: noise (seeded Gaussian, as DiME) | invert
                                      # (deterministic DDIM inversion, without a class label for a
                                      # conditional UNet: steps more UNet calls, no seed)
    take: str = "final"               # final: the denoised sample (or the input if already there);
                                      # trajectory: the shared take_at rule over every x0-hat frame
    progress: bool = False            # a tqdm bar over denoising steps

    def __post_init__(self):
        super().__post_init__()
        where = "DiffusionCFConfig"
        if self.mode not in MODES:
            raise ValueError(f"{where}.mode: expected one of {list(MODES)}, got {self.mode!r}")
        if not 0.0 < self.t0 <= 1.0:
            raise ValueError(f"{where}.t0: must lie in (0, 1], got {self.t0}")
        if self.steps < 1 or self.max_tries < 1:
            raise ValueError(f"{where}: steps, max_tries >= 1 required, got {self.steps}, {self.max_tries}")
        if self.guidance < 0 or self.l1 < 0 or self.lpips < 0 or self.escalate < 1:
            raise ValueError(f"{where}: guidance, l1, lpips >= 0 and escalate >= 1 required")
        if self.take not in TAKES:
            raise ValueError(f"{where}.take: expected one of {list(TAKES)}, got {self.take!r}")
        if self.encode not in ENCODES:
            raise ValueError(f"{where}.encode: expected one of {list(ENCODES)}, got {self.encode!r}")
        if self.mask_source not in MASK_SOURCES:
            raise ValueError(f"{where}.mask_source: expected one of {list(MASK_SOURCES)}, got {self.mask_source!r}")
        check_mask_settings(where, self.mask_threshold, self.mask_dilate, self.mask_smooth)


def guidance_mask(x: Tensor, guided: Tensor, unguided: Tensor, cfg: DiffusionCFConfig) -> Tensor:
    """[B, 1, H, W] bool: where the guided denoising changed x beyond what denoising alone does.

    ``mask_source="difference"``: |guided - unguided|; ``"excess"``: |guided - x| - |unguided - x|
    (clamped at 0), so a detail that both denoisings lose or redraw counts zero. Then
    ``change_mask``'s threshold (relative to the per-image peak), smoothing and dilation.

    Example:
        >>> x = torch.zeros(1, 1, 8, 8); u = x.clone(); u[..., 0, 0] = 1.0     # both lose a detail
        >>> g = u.clone(); g[..., 0, 0] = 0.8; g[..., 5, 5] = 0.5               # ... and the guidance adds one
        >>> m = guidance_mask(x, g, u, DiffusionCFConfig(mask_source="excess", mask_dilate=0))
        >>> m[0, 0].nonzero().tolist()
        [[5, 5]]
    """
    if cfg.mask_source == "excess":
        excess = ((guided - x).abs() - (unguided - x).abs()).mean(1, keepdim=True).clamp_min(0)  # [B, 1, H, W]
        return threshold_map(excess, cfg.mask_threshold, cfg.mask_dilate, cfg.mask_smooth)
    return change_mask(unguided, guided, cfg.mask_threshold, cfg.mask_dilate, cfg.mask_smooth)


@dataclass
class _Run:
    """One guided denoising of a batch."""

    final: Tensor        # [B, C, H, W]
    frames: Tensor       # [steps, B, C, H, W] guided x0-hat after each step
    calls: int           # UNet calls


def _rms_normalise(g: Tensor) -> Tensor:
    """[B, ...] -> each sample scaled to unit root-mean-square (zero stays zero)."""
    rms = g.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
    return g / rms.view(-1, *([1] * (g.ndim - 1)))


class DiffusionCF(Explainer):
    """Diffusion counterfactuals with a DDPM (``medcf train diffusion``) bound at construction.

    Example:
        >>> explainer = DiffusionCF(model=ddpm, classifier=clf, config=DiffusionCFConfig(mode="masked"))  # doctest: +SKIP
        >>> cf = explainer.explain(x, target=1)                                                            # doctest: +SKIP
    """

    method = "diffusion"
    config_class = DiffusionCFConfig

    def __init__(self, *, model: DiffusionModel, classifier, config: DiffusionCFConfig | None = None):
        super().__init__(classifier=classifier, config=config)
        self.generator = model  # the name explain_runner looks for (channels, resolution)
        self.model = model
        self._lpips = None
        if self.config.lpips > 0:
            from medcf.eval.lpips import LPIPS

            self._lpips = LPIPS()  # fails early, with a one-line error, without the weights
        if self.config.mode != "fast":
            self.method = f"diffusion-{self.config.mode}"

    # -- schedule ---------------------------------------------------------------------------

    def _timesteps(self, inverse: bool = False):
        """The DDIM scheduler (or its inverse) and the ``steps`` timesteps from ~t0 down to 0.

        The scheduler is told the UNet predicts the noise whatever the model's own
        ``prediction_type``: the explainer always hands it a noise estimate (``eps_and_x0``).
        """
        from diffusers import DDIMInverseScheduler, DDIMScheduler

        cfg = self.config
        config = {**self.model.ddim_scheduler().config, "prediction_type": "epsilon"}
        sched = DDIMScheduler.from_config(config)
        n_train = sched.config.num_train_timesteps
        total = max(cfg.steps, round(cfg.steps / cfg.t0))
        total = min(total, n_train)
        sched.set_timesteps(total)
        ts = sched.timesteps[-cfg.steps:]                                     # descending
        if inverse:  # given only the settings it takes (diffusers warns about the others)
            known = inspect.signature(DDIMInverseScheduler.__init__).parameters
            inv = DDIMInverseScheduler.from_config({k: v for k, v in config.items() if k in known})
            inv.set_timesteps(total)
            return inv, ts
        return sched, ts

    def _alpha_bar(self, sched, t: Tensor | int) -> Tensor:
        t = int(t)
        return sched.alphas_cumprod[t] if t >= 0 else sched.final_alpha_cumprod

    @torch.no_grad()
    def _inverted_noise(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """[B, C, H, W]: the noise that takes x to its DDIM inversion at ~t0.

        Deterministic DDIM inversion (the abduction step of Sanchez & Tsaftaris's diffusion
        counterfactuals): x is run up the same timesteps the denoising comes down, with the
        UNet's noise estimate at each step's target timestep (diffusers' convention), and the
        result x_t0 is returned as the noise n with sqrt(a) x + sqrt(1 - a) n = x_t0, so that
        the rest of the explainer (and the masked mode's known region) is unchanged. Unguided
        DDIM from x_t0 then gives back (nearly) x, small details included.
        """
        inv, ts = self._timesteps(inverse=True)
        b = x.shape[0]
        y = x
        for t in ts.flip(0):                                                   # ascending
            out = self.model(y, t.to(x.device).expand(b), labels)
            eps, _ = self.model.eps_and_x0(out, y, self._alpha_bar(inv, t))
            y = inv.step(eps, t, y).prev_sample
        a = self._alpha_bar(inv, ts[0]).to(x)
        return (y - a.sqrt() * x) / (1 - a).sqrt()

    # -- guidance ---------------------------------------------------------------------------

    def _direction(self, x0: Tensor, x: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        """[B, C, H, W] ascent direction on x0-hat: classifier log p(target) up, distance to x down."""
        cfg = self.config
        with torch.enable_grad():
            z = x0.detach().clamp(-1, 1).requires_grad_(True)
            img = z if mask is None else torch.where(mask, z, x)
            logp = F.logsigmoid(self.log_odds(img, target)).sum()
            g = torch.autograd.grad(logp, z)[0]
            lp_grad = None
            if self._lpips is not None:
                z2 = x0.detach().clamp(-1, 1).requires_grad_(True)
                dist = self._lpips.to(x.device)(z2, x).sum()
                lp_grad = torch.autograd.grad(dist, z2)[0]
        if mask is not None:
            g = g * mask
        d = _rms_normalise(g) - cfg.l1 * torch.sign(x0 - x)
        if lp_grad is not None:
            d = d - cfg.lpips * _rms_normalise(lp_grad)
        return d if mask is None else d * mask

    @torch.no_grad()
    def _denoise(self, x: Tensor, target: Tensor, noise: Tensor, scale: Tensor, mask: Tensor | None,
                 labels: Tensor | None) -> _Run:
        """Noise x [B, C, H, W] to ~t0, then guided DDIM to 0 (per-sample guidance ``scale`` [B])."""
        from tqdm.auto import tqdm

        cfg = self.config
        model = self.model
        sched, ts = self._timesteps()
        b = x.shape[0]
        step_gap = sched.config.num_train_timesteps // sched.num_inference_steps
        x_t = sched.add_noise(x, noise, ts[:1].repeat(b).to(x.device))
        frames, calls = [], 0
        guided = bool((scale > 0).any())
        for i, t in enumerate(tqdm(ts, desc=f"diffusion-{cfg.mode}", disable=not cfg.progress, leave=False)):
            tt = t.to(x.device).expand(b)
            a_t = self._alpha_bar(sched, t)
            out = model(x_t, tt, labels)
            calls += 1
            eps, x0 = model.eps_and_x0(out, x_t, a_t)                         # [B, C, H, W] each
            ref = x0
            if cfg.mode == "dime" and guided and i + 1 < len(ts):            # inner unguided DDIM to 0
                y = sched.step(eps, t, x_t).prev_sample
                for s in ts[i + 1:]:
                    o = model(y, s.to(x.device).expand(b), labels)
                    calls += 1
                    e_s, _ = model.eps_and_x0(o, y, self._alpha_bar(sched, s))
                    y = sched.step(e_s, s, y).prev_sample
                ref = y
            if guided:
                d = self._direction(ref, x, target, mask)
                x0g = (x0 + scale.view(-1, 1, 1, 1) * d).clamp(-1, 1)      # guided clean estimate
            else:
                x0g = x0.clamp(-1, 1)                                        # unguided: no classifier call
            a = a_t.to(x_t)
            eps_g = (x_t - a.sqrt() * x0g) / (1 - a).sqrt()
            x_t = sched.step(eps_g, t, x_t).prev_sample
            if mask is not None:                                             # RePaint: known region
                t_prev = int(t) - step_gap
                known = (sched.add_noise(x, noise, torch.full((b,), t_prev, device=x.device))
                         if t_prev >= 0 else x)
                x_t = torch.where(mask, x_t, known)
                x0g = torch.where(mask, x0g, x)
            frames.append(x0g)
        final = x_t.clamp(-1, 1)
        if mask is not None:
            final = torch.where(mask, final, x)
        return _Run(final=final, frames=torch.stack(frames), calls=calls)

    def _escalated(self, x: Tensor, target: Tensor, noise: Tensor, mask: Tensor | None,
                   labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor, int]:
        """Guided runs with growing guidance for the queries not yet at ``take_at``.

        Returns (final [B,C,H,W], frames [steps,B,C,H,W], guidance used [B], UNet calls).
        """
        cfg = self.config
        b = x.shape[0]
        scale = torch.full((b,), cfg.guidance, device=x.device)
        todo = torch.arange(b, device=x.device)
        final, frames, calls = None, None, 0
        for attempt in range(cfg.max_tries):
            run = self._denoise(x[todo], target[todo], noise[todo], scale[todo],
                                None if mask is None else mask[todo], None if labels is None else labels[todo])
            calls += run.calls
            if final is None:
                final, frames = run.final.clone(), run.frames.clone()
            else:
                final[todo], frames[:, todo] = run.final, run.frames
            if attempt + 1 == cfg.max_tries:
                break
            with torch.no_grad():
                reached = self.log_odds(run.final, target[todo]) >= cfg.take_logit
            todo = todo[~reached]
            if todo.numel() == 0:
                break
            scale[todo] = scale[todo] * cfg.escalate
        return final, frames, scale, calls

    # -- the explanation --------------------------------------------------------------------

    def explain(self, x: Tensor, target: Target | None = None) -> Counterfactual:
        """Counterfactuals for x [B, C, H, W] in [-1, 1] toward ``target`` (None: flip)."""
        start = time.perf_counter()
        cfg = self.config
        check_diffusion_input(self.model, x, name=f"{type(self).__name__} input")
        self.check_inputs(x, modules={"diffusion model": self.model})
        x = x.detach()
        t, _ = self.targets(x, target)
        labels = None
        if self.model.config.conditional:
            n = self.model.config.num_classes
            labels = torch.where((t >= 0) & (t < n), t, torch.full_like(t, n))
        info: dict[str, Any] = {"mode": cfg.mode}
        with self.eval_mode(self.model):
            mask = None
            calls = 0
            if cfg.encode == "invert":
                null = None if labels is None else torch.full_like(labels, self.model.config.num_classes)
                noise = self._inverted_noise(x, null)   # encoded without a class: the target is decoding's
                calls += cfg.steps
            else:
                gen = torch.Generator(device=x.device).manual_seed(cfg.seed)
                noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            if cfg.mode == "masked":
                first, _, _, more = self._escalated(x, t, noise, None, labels)
                calls += more
                plain = self._denoise(x, t, noise, torch.zeros(x.shape[0], device=x.device), None, labels)
                calls += plain.calls                                          # unguided, same noise:
                m1 = guidance_mask(x, first, plain.final, cfg)                # the guidance's change
                mask = m1.expand_as(x)
                info["mask_fraction"] = m1.float().flatten(1).mean(1).tolist()
            final, frames, scale, more = self._escalated(x, t, noise, mask, labels)
            calls += more
            path = torch.cat([x[None], frames, final[None]])                  # [steps + 2, B, C, H, W]
            info.update(unet_calls=calls, guidance=scale.tolist())
            if cfg.take == "trajectory":
                return self.from_path(x, t, path, info=info, start_time=start)
            # the input or the final sample, by the shared rule; the whole trajectory for the GIF
            cf = self.from_path(x, t, path[[0, -1]], info=info, start_time=start)
            with torch.no_grad():
                path_log_odds = torch.stack([self.log_odds(f, t) for f in path])
        cf.info["frame_index"] = [0 if i == 0 else path.shape[0] - 1 for i in cf.info["frame_index"]]
        cf.info["n_frames"] = [int(path.shape[0])] * x.shape[0]  # per query, as from_path
        if not cfg.keep_path:
            return cf
        return dataclasses.replace(cf, path=path.detach(), path_probs=torch.sigmoid(path_log_odds))


# ----------------------------------------------------------------------------- building from checkpoints


def load_diffusion_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> DiffusionModel:
    """A diffusion backbone for ``--generator``: a medcf ``diffusion`` run or a diffusers UNet folder."""
    from medcf.generators.diffusion import load_diffusion
    from medcf.io import read_header

    try:
        header = read_header(path)
    except CheckpointError:
        header = None  # a diffusers folder without the medcf header
    if header is not None and header["kind"] != KIND:
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint; the diffusion methods "
                              f"need a '{KIND}' run (medcf train diffusion) or a diffusers UNet2DModel folder")
    return load_diffusion(path, device=device)


def build_diffusion(classifier_dir, generator_dir, *, device: str | torch.device = "cpu", progress: bool = True,
                    mode: str = "fast", step_size: float | None = None, max_steps: int | None = None,
                    **options) -> DiffusionCF:
    """A ``DiffusionCF`` from a classifier run and a diffusion run (``medcf train diffusion``).

    ``step_size`` is the guidance scale and ``max_steps`` the number of DDIM steps (the CLI's
    ``--step-size`` / ``--max-steps``); other ``options`` are ``DiffusionCFConfig`` fields.

    Example:
        >>> e = build_diffusion("runs/classifier", "runs/ddpm", mode="masked", max_steps=20)  # doctest: +SKIP
    """
    from medcf.explain_runner import _check_pair, load_explained_classifier

    fields = {f.name for f in dataclasses.fields(DiffusionCFConfig)}
    unknown = sorted(k for k in options if k not in fields)
    if unknown:
        raise MedcfError(f"diffusion: unknown option(s) {unknown}; known: {sorted(fields)}")
    classifier = load_explained_classifier(classifier_dir, device=device)
    model = load_diffusion_model(generator_dir, device=device)
    _check_pair(classifier, model, classifier_dir, generator_dir)
    kwargs = {k: v for k, v in options.items() if v is not None}
    if step_size is not None:
        kwargs["guidance"] = step_size
    if max_steps is not None:
        kwargs["steps"] = max_steps
    try:
        config = DiffusionCFConfig(mode=mode or "fast", **kwargs)
    except ValueError as e:
        raise MedcfError(f"diffusion: {e}") from None
    return DiffusionCF(model=model, classifier=classifier, config=config)


# keyword options of the registry rows: the CLI's --step-size/--max-steps and DiffusionCFConfig fields
BUILD_OPTIONS = ("step_size", "max_steps", *(f.name for f in dataclasses.fields(DiffusionCFConfig)
                                             if f.name != "mode"), "device")


def builder(mode: str):
    """``build_diffusion`` with the mode fixed (the ``diffusion-masked`` / ``diffusion-dime`` rows)."""
    return functools.partial(build_diffusion, mode=mode)


# what `medcf benchmark` trains when the profile has no [methods.diffusion*] table: sized for the
# quick profile (32 px, minutes on 2 CPU cores); a profile table overrides every key
BENCH_DEFAULTS = {"widths": [16, 32, 32], "layers_per_block": 1, "attention": False, "steps": 200,
                  "batch_size": 16, "lr": 5e-4}
BENCH_EXPLAIN = {"steps": 8, "max_tries": 2}


def prepare_benchmark(data_dir, out_dir, *, classifier_dir, task: str, profile: dict[str, Any],
                      device: str | torch.device = "cpu", seed: int = 0, progress: bool = True) -> dict:
    """``prepare`` hook of the diffusion rows (``medcf.counterfactual.registry``): train (or reuse) one
    DDPM on the data and return ``{"generator_dir", **explain options}``.

    The three rows share the DDPM: it lives under the ``diffusion`` row's folder
    (``OUT/methods/diffusion/TASK``), keyed by its training settings. ``profile`` keys:
    widths, layers_per_block, attention, steps, batch_size, lr (defaults ``BENCH_DEFAULTS``) and
    ``explain`` (build options, defaults ``BENCH_EXPLAIN``).

    Example:
        >>> kw = prepare_benchmark("out/cache/data", "out/methods/diffusion/cardiomegaly",
        ...                        classifier_dir="out/cache/classifier", task="cardiomegaly",
        ...                        profile={"steps": 300})                                   # doctest: +SKIP
    """
    from pathlib import Path

    from medcf.benchmark.cache import data_resolution, profile_stage, stage_checkpoint_every
    from medcf.train.diffusion import train_diffusion

    res = data_resolution(data_dir)

    def widths_as_ints(cfg: dict) -> None:  # a TOML 16.0 and 16 are the same stage
        cfg["widths"] = [int(w) for w in cfg["widths"]]

    def train(cfg: dict, d, resume: bool):  # cfg: resolution, BENCH_DEFAULTS updated by the profile table
        return train_diffusion(
            data_dir, d, resolution=res, steps=int(cfg["steps"]), batch_size=int(cfg["batch_size"]),
            lr=float(cfg["lr"]), widths=tuple(cfg["widths"]), layers_per_block=int(cfg["layers_per_block"]),
            attention=bool(cfg["attention"]), seed=seed, sample_every=0, sample_steps=20,
            checkpoint_every=stage_checkpoint_every(cfg["steps"]), resume=resume, progress=progress)

    out = Path(out_dir)
    shared = out.parent.parent / "diffusion" / out.name
    return profile_stage(shared, "ddpm", data_dir, profile, {"resolution": res, **BENCH_DEFAULTS}, seed, train,
                         normalise=widths_as_ints, explain=BENCH_EXPLAIN)


__all__ = ["BENCH_DEFAULTS", "BENCH_EXPLAIN", "BUILD_OPTIONS", "MODES", "DiffusionCF", "DiffusionCFConfig",
           "build_diffusion", "change_mask", "guidance_mask", "builder", "load_diffusion_model", "prepare_benchmark"]
