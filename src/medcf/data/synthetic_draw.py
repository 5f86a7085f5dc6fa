"""Vectorised numpy drawing of one synthetic chest radiograph (no torch here).

Geometry lives in a *canonical* patient frame: x to the image right, y down,
both spanning [-1, 1] across the image at zero pose. The pose (rotation, shift)
is applied by mapping every pixel centre into that frame, so anatomy and the
objects on the patient (pacemaker, electrodes) move together while detector
objects (laterality marker, spurious token) stay in the image frame.

Shapes are drawn from signed distances `sd` (canonical units, negative inside)
turned into anti-aliased coverage ``clip(0.5 - sd / pixel, 0, 1)``; a ground
truth mask is ``coverage >= 0.5`` (i.e. ``sd <= 0``).

Example:
    >>> import numpy as np
    >>> from medcf.data.synthetic_draw import grid, ellipse_sd
    >>> g = grid(32)
    >>> bool((ellipse_sd(g.u, g.v, 0.0, 0.0, 0.5, 0.5, 0.0) <= 0)[16, 16])
    True
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

TEXTURE_GRID = 6  # low-frequency texture: a 6x6 random grid upsampled bilinearly


@dataclass(frozen=True)
class Grid:
    """Per-resolution constants (cached; arrays are read-only)."""

    size: int
    pixel: float             # pixel pitch in canonical units (2 / size)
    u: np.ndarray            # [H, W] x of pixel centres in [-1, 1]
    v: np.ndarray            # [H, W] y of pixel centres in [-1, 1]
    upsample: np.ndarray     # [H, TEXTURE_GRID] bilinear interpolation matrix
    dist2: np.ndarray        # [H, H] squared pixel index differences (for Gaussian blur)


@functools.lru_cache(maxsize=16)
def grid(size: int) -> Grid:
    """Coordinate grids and helper matrices for a square image of ``size`` pixels."""
    pixel = 2.0 / size
    centres = ((np.arange(size, dtype=np.float32) + 0.5) * pixel - 1.0).astype(np.float32)
    u, v = np.meshgrid(centres, centres)  # u varies along columns, v along rows
    pos = (np.arange(size) + 0.5) / size * (TEXTURE_GRID - 1)  # position in the coarse grid
    lo = np.clip(np.floor(pos).astype(int), 0, TEXTURE_GRID - 2)
    frac = pos - lo
    up = np.zeros((size, TEXTURE_GRID), np.float32)
    up[np.arange(size), lo] = 1.0 - frac
    up[np.arange(size), lo + 1] = frac
    idx = np.arange(size, dtype=np.float32)
    dist2 = (idx[:, None] - idx[None, :]) ** 2
    for a in (u, v, up, dist2):
        a.setflags(write=False)
    return Grid(size, pixel, u, v, up, dist2)


# ----------------------------------------------------------------------------- primitives


def coverage(sd: np.ndarray, pixel: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the region ``sd <= 0``."""
    return np.clip(0.5 - sd * (1.0 / pixel), 0.0, 1.0)


def ellipse_sd(x, y, cx, cy, a, b, angle):
    """Signed distance (first-order accurate near the edge) to a rotated ellipse.

    ``a`` is the semi-axis along the direction ``angle`` (radians, towards +y).
    """
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    xr = (c * dx + s * dy) * (1.0 / a)
    yr = (c * dy - s * dx) * (1.0 / b)
    f = xr * xr + yr * yr - 1.0
    gx, gy = xr * (1.0 / a), yr * (1.0 / b)
    return f / (2.0 * np.sqrt(gx * gx + gy * gy) + 1e-6)


def box_sd(x, y, cx, cy, hx, hy, r=0.0):
    """Signed distance to an axis-aligned box with half sizes (hx, hy) and corner radius r."""
    qx = np.abs(x - cx) - (hx - r)
    qy = np.abs(y - cy) - (hy - r)
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - r


def polyline_sd(x, y, pts: np.ndarray, half_width: float) -> np.ndarray:
    """Signed distance to a thick polyline through ``pts`` [K, 2] (vectorised over segments)."""
    a, b = pts[:-1], pts[1:]                              # [K-1, 2]
    d = b - a
    dd = np.maximum((d * d).sum(1), 1e-12)
    px = x[None] - a[:, 0, None, None]                    # [K-1, H, W]
    py = y[None] - a[:, 1, None, None]
    t = np.clip((px * d[:, 0, None, None] + py * d[:, 1, None, None]) / dd[:, None, None], 0.0, 1.0)
    ex = px - t * d[:, 0, None, None]
    ey = py - t * d[:, 1, None, None]
    return np.sqrt((ex * ex + ey * ey).min(0)) - half_width


def bezier(p0, p1, p2, k: int) -> np.ndarray:
    """``k`` points [k, 2] on the quadratic Bezier curve p0 -> p2 with control p1."""
    t = np.linspace(0.0, 1.0, k, dtype=np.float32)[:, None]
    p0, p1, p2 = (np.asarray(p, np.float32) for p in (p0, p1, p2))
    return ((1 - t) ** 2) * p0 + 2 * (1 - t) * t * p1 + (t**2) * p2


def gaussian_blur(img: np.ndarray, sigma_px: float, g: Grid) -> np.ndarray:
    """Separable Gaussian blur with reflect-free row normalisation (edges keep their mean)."""
    if sigma_px < 0.05:
        return img
    k = np.exp(g.dist2 * (-0.5 / (sigma_px * sigma_px)))
    k /= k.sum(1, keepdims=True)
    return k @ img @ k.T


def texture(rng: np.random.Generator, g: Grid) -> np.ndarray:
    """Smooth random field [H, W] with roughly unit std (a coarse grid upsampled)."""
    coarse = rng.standard_normal((TEXTURE_GRID, TEXTURE_GRID), dtype=np.float32)
    return g.upsample @ coarse @ g.upsample.T
