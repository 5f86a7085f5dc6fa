"""Proximity of a counterfactual to its input: L1 and SSIM (LPIPS is in ``lpips.py``).

- ``l1_distance``: mean absolute difference per image over all pixels and
  channels, in the images' units ([-1, 1], so the range is [0, 2]).
- ``ssim``: structural similarity (Wang et al., IEEE TIP 2004) with an 11x11
  Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range L = 2 for
  [-1, 1] images, computed over 'valid' window positions, averaged over
  positions and channels:
  SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
  C1 = (K1 L)^2, C2 = (K2 L)^2. Images smaller than the window use a window
  the size of the image.

Example:
    >>> ssim(x, x_cf)          # [B]            # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medcf.errors import ShapeError


def _check_pair(x: Tensor, y: Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ShapeError(f"{name}: expected two [B, C, H, W] tensors of one shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")


def l1_distance(x: Tensor, y: Tensor) -> Tensor:  # [B, C, H, W] x2 -> [B]
    """Mean absolute difference per image."""
    _check_pair(x, y, "l1_distance")
    return (x.float() - y.float()).abs().flatten(1).mean(1)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:  # -> [size, size], sums to 1
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: Tensor, y: Tensor, *, data_range: float = 2.0, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> Tensor:  # -> [B]
    """Mean SSIM per image (Gaussian window, valid positions, mean over channels)."""
    _check_pair(x, y, "ssim")
    size = min(window_size, x.shape[-2], x.shape[-1])
    c = x.shape[1]
    w = gaussian_window(size, sigma).to(torch.float64)[None, None].repeat(c, 1, 1, 1)  # [C, 1, k, k]
    x, y = x.double(), y.double()

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, w.to(t.device), groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1).float()
