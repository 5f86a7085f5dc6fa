"""Latent Shift (Cohen et al., "Gifsplanation via Latent Shift", MIDL 2021).

An autoencoder's code ``z = E(x)`` is pushed along the gradient of the
classifier's target score through the decoder, and every frame ``D(z + λ·d)``
is classified:

1. ``z = E(x)``, reconstruction ``r = D(z)``;
2. ``g = ∂ s(D(z)) / ∂z`` where ``s`` is the log-odds of the target class
   (``log p - log(1 - p)``, the logit for a single-sigmoid classifier; same
   direction as the gradient of the probability, without its vanishing when
   the classifier is sure);
3. ``d = g / ||g||²`` per query, so ``λ`` reads as the log-odds change a linear
   model would predict: one scale fits every classifier and each query gets its
   own effective step on the raw gradient;
4. frames at ``λ = step_size, 2·step_size, ...`` (``iterative=True`` re-takes the
   gradient at every frame: gradient ascent instead of Cohen's single step);
5. per query, stop when the probability reaches ``stop_probability``, when the
   log-odds stop rising (``patience``), when the frame differs from ``r`` by more
   than ``max_change`` (mean absolute change as a fraction of the intensity
   range; that frame is dropped) or after ``max_steps``;
6. the counterfactual is the first point past ``threshold`` (or past ``take_at``, a
   higher probability, when a barely-flipped image is too small a change to be
   convincing; the result is still judged at ``threshold``), located between the
   two frames around the crossing by ``refine_steps`` bisection steps; a query
   that never crosses keeps its best frame and ``info["found"]`` is False.

``direction="away"`` treats ``target`` as the class to leave (Cohen's negative
λ); for a binary classifier this is the move toward the other class, which the
result reports as its target. The difference map is ``counterfactual - D(z)``
(``reference="reconstruction"``, the default: both pass through the decoder,
so autoencoder blur cancels) or ``counterfactual - x`` (``reference="input"``).

Frames (``compose``): ``"generated"`` (Cohen et al.) shows the decoder's images
``D(z_λ)``, so whatever the autoencoder cannot reconstruct (thin wires, markers,
noise) is missing from every frame; ``"residual"`` adds the decoder's change to
the input, ``x + D(z_λ) - D(z_0)`` (clipped to the value range): the first frame
is x itself. The classifier judges (and its gradient is taken through) the
frames as shown.

Example:
    >>> ls = LatentShift(autoencoder=vae, classifier=clf)            # doctest: +SKIP
    >>> cf = ls.explain(x, target="cardiomegaly")                    # doctest: +SKIP
    >>> cf.flipped, cf.info["lambda"]                                # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medcf.counterfactual.base import DIRECTIONS, Explainer
from medcf.counterfactual.walk import WalkConfig, latent_walk
from medcf.types import Counterfactual, Target, reaches

log = logging.getLogger(__name__)

REFERENCES = ("reconstruction", "input")


@dataclass(frozen=True)
class LatentShiftConfig(WalkConfig):
    """Latent Shift settings (``threshold``, ``take_at``, ``keep_path``, ``compose``,
    ``stop_probability``, ``patience``, ``min_progress``, ``refine_steps``: see ``WalkConfig``).

    The defaults are the settings the benchmark shows to give meaningful counterfactuals
    (docs/defaults.md): iterative ascent, taken at p = 0.99999, residual frames.
    ``LatentShiftConfig.published()`` is Cohen et al.'s method (one gradient, generated
    frames, taken where p crosses the threshold).
    """

    take_at: float | None = 0.99999       # where the counterfactual is taken (validity: at threshold)
    compose: str = "residual"             # frames: x + D(z_λ) - D(z_0) ("generated": D(z_λ))
    direction: str = "toward"             # "toward" the target class | "away" from it (binary)
    step_size: float = 0.5                # λ increment per frame, in predicted log-odds units
    max_steps: int = 100                  # frames searched per query (λ_max = step_size * max_steps)
    iterative: bool = True                # re-take the gradient at every frame (else once at z)
    max_change: float | None = 0.1        # pixel budget: mean |frame - D(z)| / range width
    reference: str = "reconstruction"     # difference map: cf - D(z) | cf - x

    @classmethod
    def published(cls, **changes) -> LatentShiftConfig:
        """Cohen et al. (2021) as published: one gradient, the decoder's frames, the counterfactual
        where p crosses ``threshold``; ``changes`` override fields."""
        return cls(**{"iterative": False, "take_at": None, "compose": "generated", **changes})

    def __post_init__(self):
        super().__post_init__()
        where = "LatentShiftConfig"
        if self.direction not in DIRECTIONS:
            raise ValueError(f"{where}.direction: expected one of {DIRECTIONS}, got {self.direction!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"{where}.reference: expected one of {REFERENCES}, got {self.reference!r}")
        if self.max_steps < 1:
            raise ValueError(f"{where}.max_steps: must be positive, got {self.max_steps}")
        if self.max_change is not None and self.max_change <= 0:
            raise ValueError(f"{where}.max_change: must be positive or None, got {self.max_change}")


class LatentShift(Explainer):
    """Latent Shift explainer bound to an autoencoder and a classifier.

    ``autoencoder`` needs ``encode(x) -> z`` and ``decode(z) -> x`` (a medcf ``ae``/``vae``
    or any object with those methods); ``classifier`` is any module returning logits
    ``[B, K]`` (K == 1: one sigmoid logit), optionally with ``class_names``.

    Example:
        >>> ls = LatentShift(autoencoder=load_autoencoder("runs/vae"), classifier=clf,
        ...                  config=LatentShiftConfig(iterative=True))          # doctest: +SKIP
        >>> cf = ls.explain(x, target=1)                                        # doctest: +SKIP
    """

    method = "latent-shift"
    config_class = LatentShiftConfig

    def __init__(self, *, autoencoder, classifier: nn.Module, config: LatentShiftConfig | None = None):
        for name in ("encode", "decode"):
            if not callable(getattr(autoencoder, name, None)):
                raise TypeError(f"LatentShift: autoencoder must have a callable {name}()")
        super().__init__(classifier=classifier, config=config)
        self.autoencoder = autoencoder

    # -- helpers -----------------------------------------------------------------------

    def _value_range(self) -> tuple[float, float]:
        return getattr(getattr(self.autoencoder, "config", None), "value_range", (-1.0, 1.0))

    def _compose(self, decoded: Tensor, offset: Tensor | None) -> Tensor:
        """Frames as shown: the decoder's image, or the input plus the decoder's change."""
        if offset is None:
            return decoded
        lo, hi = self._value_range()
        return (decoded + offset).clamp(lo, hi)

    def _grad(self, z: Tensor, t: Tensor, offset: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(frames [b, C, H, W], log-odds [b], direction d = g / ||g||² [b, *latent]) at z."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            frames = self._compose(self.autoencoder.decode(z), offset)
            s = self.log_odds(frames, t)
            (g,) = torch.autograd.grad(s.sum(), z)
        norm2 = g.flatten(1).pow(2).sum(1).clamp_min(1e-20)
        d = g / norm2.view(-1, *([1] * (g.ndim - 1)))
        if not torch.isfinite(d).all():
            raise FloatingPointError("LatentShift: non-finite gradient through the decoder")
        return frames.detach(), s.detach(), d

    @torch.no_grad()
    def _frames(self, z: Tensor, t: Tensor, offset: Tensor | None) -> tuple[Tensor, Tensor]:
        frames = self._compose(self.autoencoder.decode(z), offset)
        return frames, self.log_odds(frames, t)

    # -- the explanation ---------------------------------------------------------------

    def explain(self, x: Tensor, target: Target | None = None) -> Counterfactual:
        """Counterfactuals for images ``x`` [B, C, H, W] toward (or away from) ``target``.

        ``target``: a class index, class name, or [B] tensor (each query its own);
        ``None`` flips a binary classifier's current decision.
        """
        cfg = self.config
        start = time.perf_counter()
        ae_cfg = getattr(self.autoencoder, "config", None)
        channels, resolution = getattr(ae_cfg, "channels", None), getattr(ae_cfg, "resolution", None)
        self.check_inputs(x, channels=channels, resolution=resolution, modules={"autoencoder": self.autoencoder},
                          expected_by="autoencoder")
        x = x.detach()
        with self.eval_mode(self.autoencoder):
            t, away = self.targets(x, target, cfg.direction)
            out = self._search(x, t)
        b = x.shape[0]
        reference = out["reconstruction"] if cfg.reference == "reconstruction" else x
        difference = (out["counterfactual"] - reference).mean(1, keepdim=True)
        info = {
            "method": self.method,
            "settings": dataclasses.asdict(cfg),
            "reference": cfg.reference,
            "direction": cfg.direction,
            "found": out["found"].tolist(),
            "lambda": out["lam"].tolist(),
            "latent_distance": (out["z_cf"] - out["z0"]).flatten(1).norm(dim=1).tolist(),
            "n_frames": out["n_frames"].tolist(),
            "stop_reason": out["stop_reason"],
            "prob_reconstruction": out["prob_rec"].tolist(),
            # the decision already flips on D(E(x)): the autoencoder, not the shift, changed it
            "reconstruction_flipped": (reaches(out["prob_rec"], cfg.threshold)
                                       & ~reaches(out["prob_x"], cfg.threshold)).tolist(),
            "seconds": time.perf_counter() - start,
        }
        if away is not None:
            info["away_from"] = away.tolist()
        names = getattr(self.classifier, "class_names", None)
        if names:
            info["class_names"] = list(names)
        log.info("latent shift: %d/%d found in %.2fs", int(out["found"].sum()), b, info["seconds"])
        return Counterfactual(
            original=x, counterfactual=out["counterfactual"], difference=difference, target=t,
            prob_original=out["prob_x"], prob_counterfactual=out["prob_cf"],
            reconstruction=out["reconstruction"], path=out["path"], path_probs=out["path_probs"],
            latents=out["z_cf"], threshold=cfg.threshold, info=info)

    def _search(self, x: Tensor, t: Tensor) -> dict:
        cfg = self.config
        lo_range, hi_range = self._value_range()
        width = float(hi_range - lo_range)

        # 1. code, reconstruction, first gradient
        with torch.no_grad():
            s_x = self.log_odds(x, t)
            z0 = self.autoencoder.encode(x).detach()
            offset = x - self.autoencoder.decode(z0) if cfg.compose == "residual" else None

        def part(i):  # the offset of queries i (None for decoder frames)
            return None if offset is None else offset[i]

        rec, s_rec, d = self._grad(z0, t, offset)

        # 2. the walk along the (re-taken) gradient
        def step(idx: Tensor, z: Tensor):
            z_new = z + cfg.step_size * d[idx]
            if cfg.iterative:  # the frame's gradient is the next step's direction
                img, s_new, d[idx] = self._grad(z_new, t[idx], part(idx))
            else:
                img, s_new = self._frames(z_new, t[idx], part(idx))
            return z_new, img, s_new

        def over_budget(idx: Tensor, img: Tensor) -> Tensor:
            change = (img - rec[idx]).abs().flatten(1).mean(1) / width
            return change > cfg.max_change

        res = latent_walk(step, lambda idx, z: self._frames(z, t[idx], part(idx)), start=z0, frame0=rec,
                          s0=s_rec, level=cfg.take_logit, stop_at=cfg.stop_logit, step_size=cfg.step_size,
                          max_steps=cfg.max_steps, patience=cfg.patience, min_progress=cfg.min_progress,
                          refine_steps=cfg.refine_steps,
                          over_budget=over_budget if cfg.max_change is not None else None,
                          keep_path=cfg.keep_path, max_reason="max_steps")
        return {
            "z0": z0, "reconstruction": rec, "z_cf": res.state, "counterfactual": res.counterfactual,
            "prob_x": torch.sigmoid(s_x), "prob_rec": torch.sigmoid(s_rec), "prob_cf": torch.sigmoid(res.log_odds),
            "found": res.found, "lam": res.lam, "n_frames": res.n_frames, "stop_reason": res.stop_reason,
            "path": res.path,
            "path_probs": torch.sigmoid(res.path_log_odds) if res.path_log_odds is not None else None,
        }


def build(classifier_dir, generator_dir, *, device: str | torch.device = "cpu", progress: bool = True,
          **settings) -> LatentShift:
    """A ``LatentShift`` explainer from a classifier run and an ``ae``/``vae`` run (the registry's builder).

    ``settings`` are ``LatentShiftConfig`` fields (``iterative``, ``take_at``, ``compose``, ...);
    None values keep the defaults. ``progress`` is accepted for the builder contract (unused).

    Example:
        >>> ls = build("runs/demo/classifier", "runs/demo/vae", iterative=True)   # doctest: +SKIP
    """
    from medcf.counterfactual.checkpoints import load_method_inputs
    from medcf.generators.autoencoder import load_autoencoder

    config, classifier, generator = load_method_inputs(
        LatentShiftConfig, LatentShift.method, settings, classifier_dir, generator_dir,
        kinds=("ae", "vae"), how="medcf train vae", load=load_autoencoder, device=device)
    return LatentShift(autoencoder=generator, classifier=classifier, config=config)
