"""Learning-rate schedules shared by the training recipes (pure functions of the step), and
``set_lr``, which writes a scheduled rate into optimizers.

Example:
    >>> linear_decay(75, 100, 1.0)
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch.optim import Optimizer


def warmup_cosine(step: int, total: int, base: float, warmup: int, *, floor: float = 0.05) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor * base`` at ``total``.

    A pure function of ``step``, so a resumed run continues on the same curve.

    Example:
        >>> warmup_cosine(0, 100, 1.0, 10)
        0.1
    """
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t)))


def linear_decay(step: int, total: int, lr: float) -> float:
    """lr for the first half of the run, then linearly to 0 at ``total`` (CycleGAN, ICAM)."""
    half = total // 2
    if step < half:
        return lr
    return lr * max(0.0, 1.0 - (step - half) / max(1, total - half))


def set_lr(optimizers: Iterable[Optimizer], rate: float) -> float:
    """Set the learning rate of every parameter group of ``optimizers`` to ``rate``; returns it."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = rate
    return rate


__all__ = ["linear_decay", "set_lr", "warmup_cosine"]
