"""Learning-rate schedules shared by the training recipes (pure functions of the step)."""

from __future__ import annotations

import math


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
