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
