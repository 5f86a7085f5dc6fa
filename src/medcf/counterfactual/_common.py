"""Small helpers shared by the explainers."""

from __future__ import annotations

import contextlib
import math

from torch import nn

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
