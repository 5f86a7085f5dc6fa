"""What every explainer shares: binding, targets, the classifier's log-odds, the one
decision rule, and choosing the counterfactual along a path of frames.

An explainer subclasses ``Explainer``, sets ``method`` (its CLI name) and
``config_class`` (a frozen dataclass deriving from ``PathConfig``), and
implements ``explain``. Methods that produce a sequence of frames (a latent walk,
an optimisation path, repeated translation, a denoising trajectory, a sweep over
conditioning bins) hand the frames to ``Explainer.from_path``, which applies the
shared ``take_at`` semantics and builds the ``Counterfactual``.

The decision rule, defined once (``medcf.types.reaches``): a query reaches its
target when the target probability is ``>= threshold``; in log-odds,
``s >= logit(threshold)``. ``take_at`` (>= threshold) is where along the path
the counterfactual is taken; validity is still judged at ``threshold``.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class MyConfig(PathConfig):
    ...     steps: int = 10
    >>> class Mine(Explainer):
    ...     method, config_class = "mine", MyConfig
    ...     def explain(self, x, target=None):
    ...         t, _ = self.targets(x, target)
    ...         frames = torch.stack([x * (1 - a) for a in torch.linspace(0, 1, self.config.steps)])
    ...         return self.from_path(x, t, frames)
"""

from __future__ import annotations

import abc
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medcf.counterfactual._common import COMPOSE_MODES, eval_mode, logit
from medcf.errors import ShapeError
from medcf.types import Counterfactual, Target, check_images, reaches, resolve_target

DIRECTIONS = ("toward", "away")


@dataclass(frozen=True)
class PathConfig:
    """Settings shared by every explainer (subclass it; keep defaults on every field)."""

    threshold: float = 0.5                # decision threshold on the target probability
    take_at: float | None = None          # take the counterfactual at this probability (>= threshold);
                                          # None: at the threshold. Validity is still judged at threshold
    keep_path: bool = True                # return every frame ([T, B, C, H, W])
    compose_modes: ClassVar[tuple[str, ...]] = COMPOSE_MODES  # the ``compose`` values a subclass accepts

    def __post_init__(self):
        where = type(self).__name__
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"{where}.threshold: must lie in (0, 1), got {self.threshold}")
        if self.take_at is not None and not self.threshold <= self.take_at < 1.0:
            raise ValueError(f"{where}.take_at: must lie in [threshold, 1) or be None, got {self.take_at}")
        compose = getattr(self, "compose", None)
        if compose is not None and compose not in self.compose_modes:
            raise ValueError(f"{where}.compose: expected one of {list(self.compose_modes)}, got {compose!r}")

    @property
    def take_logit(self) -> float:
        """Log-odds at which the counterfactual is taken."""
        return logit(self.take_at if self.take_at is not None else self.threshold)


@dataclass
class PathChoice:
    """Where along a path [T, B] each query's counterfactual is taken."""

    index: Tensor   # [B] long: frame index of the counterfactual
    found: Tensor   # [B] bool: the frame reaches take_at (else: the best frame)


def take_along_path(log_odds: Tensor, threshold: float, take_at: float | None = None) -> PathChoice:
    """[T, B] log-odds of the target along a path -> the first frame reaching ``take_at``
    (or ``threshold``), else the frame with the highest log-odds (``found`` False)."""
    if log_odds.ndim != 2:
        raise ShapeError(f"take_along_path: expected log-odds [T, B], got {tuple(log_odds.shape)}")
    level = take_at if take_at is not None else threshold
    hit = reaches(torch.sigmoid(log_odds.double()), level)                     # [T, B]
    found = hit.any(0)
    first = hit.float().argmax(0)                                               # first True per column
    best = log_odds.argmax(0)
    return PathChoice(index=torch.where(found, first, best).long(), found=found)


def refine_crossing(frame_fn, lo: Tensor, hi: Tensor, level_logit: float, steps: int) -> Tensor:
    """Bisect a scalar path parameter between ``lo`` (below the level) and ``hi`` (past it).

    ``frame_fn(a [b]) -> (frames [b, ...], log_odds [b])``; returns the smallest tested
    ``a`` past the level (``hi`` when ``steps == 0``), shape [b].
    """
    lo, hi = lo.clone(), hi.clone()
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        _, s = frame_fn(mid)
        past = s >= level_logit
        hi = torch.where(past, mid, hi)
        lo = torch.where(past, lo, mid)
    return hi


def gather_frames(path: Tensor, index: Tensor) -> Tensor:
    """path [T, B, *rest], index [B] -> [B, *rest]: frame ``index[b]`` of query b."""
    b = path.shape[1]
    return path[index.to(path.device), torch.arange(b, device=path.device)]


class Explainer(abc.ABC):
    """Base of medcf's explainers: bound to a classifier (and its backbone) at construction.

    Subclasses set ``method`` and ``config_class`` and implement ``explain``.
    """

    method: ClassVar[str] = ""
    config_class: ClassVar[type] = PathConfig

    def __init__(self, *, classifier: nn.Module, config: Any = None):
        if not callable(classifier):
            raise TypeError(f"{type(self).__name__}: classifier must be callable (an nn.Module returning logits)")
        self.classifier = classifier
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{type(self).__name__}: config must be a {self.config_class.__name__}, "
                            f"got {type(self.config).__name__}")

    @abc.abstractmethod
    def explain(self, x: Tensor, target: Target | None = None) -> Counterfactual:
        """Counterfactuals for ``x`` [B, C, H, W] toward ``target`` (None: flip a binary decision)."""

    # -- the classifier's view ------------------------------------------------------------

    def logits(self, images: Tensor) -> Tensor:
        """[b, C, H, W] -> float logits [b, K], checked."""
        out = self.classifier(images)
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ShapeError(f"{type(self).__name__} classifier output: expected logits [B, K], got {got}")
        return out.float()

    def log_odds(self, images: Tensor, target: Tensor) -> Tensor:
        """[b, C, H, W], [b] -> [b] log-odds of the target class (log p - log(1 - p))."""
        return log_odds_of(self.logits(images), target, head=getattr(self.classifier, "head", None))

    def num_classes(self, x: Tensor) -> int:
        with torch.no_grad():
            return max(2, int(self.logits(x[:1]).shape[1]))

    def is_binary(self, x: Tensor) -> bool:
        return self.num_classes(x) == 2 and getattr(self.classifier, "head", None) != "multilabel"

    def targets(self, x: Tensor, target: Target | None, direction: str = "toward") -> tuple[Tensor, Tensor | None]:
        """(class to reach [B], class left behind [B] or None). ``target=None`` flips a binary
        decision; ``direction="away"`` treats ``target`` as the class to leave (binary)."""
        name = type(self).__name__
        if direction not in DIRECTIONS:
            raise ValueError(f"{name}: direction must be one of {DIRECTIONS}, got {direction!r}")
        b = x.shape[0]
        k = self.num_classes(x)
        binary = self.is_binary(x)
        if target is None:
            if not binary:
                raise ValueError(f"{name}.explain: target=None (flip the decision) needs a binary classifier")
            with torch.no_grad():
                s = self.log_odds(x, torch.ones(b, dtype=torch.long, device=x.device))
            predicted = reaches(torch.sigmoid(s), 0.5).long()
            return 1 - predicted, predicted
        t = resolve_target(target, b, class_names=getattr(self.classifier, "class_names", None),
                           num_classes=k).to(x.device)
        if direction == "toward":
            return t, None
        if not binary:
            raise ValueError(f"{name}: direction='away' needs a binary classifier (K == 1 or 2), this one has "
                             f"{k} classes; pass the class to reach with direction='toward'")
        return 1 - t, t

    def check_inputs(self, x: Tensor, *, channels: int | None = None, resolution: int | None = None,
                     modules: dict[str, Any] | None = None, expected_by: str | None = None) -> None:
        """Shape (and optional channels/resolution) of x; every bound module on x's device.
        ``expected_by`` names the part that fixes the shape in the error (e.g. "autoencoder")."""
        name = type(self).__name__
        who = f"{expected_by} " if expected_by else ""
        expects = f" ({who}expects [B, {channels}, {resolution}, {resolution}])" if channels else ""
        check_images(x, channels=channels, resolution=resolution, name=f"{name} input{expects}")
        for mname, m in {"classifier": self.classifier, **(modules or {})}.items():
            p = next(m.parameters(), None) if isinstance(m, nn.Module) else None
            if p is not None and p.device != x.device:
                raise ValueError(f"{name}: the {mname} is on {p.device} but the images are on {x.device}; "
                                 f"move them to the same device")

    def eval_mode(self, *modules):
        """Context: the classifier and ``modules`` in eval mode, flags restored afterwards."""
        return eval_mode(self.classifier, *modules)

    # -- the result -----------------------------------------------------------------------

    def from_path(self, x: Tensor, target: Tensor, path: Tensor, path_log_odds: Tensor | None = None, *,
                  reference: Tensor | None = None, reconstruction: Tensor | None = None,
                  latents: Tensor | None = None, info: dict | None = None,
                  start_time: float | None = None) -> Counterfactual:
        """Build the Counterfactual from frames ``path`` [T, B, C, H, W] (frame 0: the start).

        The counterfactual is the first frame reaching ``take_at`` (or ``threshold``), else the
        best frame (``info["found"]`` False). ``path_log_odds`` [T, B] are computed when None.
        ``reference`` (default: frame 0) is subtracted for the difference map [B, 1, H, W].
        ``latents`` [T, B, ...] are gathered the same way when given.
        """
        cfg = self.config
        x = x.detach()
        if path.ndim != 5 or path.shape[1] != x.shape[0]:
            raise ShapeError(f"{type(self).__name__}: path must be [T, B, C, H, W] with B={x.shape[0]}, "
                             f"got {tuple(path.shape)}")
        with torch.no_grad():
            if path_log_odds is None:
                path_log_odds = torch.stack([self.log_odds(f, target) for f in path])
            s_x = self.log_odds(x, target)
        choice = take_along_path(path_log_odds, cfg.threshold, cfg.take_at)
        cf = gather_frames(path, choice.index)
        s_cf = gather_frames(path_log_odds, choice.index)
        ref = path[0] if reference is None else reference
        info = dict(info or {})
        info.setdefault("method", self.method)
        info.setdefault("settings", dataclasses.asdict(cfg))
        info["found"] = choice.found.tolist()
        info["frame_index"] = choice.index.tolist()
        info["n_frames"] = [int(path.shape[0])] * x.shape[0]  # per query (viz reads it so)
        if start_time is not None:
            info["seconds"] = time.perf_counter() - start_time
        names = getattr(self.classifier, "class_names", None)
        if names:
            info.setdefault("class_names", list(names))
        return Counterfactual(
            original=x, counterfactual=cf.detach(), difference=(cf - ref).mean(1, keepdim=True).detach(),
            target=target, prob_original=torch.sigmoid(s_x), prob_counterfactual=torch.sigmoid(s_cf),
            reconstruction=reconstruction, path=path.detach() if cfg.keep_path else None,
            path_probs=torch.sigmoid(path_log_odds) if cfg.keep_path else None,
            latents=None if latents is None else gather_frames(latents, choice.index).detach(),
            threshold=cfg.threshold, info=info)


def log_odds_of(logits: Tensor, target: Tensor, *, head: str | None = None) -> Tensor:
    """[b, K] logits, [b] targets -> [b] log-odds of the target (K == 1: sigmoid logit;
    ``head == "multilabel"``: each logit is its own sigmoid; else softmax one-vs-rest)."""
    if logits.shape[1] == 1:
        return torch.where(target == 1, logits[:, 0], -logits[:, 0])
    own = logits.gather(1, target.view(-1, 1)).squeeze(1)
    if head == "multilabel":
        return own
    others = logits.scatter(1, target.view(-1, 1), float("-inf")).logsumexp(1)
    return own - others


def monotone_fraction(path_probs: Tensor, tol: float = 1e-4) -> Tensor:
    """[T, B] -> [B] bool: the target probability never falls by more than ``tol`` along the path."""
    if path_probs.shape[0] < 2:
        return torch.ones(path_probs.shape[1], dtype=torch.bool, device=path_probs.device)
    return (path_probs.diff(dim=0) >= -tol).all(0)


__all__ = ["DIRECTIONS", "Explainer", "PathChoice", "PathConfig", "gather_frames", "log_odds_of",
           "monotone_fraction", "refine_crossing", "take_along_path"]
