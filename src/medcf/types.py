"""Shared protocols, the ``Counterfactual`` result and small aliases.

Conventions (see docs/design.md): images are float tensors ``[B, C, H, W]`` in
``[-1, 1]``; a classifier is any ``nn.Module`` returning logits ``[B, K]``
(``K == 1`` means a single sigmoid logit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from medcf.errors import ShapeError

# A target class given as an index, a class name, or a tensor of indices [B].
Target = int | str | Sequence[int] | Tensor


def reaches(prob: Tensor, threshold: float = 0.5) -> Tensor:
    """The one decision rule: a target probability reaches the decision when ``prob >= threshold``
    (a single sigmoid logit decides class 1 at logit >= 0)."""
    return prob >= threshold


@runtime_checkable
class Generator(Protocol):
    """Latent -> image."""

    def decode(self, z: Tensor) -> Tensor:  # [B, *latent] -> [B, C, H, W]
        ...

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:  # -> [n, C, H, W]
        ...


@runtime_checkable
class Encoder(Protocol):
    """Image -> latent (deterministic: the posterior mean for a VAE)."""

    def encode(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, *latent]
        ...


@dataclass(frozen=True)
class Counterfactual:
    """The result of ``Explainer.explain``: images, maps, probabilities, path.

    Example:
        >>> cf = explainer.explain(x, target="cardiomegaly")   # doctest: +SKIP
        >>> cf.flipped.float().mean()                          # doctest: +SKIP
    """

    original: Tensor  # [B, C, H, W]
    counterfactual: Tensor  # [B, C, H, W]
    difference: Tensor  # [B, 1, H, W] signed map (counterfactual - reference)
    target: Tensor  # [B] long
    prob_original: Tensor  # [B] probability of target on the input
    prob_counterfactual: Tensor  # [B] probability of target on the counterfactual
    reconstruction: Tensor | None = None  # [B, C, H, W] generator's reconstruction
    path: Tensor | None = None  # [T, B, C, H, W] frames for the GIF
    path_probs: Tensor | None = None  # [T, B]
    latents: Tensor | None = None  # [B, *latent] latent of the counterfactual
    threshold: float = 0.5  # decision threshold on the target probability
    info: dict[str, Any] = field(default_factory=dict)  # method, settings, timings
    concept_paths: Tensor | None = None  # [K, T, B, C, H, W] one path per concept (DISSECT)
    concept_probs: Tensor | None = None  # [K, T, B]

    @property
    def flipped(self) -> Tensor:
        """[B] bool: the counterfactual reaches the target decision."""
        return reaches(self.prob_counterfactual, self.threshold)

    def __len__(self) -> int:
        return self.original.shape[0]

    def select(self, i: int) -> Counterfactual:
        """The i-th query as a batch of one."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor) and f.name in ("path", "path_probs"):
                out[f.name] = v[:, i : i + 1]
            elif isinstance(v, Tensor) and f.name in ("concept_paths", "concept_probs"):
                out[f.name] = v[:, :, i : i + 1]
            elif isinstance(v, Tensor):
                out[f.name] = v[i : i + 1]
            else:
                out[f.name] = v
        return Counterfactual(**out)

    def save_gif(self, path, **kwargs):
        """Write the path as a GIF; a batch writes one numbered GIF per query
        (``a.gif`` -> ``a_0.gif``, ...). Returns the path(s) (see ``medcf.viz.save_gif``)."""
        from medcf.viz import save_gif

        return save_gif(self, path, **kwargs)


@runtime_checkable
class Explainer(Protocol):
    """Bound to a classifier (and generator) at construction."""

    def explain(self, x: Tensor, target: Target) -> Counterfactual:  # x: [B, C, H, W]
        ...


def check_images(x: Tensor, *, channels: int | None = None, resolution: int | None = None,
                 name: str = "images") -> None:
    """Raise ``ShapeError`` unless ``x`` is ``[B, C, H, W]`` with the expected C and H=W."""
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ShapeError(f"{name}: expected a [B, C, H, W] tensor, got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ShapeError(f"{name}: expected {channels} channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
    if resolution is not None and (x.shape[2] != resolution or x.shape[3] != resolution):
        raise ShapeError(
            f"{name}: expected {resolution}x{resolution} pixels, got {x.shape[2]}x{x.shape[3]}"
        )


def resolve_target(target: Target, batch: int, class_names: Sequence[str] | None = None,
                   num_classes: int | None = None) -> Tensor:
    """Turn an int, class name, list or tensor into a ``[batch]`` long tensor of class indices."""
    if isinstance(target, str):
        names = list(class_names or [])
        if target not in names:
            raise ValueError(f"target {target!r} is not a class name; known: {names}")
        idx = torch.full((batch,), names.index(target), dtype=torch.long)
    elif isinstance(target, Tensor):
        idx = target.reshape(-1).long()
        if idx.numel() == 1:
            idx = idx.expand(batch).clone()
    elif isinstance(target, int):
        idx = torch.full((batch,), target, dtype=torch.long)
    else:
        idx = torch.as_tensor(list(target), dtype=torch.long)
    if idx.shape != (batch,):
        raise ShapeError(f"target: expected {batch} class indices, got shape {tuple(idx.shape)}")
    if num_classes is not None and ((idx < 0) | (idx >= num_classes)).any():
        raise ValueError(f"target: class indices must lie in [0, {num_classes}), got {idx.tolist()}")
    return idx


def target_probability(logits: Tensor, target: Tensor) -> Tensor:
    """Probability of class ``target`` [B] from logits [B, K]; K == 1 is a sigmoid logit."""
    if logits.ndim != 2:
        raise ShapeError(f"classifier output: expected logits [B, K], got {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits[:, 0])
        return torch.where(target == 1, p1, 1 - p1)
    return torch.softmax(logits, dim=1).gather(1, target.view(-1, 1).to(logits.device)).squeeze(1)
