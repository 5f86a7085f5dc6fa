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

from medcf.counterfactual._common import COMPOSE_MODES, eval_mode, logit
from medcf.errors import ShapeError
from medcf.types import Counterfactual, Target, check_images, resolve_target

log = logging.getLogger(__name__)

DIRECTIONS = ("toward", "away")
REFERENCES = ("reconstruction", "input")


@dataclass(frozen=True)
class LatentShiftConfig:
    direction: str = "toward"             # "toward" the target class | "away" from it (binary)
    threshold: float = 0.5                # decision threshold on the target probability
    take_at: float | None = None          # take the counterfactual at this probability (>= threshold);
                                          # None: at the threshold. Validity is still judged at threshold
    stop_probability: float | None = 0.9  # extend the path until this (if above threshold); None: stop there
    step_size: float = 0.5                # λ increment per frame, in predicted log-odds units
    max_steps: int = 100                  # frames searched per query (λ_max = step_size * max_steps)
    iterative: bool = False               # re-take the gradient at every frame (else once at z)
    max_change: float | None = 0.1        # pixel budget: mean |frame - D(z)| / range width
    patience: int = 5                     # frames without log-odds progress before giving up
    min_progress: float = 1e-3            # log-odds rise that counts as progress
    refine_steps: int = 6                 # bisection steps locating the threshold crossing
    reference: str = "reconstruction"     # difference map: cf - D(z) | cf - x
    compose: str = "generated"            # frames: "generated" D(z_λ) | "residual" x + D(z_λ) - D(z_0)
    keep_path: bool = True                # return every frame ([T, B, C, H, W])

    def __post_init__(self):
        where = "LatentShiftConfig"
        if self.direction not in DIRECTIONS:
            raise ValueError(f"{where}.direction: expected one of {DIRECTIONS}, got {self.direction!r}")
        if self.compose not in COMPOSE_MODES:
            raise ValueError(f"{where}.compose: expected one of {list(COMPOSE_MODES)}, got {self.compose!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"{where}.reference: expected one of {REFERENCES}, got {self.reference!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"{where}.threshold: must lie in (0, 1), got {self.threshold}")
        if self.take_at is not None and not self.threshold <= self.take_at < 1.0:
            raise ValueError(f"{where}.take_at: must lie in [threshold, 1) or be None, got {self.take_at}")
        if self.stop_probability is not None and not 0.0 < self.stop_probability < 1.0:
            raise ValueError(f"{where}.stop_probability: must lie in (0, 1) or be None, got {self.stop_probability}")
        if self.step_size <= 0 or self.max_steps < 1 or self.patience < 1 or self.refine_steps < 0:
            raise ValueError(f"{where}: step_size, max_steps, patience must be positive and "
                             f"refine_steps >= 0, got {self.step_size}, {self.max_steps}, "
                             f"{self.patience}, {self.refine_steps}")
        if self.max_change is not None and self.max_change <= 0:
            raise ValueError(f"{where}.max_change: must be positive or None, got {self.max_change}")


class LatentShift:
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

    def __init__(self, *, autoencoder, classifier: nn.Module, config: LatentShiftConfig | None = None):
        for name in ("encode", "decode"):
            if not callable(getattr(autoencoder, name, None)):
                raise TypeError(f"LatentShift: autoencoder must have a callable {name}()")
        if not callable(classifier):
            raise TypeError("LatentShift: classifier must be callable (an nn.Module returning logits)")
        self.autoencoder = autoencoder
        self.classifier = classifier
        self.config = config or LatentShiftConfig()

    # -- helpers -----------------------------------------------------------------------

    def _check_inputs(self, x: Tensor) -> None:
        cfg = getattr(self.autoencoder, "config", None)
        channels = getattr(cfg, "channels", None)
        resolution = getattr(cfg, "resolution", None)
        expects = f" (autoencoder expects [B, {channels}, {resolution}, {resolution}])" if channels else ""
        check_images(x, channels=channels, resolution=resolution, name=f"LatentShift input{expects}")
        for name, m in (("autoencoder", self.autoencoder), ("classifier", self.classifier)):
            p = next(m.parameters(), None) if isinstance(m, nn.Module) else None
            if p is not None and p.device != x.device:
                raise ValueError(f"LatentShift: the {name} is on {p.device} but the images are on "
                                 f"{x.device}; move them to the same device")

    def _log_odds(self, images: Tensor, target: Tensor) -> Tensor:
        """[b, C, H, W], [b] -> [b] log-odds of the target class."""
        logits = self.classifier(images)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != images.shape[0]:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ShapeError(f"LatentShift classifier output: expected logits [B, K], got {got}")
        logits = logits.float()
        if logits.shape[1] == 1:
            return torch.where(target == 1, logits[:, 0], -logits[:, 0])
        if getattr(self.classifier, "head", None) == "multilabel":
            return logits.gather(1, target.view(-1, 1)).squeeze(1)
        own = logits.gather(1, target.view(-1, 1)).squeeze(1)
        others = logits.scatter(1, target.view(-1, 1), float("-inf")).logsumexp(1)
        return own - others

    def _num_classes(self, x: Tensor) -> int:
        with torch.no_grad():
            logits = self.classifier(x[:1])
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ShapeError(f"LatentShift classifier output: expected logits [B, K], got {got}")
        return max(2, int(logits.shape[1]))

    def _targets(self, x: Tensor, target: Target | None) -> tuple[Tensor, Tensor | None]:
        """(class to reach [B], class left behind [B] or None)."""
        b = x.shape[0]
        k = self._num_classes(x)
        names = getattr(self.classifier, "class_names", None)
        binary = k == 2 and getattr(self.classifier, "head", None) != "multilabel"
        if target is None:
            if not binary:
                raise ValueError("LatentShift.explain: target=None (flip the decision) needs a binary classifier")
            with torch.no_grad():
                s = self._log_odds(x, torch.ones(b, dtype=torch.long, device=x.device))
            predicted = (s > 0).long()
            return (1 - predicted), predicted
        t = resolve_target(target, b, class_names=names, num_classes=k).to(x.device)
        if self.config.direction == "toward":
            return t, None
        if not binary:
            raise ValueError(f"LatentShift: direction='away' needs a binary classifier (K == 1 or 2), "
                             f"this one has {k} classes; pass the class to reach with direction='toward'")
        return 1 - t, t

    def _compose(self, decoded: Tensor, offset: Tensor | None) -> Tensor:
        """Frames as shown: the decoder's image, or the input plus the decoder's change."""
        if offset is None:
            return decoded
        lo, hi = getattr(getattr(self.autoencoder, "config", None), "value_range", (-1.0, 1.0))
        return (decoded + offset).clamp(lo, hi)

    def _grad(self, z: Tensor, t: Tensor, offset: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(frames [b, C, H, W], log-odds [b], direction d = g / ||g||² [b, *latent]) at z."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            frames = self._compose(self.autoencoder.decode(z), offset)
            s = self._log_odds(frames, t)
            (g,) = torch.autograd.grad(s.sum(), z)
        norm2 = g.flatten(1).pow(2).sum(1).clamp_min(1e-20)
        d = g / norm2.view(-1, *([1] * (g.ndim - 1)))
        if not torch.isfinite(d).all():
            raise FloatingPointError("LatentShift: non-finite gradient through the decoder")
        return frames.detach(), s.detach(), d

    @torch.no_grad()
    def _frames(self, z: Tensor, t: Tensor, offset: Tensor | None) -> tuple[Tensor, Tensor]:
        frames = self._compose(self.autoencoder.decode(z), offset)
        return frames, self._log_odds(frames, t)

    # -- the explanation ---------------------------------------------------------------

    def explain(self, x: Tensor, target: Target | None = None) -> Counterfactual:
        """Counterfactuals for images ``x`` [B, C, H, W] toward (or away from) ``target``.

        ``target``: a class index, class name, or [B] tensor (each query its own);
        ``None`` flips a binary classifier's current decision.
        """
        cfg = self.config
        start = time.perf_counter()
        self._check_inputs(x)
        x = x.detach()
        with eval_mode(self.autoencoder, self.classifier):
            t, away = self._targets(x, target)
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
            "reconstruction_flipped": ((out["prob_rec"] >= cfg.threshold)
                                       & (out["prob_x"] < cfg.threshold)).tolist(),
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
        b = x.shape[0]
        thr = logit(cfg.take_at if cfg.take_at is not None else cfg.threshold)  # where the cf is taken
        stop_at = max(thr, logit(cfg.stop_probability)) if cfg.stop_probability is not None else thr
        lo_range, hi_range = getattr(getattr(self.autoencoder, "config", None), "value_range", (-1.0, 1.0))
        width = float(hi_range - lo_range)

        # 1. code, reconstruction, first gradient
        with torch.no_grad():
            s_x = self._log_odds(x, t)
            z0 = self.autoencoder.encode(x).detach()
            offset = x - self.autoencoder.decode(z0) if cfg.compose == "residual" else None

        def part(i):  # the offset of queries i (None for decoder frames)
            return None if offset is None else offset[i]

        rec, s_rec, d = self._grad(z0, t, offset)

        # per-query state
        z_cur = z0.clone()
        s_cur = s_rec.clone()
        lam = torch.zeros(b, device=x.device)
        best_s, best_z, best_img, best_lam = s_rec.clone(), z0.clone(), rec.clone(), lam.clone()
        since_progress = torch.zeros(b, dtype=torch.long, device=x.device)
        found = s_rec >= thr
        cross_prev, cross_z = z0.clone(), z0.clone()
        cross_lam_prev, cross_lam = lam.clone(), lam.clone()
        active = ~(found & (s_rec >= stop_at))
        stop_reason = ["reached" if not a else "" for a in active.tolist()]
        n_frames = torch.ones(b, dtype=torch.long, device=x.device)
        path, path_s = ([rec], [s_rec]) if cfg.keep_path else ([], [])
        last_img = rec.clone()

        # 2. walk along the (re-taken) gradient
        for _step in range(cfg.max_steps):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            z_new = z_cur[idx] + cfg.step_size * d[idx]
            if cfg.iterative:  # the frame's gradient is the next step's direction
                img, s_new, d_next = self._grad(z_new, t[idx], part(idx))
            else:
                img, s_new = self._frames(z_new, t[idx], part(idx))
            change = (img - rec[idx]).abs().flatten(1).mean(1) / width
            over = change > cfg.max_change if cfg.max_change is not None else torch.zeros_like(s_new, dtype=torch.bool)
            over_l = over.tolist()
            keep = ~over
            kidx = idx[keep]
            # frames within budget become part of the path
            newly = keep & ~found[idx] & (s_new >= thr)
            nidx = idx[newly]
            cross_prev[nidx], cross_z[nidx] = z_cur[nidx], z_new[newly]
            cross_lam_prev[nidx], cross_lam[nidx] = lam[nidx], lam[nidx] + cfg.step_size
            found[nidx] = True
            z_cur[kidx] = z_new[keep]
            if cfg.iterative:
                d[kidx] = d_next[keep]
            lam[kidx] = lam[kidx] + cfg.step_size
            last_img[kidx] = img[keep]
            n_frames[kidx] += 1
            improved = keep & (s_new > best_s[idx] + cfg.min_progress)
            iidx = idx[improved]
            best_s[iidx], best_z[iidx], best_img[iidx], best_lam[iidx] = (
                s_new[improved], z_new[improved], img[improved], lam[iidx])
            since_progress[idx] = torch.where(improved, 0, since_progress[idx] + 1)
            s_cur[kidx] = s_new[keep]
            # stop rules
            reached = (found[idx] & (s_cur[idx] >= stop_at)).tolist()
            stalled = (since_progress[idx] >= cfg.patience).tolist()
            stopped = []
            for j, i in enumerate(idx.tolist()):  # one host sync per frame, not per query
                reason = "budget" if over_l[j] else "reached" if reached[j] else \
                    "no_progress" if stalled[j] else ""
                if reason:
                    stop_reason[i] = reason
                    stopped.append(i)
            if stopped:
                active[torch.tensor(stopped, device=active.device)] = False
            if cfg.keep_path:
                path.append(last_img.clone())
                path_s.append(s_cur.clone())
        for i in active.nonzero().squeeze(1).tolist():
            stop_reason[i] = "max_steps"

        # 3. counterfactual: refined crossing, else the best frame
        z_cf, img_cf, s_cf, lam_cf = best_z.clone(), best_img.clone(), best_s.clone(), best_lam.clone()
        at_start = found & (s_rec >= thr)
        z_cf[at_start], img_cf[at_start], s_cf[at_start], lam_cf[at_start] = (
            z0[at_start], rec[at_start], s_rec[at_start], 0.0)
        fidx = (found & ~at_start).nonzero().squeeze(1)
        if fidx.numel():
            zc, ic, sc, lc = self._refine(cross_prev[fidx], cross_z[fidx], cross_lam_prev[fidx], cross_lam[fidx],
                                          t[fidx], thr, part(fidx))
            z_cf[fidx], img_cf[fidx], s_cf[fidx], lam_cf[fidx] = zc, ic, sc, lc

        return {
            "z0": z0, "reconstruction": rec, "z_cf": z_cf, "counterfactual": img_cf,
            "prob_x": torch.sigmoid(s_x), "prob_rec": torch.sigmoid(s_rec), "prob_cf": torch.sigmoid(s_cf),
            "found": found, "lam": lam_cf, "n_frames": n_frames, "stop_reason": stop_reason,
            "path": torch.stack(path) if cfg.keep_path else None,
            "path_probs": torch.sigmoid(torch.stack(path_s)) if cfg.keep_path else None,
        }

    def _refine(self, z_lo: Tensor, z_hi: Tensor, lam_lo: Tensor, lam_hi: Tensor, t: Tensor, thr: float,
                offset: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Bisect the segment z_lo (below threshold) .. z_hi (past it); keep the side past it."""
        seg = z_hi - z_lo
        f_lo = torch.zeros(z_lo.shape[0], device=z_lo.device)
        f_hi = torch.ones_like(f_lo)
        shape = (-1, *([1] * (seg.ndim - 1)))
        for _ in range(self.config.refine_steps):
            mid = 0.5 * (f_lo + f_hi)
            _, s_mid = self._frames(z_lo + mid.view(shape) * seg, t, offset)
            past = s_mid >= thr
            f_hi = torch.where(past, mid, f_hi)
            f_lo = torch.where(past, f_lo, mid)
        z = z_lo + f_hi.view(shape) * seg
        img, s = self._frames(z, t, offset)
        return z, img, s, lam_lo + f_hi * (lam_hi - lam_lo)
