"""Small helpers shared by the explainers."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# How explainers show a frame: the generator's image, or the input plus the generator's change.
COMPOSE_MODES = ("generated", "residual")


def logit(p: float) -> float:
    """log(p / (1 - p)) for a probability in (0, 1)."""
    return math.log(p / (1.0 - p))


@contextlib.contextmanager
def eval_mode(*modules):
    """Put modules in eval mode for the block and restore their flags afterwards."""
    mods = [m for m in modules if isinstance(m, nn.Module)]
    flags = [m.training for m in mods]
    try:
        for m in mods:
            m.eval()
        yield
    finally:
        for m, flag in zip(mods, flags, strict=True):
            m.train(flag)


def domain_sides(classifier, model, t, who: str) -> list[str]:
    """[B] classifier class indices -> "a" | "b" per query: the side of a two-domain model
    (CycleGAN, ICAM) each target class is. Classes are matched by name when both the
    classifier and the model know their class names, else by index; a class that is
    neither domain is a one-line ``MedcfError``."""
    from medcf.errors import MedcfError

    cfg = model.config
    clf_names = list(getattr(classifier, "class_names", None) or [])
    gan_names = list(cfg.class_names)
    sides = []
    for c in t.tolist():
        key = c
        if clf_names and gan_names and c < len(clf_names):
            key = gan_names.index(clf_names[c]) if clf_names[c] in gan_names else -1
        side = model.domain_of_class(key) if key >= 0 else None
        if side is None:
            name = clf_names[c] if c < len(clf_names) else c
            raise MedcfError(f"{who}: target class {name!r} is not one of {who}'s domains "
                             f"({cfg.domain_name('a')!r}, {cfg.domain_name('b')!r})")
        sides.append(side)
    return sides


def change_mask(x: Tensor, changed: Tensor, threshold: float, dilate: int, smooth: int = 0) -> Tensor:
    """[B, 1, H, W] bool: where the mean |changed - x| over channels, box-averaged over a
    ``2 * smooth + 1`` window (0: per pixel), is >= ``threshold`` x its per-image maximum,
    dilated by ``dilate`` pixels (empty where nothing changed). Smoothing lets a large-area
    change (an organ) through and drops small isolated differences (a foreign object the
    generator redrew slightly differently).

    Example:
        >>> x = torch.zeros(1, 1, 8, 8); y = x.clone(); y[0, 0, 4, 4] = 1.0
        >>> int(change_mask(x, y, 0.5, 1).sum())
        9
    """
    return threshold_map((changed - x).abs().mean(1, keepdim=True), threshold, dilate, smooth)


def threshold_map(diff: Tensor, threshold: float, dilate: int, smooth: int = 0) -> Tensor:
    """``change_mask`` on a given map of change sizes ``diff`` [B, 1, H, W] (>= 0)."""
    if smooth:
        diff = F.avg_pool2d(diff, 2 * smooth + 1, stride=1, padding=smooth, count_include_pad=False)
    peak = diff.flatten(1).amax(1).view(-1, 1, 1, 1)
    m = (diff >= threshold * peak) & (peak > 0)
    if dilate:
        m = F.max_pool2d(m.float(), 2 * dilate + 1, stride=1, padding=dilate) > 0
    return m


def check_mask_settings(where: str, threshold: float, dilate: int, smooth: int) -> None:
    """ValueError unless 0 < threshold <= 1 and dilate, smooth are integers >= 0."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"{where}.mask_threshold: must lie in (0, 1], got {threshold}")
    for name, v in (("mask_dilate", dilate), ("mask_smooth", smooth)):
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{where}.{name}: must be an integer >= 0, got {v!r}")


def masked_frames(x: Tensor, path: Tensor, threshold: float, dilate: int, smooth: int) -> Tensor:
    """Frames [T, B, C, H, W] -> x + m_t * (frame_t - x), with m_t = ``change_mask`` of each
    frame's own change: outside its mask every frame is the input, bit for bit.

    Example:
        >>> x = torch.zeros(1, 1, 8, 8); f = x.clone(); f[0, 0, 2:6, 2:6] = 1.0; f[0, 0, 0, 7] = 0.2
        >>> out = masked_frames(x, torch.stack([x, f]), 0.5, 0, 1)
        >>> float(out[1, 0, 0, 3, 3]), float(out[1, 0, 0, 0, 7])   # the square kept, the speck dropped
        (1.0, 0.0)
    """
    masks = torch.stack([change_mask(x, f, threshold, dilate, smooth) for f in path])  # [T, B, 1, H, W]
    return torch.where(masks, path, x.unsqueeze(0))


def relaxed_masked_frames(x: Tensor, path: Tensor, thresholds: tuple[float, ...], dilate: int, smooth: int,
                          reached) -> tuple[Tensor, Tensor]:
    """``masked_frames`` at the first of ``thresholds`` (strictest first) whose frames reach
    the target, per query: a query keeps the strictest mask with which ``reached(index,
    frames)`` (the queries' [b] positions in the batch, their frames [T, b, C, H, W] -> [b]
    bool) is true, else the last (loosest) one.

    Returns (frames [T, B, C, H, W], the threshold used [B]).

    Example:
        >>> x = torch.zeros(1, 1, 8, 8); f = x.clone(); f[0, 0, 2:6, 2:6] = 1.0; f[0, 0, 0, 7] = 0.75
        >>> hit = lambda index, fr: fr[-1, :, 0, 0, 7] > 0          # needs the corner pixel kept
        >>> out, used = relaxed_masked_frames(x, torch.stack([x, f]), (0.9, 0.5), 0, 0, hit)
        >>> used.tolist(), float(out[1, 0, 0, 0, 7])
        ([0.5], 0.75)
    """
    frames = masked_frames(x, path, thresholds[0], dilate, smooth)
    used = torch.full((x.shape[0],), float(thresholds[0]), dtype=torch.float64, device=x.device)
    if len(thresholds) == 1:                                               # nothing to relax to: no test
        return frames, used
    every = torch.arange(x.shape[0], device=x.device)
    todo = every[~reached(every, frames)]
    for threshold in thresholds[1:]:
        if todo.numel() == 0:
            break
        alt = masked_frames(x[todo], path[:, todo], threshold, dilate, smooth)
        frames[:, todo] = alt
        used[todo] = threshold
        todo = todo[~reached(todo, alt)]
    return frames, used
