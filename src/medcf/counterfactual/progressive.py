"""Progressive exaggeration (Singla et al., "Explaining the black-box smoothly", ICLR 2020;
MedIA 2023): a generator trained for the explained classifier renders ``G(x, c)`` for
posterior bins ``c`` from the bin of ``f(x)`` to the far end of the target class.

1. ``b_x``: the bin of the classifier's class-1 probability on x;
2. frames: x itself, then ``G(x, c_j)`` for ``c_j = b_x, b_x ± 1, ...`` toward bin
   ``bins - 1`` (target class 1) or bin 0 (target class 0); a query that reaches the end
   early repeats its last frame, so every path has ``bins + 1`` frames;
3. the counterfactual is the first frame reaching ``take_at`` (or ``threshold``), the
   best frame otherwise (``Explainer.from_path``); ``info["monotone"]`` says per query
   whether the target probability never falls along the generated sequence G(x, c) over the
   bins (Singla et al.'s smoothness; the issue's definition), ``info["monotone_from_query"]``
   the same with the query itself as the first frame (its step to G(x, c_0) is the
   generator's reconstruction error, not the exaggeration).

The generator records the fingerprint of the classifier it was trained for; explaining
another classifier raises ``CheckpointError`` unless ``force=True``.

Example:
    >>> from medcf.generators.progressive import load_progressive
    >>> ex = Progressive(generator=load_progressive("runs/prog"), classifier=clf)    # doctest: +SKIP
    >>> cf = ex.explain(x, target="cardiomegaly"); cf.info["monotone"]               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medcf.counterfactual.base import Explainer, PathConfig, monotone_fraction
from medcf.errors import CheckpointError, MedcfError
from medcf.generators.progressive import posterior_bin
from medcf.types import Counterfactual, Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressiveConfig(PathConfig):
    take_at: float | None = 0.9           # meaningful by default: well past the decision, not the bare flip
    concept: int = 0                      # which concept channel to follow (DISSECT generators)
    exaggerate: tuple[float, ...] = ()    # factors a > 1: frames x + a (G(x, c_end) - x) after the last bin

    def __post_init__(self):
        super().__post_init__()
        factors = tuple(float(a) for a in self.exaggerate)  # a TOML list or a --set "1.5,2" tuple
        if any(a <= 1.0 for a in factors) or list(factors) != sorted(set(factors)):
            raise ValueError(f"{type(self).__name__}.exaggerate: factors must be increasing and > 1, "
                             f"got {self.exaggerate!r}")
        object.__setattr__(self, "exaggerate", factors)


def check_classifier(generator, classifier: nn.Module, *, force: bool, who: str) -> None:
    """Refuse a classifier other than the one the generator was trained for (unless forced)."""
    from medcf.train.progressive import classifier_fingerprint

    expected = getattr(generator, "classifier_hash", "")
    if not expected or not isinstance(classifier, nn.Module):
        return
    got = classifier_fingerprint(classifier)
    if got != expected:
        if not force:
            raise CheckpointError(f"{who}: the generator was trained for classifier {expected}, this one is "
                                  f"{got}; retrain it for this classifier or pass force (--set force=true)")
        log.warning("%s: explaining classifier %s with a generator trained for %s (forced)", who, got, expected)


class Progressive(Explainer):
    """Progressive-exaggeration explainer bound to a ``ProgressiveGenerator`` and its classifier."""

    method = "progressive"
    config_class = ProgressiveConfig

    def __init__(self, *, generator, classifier: nn.Module, config: ProgressiveConfig | None = None,
                 force: bool = False):
        super().__init__(classifier=classifier, config=config)
        if not callable(getattr(generator, "delta", None)):
            raise TypeError(f"{type(self).__name__}: generator must be a ProgressiveGenerator")
        if not 0 <= self.config.concept < generator.config.concepts:
            raise MedcfError(f"{type(self).__name__}: concept {self.config.concept} is not one of the "
                             f"generator's {generator.config.concepts} concepts")
        check_classifier(generator, classifier, force=force, who=type(self).__name__)
        self.generator = generator

    def _path(self, x: Tensor, t: Tensor, concept: int) -> tuple[Tensor, Tensor]:
        """Frames [F, B, C, H, W] and log-odds [F, B] of the target: x, the bins, then the exaggerations
        (F = bins + 1 + len(exaggerate))."""
        bins = self.generator.config.bins
        b = x.shape[0]
        with torch.no_grad():
            s1 = self.log_odds(x, torch.ones(b, dtype=torch.long, device=x.device))  # class-1 log-odds
            start = posterior_bin(torch.sigmoid(s1), bins)
            step = torch.where(t == 1, 1, -1)
            k = torch.full((b,), concept, dtype=torch.long, device=x.device)
            frames, s = [x], [self.log_odds(x, t)]
            for j in range(bins):
                c = (start + step * j).clamp(0, bins - 1)
                frames.append(self.generator(x, c, k))
                s.append(self.log_odds(frames[-1], t))
            change = frames[-1] - x                                   # the far end's change G(x, c_end) - x
            for a in self.config.exaggerate:  # beyond the last bin: that change, amplified
                frames.append((x + a * change).clamp(-1.0, 1.0))
                s.append(self.log_odds(frames[-1], t))
        return torch.stack(frames), torch.stack(s)

    def explain(self, x: Tensor, target: Target | None = None) -> Counterfactual:
        """Counterfactuals for ``x`` [B, C, H, W] toward ``target`` (None: flip the decision)."""
        start = time.perf_counter()
        cfg = self.generator.config
        self.check_inputs(x, channels=cfg.channels, resolution=cfg.resolution,
                          modules={"generator": self.generator})
        with self.eval_mode(self.generator):
            t, _ = self.targets(x, target)
            path, s = self._path(x, t, self.config.concept)
        cf = self.from_path(x, t, path, s, info={"concept": self.config.concept}, start_time=start)
        p = torch.sigmoid(s[:cfg.bins + 1])                           # [bins + 1, B]: frame 0 is x
        cf.info["monotone"] = monotone_fraction(p[1:]).tolist()       # along G(x, c) over the bins
        cf.info["monotone_from_query"] = monotone_fraction(p).tolist()
        return cf


def build(classifier_dir: str | os.PathLike, generator_dir: str | os.PathLike, *, device="cpu",
          progress: bool = True, force: bool = False, **options) -> Progressive:
    """A ``Progressive`` explainer from a classifier run and a ``medcf train progressive`` run.

    Example:
        >>> ex = build("runs/demo/classifier", "runs/prog", take_at=0.95)   # doctest: +SKIP
    """
    return _build(Progressive, classifier_dir, generator_dir, device=device, force=force, **options)


def _build(cls, classifier_dir, generator_dir, *, device, force, **options):
    from medcf.explain_runner import load_explained_classifier
    from medcf.generators.progressive import KIND, load_progressive
    from medcf.io import read_header

    header = read_header(generator_dir)
    if header["kind"] != KIND:
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint; --method {cls.method} "
                              f"needs a '{KIND}' generator (medcf train {cls.method})")
    classifier = load_explained_classifier(classifier_dir, device=device)
    generator = load_progressive(header["path"], device=device)
    try:
        config = cls.config_class(**{k: v for k, v in options.items() if v is not None})
    except (TypeError, ValueError) as e:
        raise MedcfError(f"--method {cls.method}: {e}") from None
    return cls(generator=generator, classifier=classifier, config=config, force=bool(force))
