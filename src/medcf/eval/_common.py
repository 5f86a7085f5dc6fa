"""Small helpers shared by the metric modules (not public API)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from medcf.errors import ShapeError
from medcf.types import reaches


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a parameterless module)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no gradients inside; the model's train/eval flags are restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, mode in modes:
            m.train(mode)


def run(model: nn.Module, x: Tensor, method: str | None = None) -> Tensor:
    """``model(x)`` (or ``model.<method>(x)``) in eval mode without gradients, on CPU."""
    with evaluating(model):
        fn = getattr(model, method) if method else model
        return fn(x.to(model_device(model))).float().cpu()


def logits_of(model: nn.Module, x: Tensor, name: str = "classifier") -> Tensor:  # -> [B, K]
    out = run(model, x)
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise ShapeError(f"{name}: expected logits [B, K] for B={x.shape[0]}, got {tuple(out.shape)}")
    return out


def class_probs(logits: Tensor) -> Tensor:  # [B, K] -> [B, max(K, 2)]
    """Class probabilities; a single sigmoid logit becomes the two columns (1 - p, p)."""
    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p1, p1], dim=1)
    return torch.softmax(logits, dim=1)


def decisions(logits: Tensor) -> Tensor:  # [B, K] -> [B] long
    """The classifier's decision: argmax, or sigmoid(logit) >= 0.5 for a single logit."""
    if logits.shape[1] == 1:
        return reaches(torch.sigmoid(logits[:, 0])).long()
    return logits.argmax(dim=1)


def mean_or_nan(values: Tensor) -> float:
    """Mean of a 1-D tensor as a float, NaN for an empty one."""
    return float(values.float().mean()) if values.numel() else math.nan
