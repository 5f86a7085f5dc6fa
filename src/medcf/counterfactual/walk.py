"""The latent walk shared by Latent Shift and the latent probe.

Both explainers move a per-query latent state step by step, render and classify
every frame, and take the counterfactual where the target's log-odds cross a
level. What differs is only how a step is taken and how a state is rendered; the
walk itself (stop rules, crossing detection, bisection, best-frame fallback) is
written once here:

1. frame 0 is the start state; a query whose frame 0 already reaches the stop
   level is done ("reached");
2. each step moves every active query; per query the walk stops when the frame
   leaves the pixel budget ("budget": that frame is dropped), when the target
   probability reaches ``stop_at`` ("reached"), when the log-odds have not risen by
   ``min_progress`` for ``patience`` frames ("no_progress"), or after ``max_steps``
   (``max_reason``);
3. the counterfactual is the first crossing of ``level`` (the ``take_at`` log-odds),
   refined by ``refine_steps`` bisection steps on the segment between the two
   frames around it (``base.refine_crossing``); a query that reaches the level at
   frame 0 keeps frame 0, one that never reaches it keeps its best frame.

States are tensors [B, ...] interpolated linearly between frames; ``lam`` is the
walk's scalar coordinate (``step_size`` per accepted step).

The settings every walking explainer shares live in ``WalkConfig`` (a ``PathConfig``).

Example:
    >>> def step(idx, z):            # one step along a fixed direction d [B, ...]
    ...     z = z + 0.5 * d[idx]; img = decode(z); return z, img, log_odds(img, t[idx])
    >>> res = latent_walk(step, render, start=z0, frame0=rec, s0=s_rec, level=0.0,
    ...                   stop_at=2.2, step_size=0.5, max_steps=100)             # doctest: +SKIP
    >>> res.counterfactual, res.found, res.stop_reason                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from medcf.counterfactual._common import logit
from medcf.counterfactual.base import PathConfig, refine_crossing

STOP_REASONS = ("reached", "no_progress", "budget")


@dataclass(frozen=True)
class WalkConfig(PathConfig):
    """Settings of a latent walk (subclass it; a subclass may change the defaults)."""

    compose: str = "generated"            # frames: "generated" (the generator's image) | "residual"
                                          # (input + the generator's change)
    stop_probability: float | None = 0.9  # extend the walk until this probability (at least take_at);
                                          # None: stop at take_at
    step_size: float = 0.5                # walk coordinate per frame
    patience: int = 5                     # frames without log-odds progress before giving up
    min_progress: float = 1e-3            # log-odds rise that counts as progress
    refine_steps: int = 6                 # bisection steps locating the crossing

    def __post_init__(self):
        super().__post_init__()
        where = type(self).__name__
        if self.stop_probability is not None and not 0.0 < self.stop_probability < 1.0:
            raise ValueError(f"{where}.stop_probability: must lie in (0, 1) or be None, got {self.stop_probability}")
        if not self.step_size > 0 or self.patience < 1 or self.refine_steps < 0:
            raise ValueError(f"{where}: step_size > 0, patience >= 1 and refine_steps >= 0 needed, got "
                             f"{self.step_size}, {self.patience}, {self.refine_steps}")

    @property
    def stop_logit(self) -> float:
        """Log-odds where a query's walk stops (never before ``take_at``)."""
        if self.stop_probability is None:
            return self.take_logit
        return max(self.take_logit, logit(self.stop_probability))


@dataclass
class WalkResult:
    """Where each query's walk ended and its counterfactual (B queries, T frames)."""

    state: Tensor               # [B, ...] state of the counterfactual
    counterfactual: Tensor      # [B, C, H, W] its frame
    log_odds: Tensor            # [B] its target log-odds
    lam: Tensor                 # [B] its walk coordinate
    found: Tensor               # [B] bool: some frame reached the level
    n_frames: Tensor            # [B] long: accepted frames, frame 0 included
    stop_reason: list[str]      # per query: reached | no_progress | budget | max_reason
    path: Tensor | None         # [T, B, C, H, W] frames (a stopped query repeats its last frame)
    path_log_odds: Tensor | None  # [T, B]


def latent_walk(step: Callable, render: Callable, *, start: Tensor, frame0: Tensor, s0: Tensor,
                level: float, stop_at: float, step_size: float, max_steps: int, patience: int = 5,
                min_progress: float = 1e-3, refine_steps: int = 6, over_budget: Callable | None = None,
                keep_path: bool = True, max_reason: str = "max_steps") -> WalkResult:
    """Walk every query from ``start`` until its stop rule; see the module docstring.

    ``step(idx [b], state [b, ...]) -> (new state [b, ...], frames [b, C, H, W], log-odds [b])``
    advances the queries ``idx``; ``render(idx, state) -> (frames, log-odds)`` renders states
    of queries ``idx`` (for the bisection); ``over_budget(idx, frames) -> [b] bool`` marks
    frames outside the pixel budget (None: no budget). ``frame0``/``s0`` are the start
    frames [B, C, H, W] and their log-odds [B]; ``level``/``stop_at`` are log-odds.
    """
    b, dev = start.shape[0], start.device
    stop_at = max(level, stop_at)
    state = start.clone()
    s_cur = s0.clone()
    lam = torch.zeros(b, device=dev)
    best_s, best_state, best_img, best_lam = s0.clone(), start.clone(), frame0.clone(), lam.clone()
    since = torch.zeros(b, dtype=torch.long, device=dev)
    found = s0 >= level
    cross_lo, cross_hi = start.clone(), start.clone()
    lam_lo, lam_hi = lam.clone(), lam.clone()
    active = ~(found & (s0 >= stop_at))
    reason = ["" if a else "reached" for a in active.tolist()]
    n_frames = torch.ones(b, dtype=torch.long, device=dev)
    last = frame0.clone()
    path, path_s = ([frame0.clone()], [s0.clone()]) if keep_path else ([], [])

    for _ in range(max_steps):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        new, img, s_new = step(idx, state[idx])
        over = over_budget(idx, img) if over_budget is not None else torch.zeros_like(s_new, dtype=torch.bool)
        keep = ~over
        kidx = idx[keep]
        newly = keep & ~found[idx] & (s_new >= level)           # first frame past the level
        nidx = idx[newly]
        cross_lo[nidx], cross_hi[nidx] = state[nidx], new[newly]
        lam_lo[nidx], lam_hi[nidx] = lam[nidx], lam[nidx] + step_size
        found[nidx] = True
        state[kidx] = new[keep]
        lam[kidx] = lam[kidx] + step_size
        last[kidx] = img[keep]
        s_cur[kidx] = s_new[keep]
        n_frames[kidx] += 1
        improved = keep & (s_new > best_s[idx] + min_progress)
        iidx = idx[improved]
        best_s[iidx], best_state[iidx], best_img[iidx], best_lam[iidx] = (
            s_new[improved], new[improved], img[improved], lam[iidx])
        since[idx] = torch.where(improved, 0, since[idx] + 1)
        # stop rules, in this order (one host sync per frame, not per query)
        over_l = over.tolist()
        reached = (found[idx] & (s_cur[idx] >= stop_at)).tolist()
        stalled = (since[idx] >= patience).tolist()
        stopped = []
        for j, i in enumerate(idx.tolist()):
            why = "budget" if over_l[j] else "reached" if reached[j] else "no_progress" if stalled[j] else ""
            if why:
                reason[i] = why
                stopped.append(i)
        if stopped:
            active[torch.tensor(stopped, device=dev)] = False
        if keep_path:
            path.append(last.clone())
            path_s.append(s_cur.clone())
    for i in active.nonzero().squeeze(1).tolist():
        reason[i] = max_reason

    # the counterfactual: frame 0, the refined crossing, else the best frame
    st, img_cf, s_cf, lam_cf = best_state.clone(), best_img.clone(), best_s.clone(), best_lam.clone()
    at_start = found & (s0 >= level)
    st[at_start], img_cf[at_start], s_cf[at_start], lam_cf[at_start] = (
        start[at_start], frame0[at_start], s0[at_start], 0.0)
    fidx = (found & ~at_start).nonzero().squeeze(1)
    if fidx.numel():
        lo, seg = cross_lo[fidx], cross_hi[fidx] - cross_lo[fidx]
        shape = (-1, *([1] * (seg.ndim - 1)))

        def at(f: Tensor) -> tuple[Tensor, Tensor]:  # f [n] in [0, 1] along the crossing segment
            return render(fidx, lo + f.view(shape) * seg)

        zeros = torch.zeros(fidx.numel(), device=dev)
        f = refine_crossing(at, zeros, torch.ones_like(zeros), level, refine_steps)
        sc = lo + f.view(shape) * seg
        ic, s_c = render(fidx, sc)
        st[fidx], img_cf[fidx], s_cf[fidx] = sc, ic, s_c
        lam_cf[fidx] = lam_lo[fidx] + f * (lam_hi[fidx] - lam_lo[fidx])
    return WalkResult(state=st, counterfactual=img_cf, log_odds=s_cf, lam=lam_cf, found=found,
                      n_frames=n_frames, stop_reason=reason,
                      path=torch.stack(path) if keep_path else None,
                      path_log_odds=torch.stack(path_s) if keep_path else None)


__all__ = ["STOP_REASONS", "WalkConfig", "WalkResult", "latent_walk"]
