"""LPIPS perceptual distance (Zhang et al., CVPR 2018) with the real weights, offline.

``LPIPS(net="alex")`` is the ``lpips`` package's network (v0.1: scaling layer,
backbone features unit-normalised per channel, squared differences weighted by
the learned linear layers, spatially averaged, summed over layers) built with
random weights and then loaded from the medcf cache (``medcf weights
import-lpips``, see ``lpips_weights``), or from the torch hub cache when the
official torchvision backbone file is there. Nothing is downloaded.

Inputs are ``[B, C, H, W]`` in ``[-1, 1]``; grayscale (C == 1) is repeated to
three channels. Inputs smaller than 32 px (AlexNet needs at least 31) are
bilinearly upsampled to 32 px (logged once).

Example:
    >>> d = LPIPS(net="alex")(x, x_cf)      # [B] distances        # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.errors import CheckpointError, ShapeError
from medcf.eval._common import evaluating, model_device
from medcf.eval.lpips_weights import _saved_keys, build_lpips_module, load_lpips_state

log = logging.getLogger(__name__)

MIN_SIZE = 32


class LPIPS(nn.Module):
    """Learned perceptual image patch similarity; ``forward(x, y) -> [B]``.

    Args:
        net: "alex" (the LPIPS default) or "vgg".
        cache_dir: folder holding ``{net}.safetensors`` (default ``$MEDCF_CACHE/lpips``
            or ``~/.cache/medcf/lpips``).

    Raises ``WeightsNotFoundError`` (with the command that fixes it) when no
    weights are available.
    """

    def __init__(self, net: str = "alex", cache_dir: str | os.PathLike | None = None):
        super().__init__()
        self.net_name = net
        self.model = build_lpips_module(net)
        state, self.weights_source = load_lpips_state(net, cache_dir)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        lost = set(missing) & set(_saved_keys(self.model))
        if lost or unexpected:
            raise CheckpointError(
                f"{self.weights_source}: LPIPS {net} weights do not fit (missing {sorted(lost)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]})"
            )
        self.model.requires_grad_(False)
        self.eval()
        self._warned_small = False

    def _prepare(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, 3, H', W']
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ShapeError(f"LPIPS: expected 1 or 3 channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        h, w = x.shape[-2:]
        if min(h, w) < MIN_SIZE:
            if not self._warned_small:
                log.warning("LPIPS: upsampling %dx%d inputs to at least %d px", h, w, MIN_SIZE)
                self._warned_small = True
            scale = MIN_SIZE / min(h, w)
            size = (max(MIN_SIZE, round(h * scale)), max(MIN_SIZE, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # [B, C, H, W] x2 -> [B]
        if x.ndim != 4 or x.shape != y.shape:
            raise ShapeError(f"LPIPS: expected two [B, C, H, W] tensors of one shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        return self.model(self._prepare(x.float()), self._prepare(y.float())).reshape(-1)


def lpips_distance(x: Tensor, y: Tensor, metric: LPIPS) -> Tensor:
    """[B] LPIPS distances between ``x`` and ``y`` without gradients."""
    device = model_device(metric)
    with evaluating(metric):
        return metric(x.to(device), y.to(device)).cpu()


def lpips_diversity(samples: Tensor, metric: LPIPS) -> Tensor:  # [K, B, C, H, W] -> [B]
    """Mean LPIPS over all pairs of K >= 2 counterfactuals of the same input (diversity)."""
    if samples.ndim != 5 or samples.shape[0] < 2:
        raise ShapeError(f"lpips_diversity: expected [K >= 2, B, C, H, W], got {tuple(samples.shape)}")
    k = samples.shape[0]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    d = torch.stack([lpips_distance(samples[i], samples[j], metric) for i, j in pairs])  # [P, B]
    return d.mean(0)
