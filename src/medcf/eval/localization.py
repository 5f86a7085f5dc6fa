"""Localization of a difference map against a ground-truth region (synthetic data).

Score the absolute difference map |x_cf - x| (``cf.difference``) against the
region that truly changes:

- ``ncc``: normalised cross-correlation as Baumgartner et al. (VA-GAN, CVPR
  2018) and Bass et al. (ICAM, NeurIPS 2020) report it:
  NCC(a, b) = mean over pixels of ((a - mean a) / std a) * ((b - mean b) / std b),
  with population standard deviations, so NCC(a, a) = 1 and NCC in [-1, 1].
  NaN for a constant map or mask.
- ``auroc``: the area under the ROC curve of the map's pixel values as scores
  for the mask's pixels (> 0.5 positive), sklearn ``roc_auc_score`` per
  image. NaN where the mask is all one class.
- ``boundary_band``: the truth region for cardiomegaly: a change of the
  cardiothoracic ratio moves the heart border, so the region is the band
  dilation(mask) - erosion(mask) with a square structuring element of
  half-width ``width`` pixels (a band about 2 * width + 1 pixels wide).

Per-image values are averaged with NaNs left out (``mean_localization``).

Example:
    >>> region = boundary_band(batch["heart_mask"], width=3)      # doctest: +SKIP
    >>> auroc(cf.difference.abs(), region).nanmean()             # doctest: +SKIP
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import Tensor

from medcf.errors import ShapeError


def _flat_pair(maps: Tensor, masks: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if maps.ndim != 4 or masks.ndim != 4 or maps.shape[0] != masks.shape[0] or \
            maps.shape[-2:] != masks.shape[-2:]:
        raise ShapeError(f"{name}: expected maps and masks [B, 1, H, W] of one size, got "
                         f"{tuple(maps.shape)} and {tuple(masks.shape)}")
    # average channels of a multi-channel map/mask to one
    a = maps.detach().double().cpu().mean(1).flatten(1)
    b = masks.detach().double().cpu().mean(1).flatten(1)
    return a, b


def ncc(maps: Tensor, masks: Tensor) -> Tensor:  # [B, 1, H, W] x2 -> [B]
    """Normalised cross-correlation per image (NaN where either input is constant)."""
    a, b = _flat_pair(maps, masks, "ncc")
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    sa, sb = a.pow(2).mean(1).sqrt(), b.pow(2).mean(1).sqrt()
    out = (a * b).mean(1) / (sa * sb)
    out[(sa == 0) | (sb == 0)] = math.nan
    return out.float()


def auroc(maps: Tensor, masks: Tensor) -> Tensor:  # [B, 1, H, W] x2 -> [B]
    """Pixel AUROC of the map as a detector of the mask, per image (NaN for one-class masks)."""
    a, b = _flat_pair(maps, masks, "auroc")
    out = []
    for scores, truth in zip(a.numpy(), (b > 0.5).numpy(), strict=True):
        out.append(roc_auc_score(truth, scores) if 0 < truth.sum() < truth.size else math.nan)
    return torch.tensor(np.asarray(out, dtype=np.float64)).float()


def boundary_band(mask: Tensor, width: int = 3) -> Tensor:  # [B, 1, H, W] -> [B, 1, H, W] in {0, 1}
    """dilation(mask) - erosion(mask), square element of half-width ``width`` pixels."""
    if mask.ndim != 4:
        raise ShapeError(f"boundary_band: expected a mask [B, 1, H, W], got {tuple(mask.shape)}")
    if width < 1:
        raise ValueError(f"boundary_band: width must be >= 1, got {width}")
    m = (mask.float() > 0.5).float()
    k = 2 * width + 1
    dilated = F.max_pool2d(m, k, stride=1, padding=width)
    eroded = 1 - F.max_pool2d(1 - m, k, stride=1, padding=width)
    return dilated - eroded


def mean_localization(maps: Tensor, masks: Tensor) -> dict:
    """``{"ncc", "auroc"}`` averaged over images with NaNs left out, and ``n`` images scored."""
    n, a = ncc(maps, masks), auroc(maps, masks)
    return {"ncc": float(np.nanmean(n.numpy())) if (~n.isnan()).any() else math.nan,
            "auroc": float(np.nanmean(a.numpy())) if (~a.isnan()).any() else math.nan,
            "n": int((~a.isnan()).sum())}
