"""ADA augmentation pipeline (Karras et al. 2020, "Training GANs with limited data").

Every augmentation is applied to each image with probability ``multiplier * p``;
``p`` is a buffer that the training loop adjusts (the adaptive policy lives in
the loop, not here). The pipeline is differentiable, so it runs on both real and
generated images before the discriminator.

Stages, in order:

1. geometric — xflip, rotate90, xint (pixel blitting) and scale, rotate, aniso,
   xfrac (general), composed into one inverse 3x3 matrix per image and executed
   once: reflect pad -> 2x upsample with the ``Hz_geom`` wavelet -> bilinear
   ``grid_sample`` (``grid_sample.py``: differentiable twice, for R1) -> 2x
   downsample with ``Hz_geom``;
2. color — brightness, contrast, lumaflip, hue, saturation composed into one 4x4
   matrix per image (hue and saturation only for RGB);
3. imgfilter — random gains of four frequency bands (filter bank ``Hz_fbank``);
4. corruptions — additive noise and cutout.

With ``debug_percentile=q`` every random draw is replaced by a value derived
from ``q`` (as in the official code), so the output is deterministic; this is
how the pipeline is checked against the official reference outputs.

Example:
    >>> pipe = AugmentPipe(AugmentConfig.preset("bgc"))
    >>> pipe.set_p(0.2)
    >>> y = pipe(torch.zeros(4, 1, 32, 32), generator=torch.Generator().manual_seed(0))
    >>> tuple(y.shape)
    (4, 1, 32, 32)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medcf.errors import CheckpointError, ShapeError
from medcf.generators.stylegan2.grid_sample import grid_sample_bilinear
from medcf.io import SavableModule

# Low-pass decomposition filter of the Symlet-6 wavelet (orthogonal; geometric resampling).
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)
# Low-pass decomposition filter of the Symlet-2 wavelet (frequency bands of imgfilter).
SYM2 = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)

_BLIT = {"xflip": 1.0, "rotate90": 1.0, "xint": 1.0}
_GEOM = {"scale": 1.0, "rotate": 1.0, "aniso": 1.0, "xfrac": 1.0}
_COLOR = {"brightness": 1.0, "contrast": 1.0, "lumaflip": 1.0, "hue": 1.0, "saturation": 1.0}
# The presets of the official train.py (--augpipe).
PRESETS: dict[str, dict[str, float]] = {
    "blit": _BLIT, "geom": _GEOM, "color": _COLOR,
    "filter": {"imgfilter": 1.0}, "noise": {"noise": 1.0}, "cutout": {"cutout": 1.0},
    "bg": {**_BLIT, **_GEOM},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
    "bgcf": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1.0},
    "bgcfn": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1.0, "noise": 1.0},
    "bgcfnc": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1.0, "noise": 1.0, "cutout": 1.0},
}


@dataclass(frozen=True)
class AugmentConfig:
    """Probability multipliers (0 = off, 1 = on at probability p) and strengths."""

    # pixel blitting
    xflip: float = 0.0              # x-flip
    rotate90: float = 0.0           # rotation by a multiple of 90 degrees
    xint: float = 0.0               # integer translation
    xint_max: float = 0.125         # its range, relative to the image size
    # general geometric transformations
    scale: float = 0.0              # isotropic scaling
    rotate: float = 0.0             # arbitrary rotation (split into a pre- and a post-rotation)
    aniso: float = 0.0              # anisotropic scaling
    xfrac: float = 0.0              # fractional translation
    scale_std: float = 0.2          # log2 std of isotropic scaling
    rotate_max: float = 1.0         # rotation range, 1 = full circle
    aniso_std: float = 0.2          # log2 std of anisotropic scaling
    xfrac_std: float = 0.125        # std of fractional translation, relative to the image size
    # color transformations
    brightness: float = 0.0         # additive brightness
    contrast: float = 0.0           # multiplicative contrast
    lumaflip: float = 0.0           # reflection of the luma axis
    hue: float = 0.0                # rotation around the luma axis (RGB only)
    saturation: float = 0.0         # scaling orthogonal to the luma axis (RGB only)
    brightness_std: float = 0.2
    contrast_std: float = 0.5       # log2 std
    hue_max: float = 1.0            # 1 = full circle
    saturation_std: float = 1.0     # log2 std
    # image-space filtering
    imgfilter: float = 0.0          # random amplification of frequency bands
    imgfilter_bands: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # multiplier per band
    imgfilter_std: float = 1.0      # log2 std of the band gains
    # image-space corruptions
    noise: float = 0.0              # additive Gaussian noise
    cutout: float = 0.0             # zeroed rectangle
    noise_std: float = 0.1
    cutout_size: float = 0.5        # side of the rectangle, relative to the image size

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values):
                raise ValueError(f"AugmentConfig.{f.name} must be finite and >= 0, got {value!r}")
        if len(self.imgfilter_bands) != 4:
            raise ValueError(f"AugmentConfig.imgfilter_bands needs 4 values, got {len(self.imgfilter_bands)}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AugmentConfig:
        """One of the official presets ('bgc' is the usual choice, 'bgcf' adds filtering)."""
        if name not in PRESETS:
            raise ValueError(f"unknown augmentation preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def geometric(self) -> bool:
        return any(getattr(self, k) > 0 for k in ("xflip", "rotate90", "xint", *_GEOM))

    @property
    def color(self) -> bool:
        return any(getattr(self, k) > 0 for k in _COLOR)


# ----------------------------------------------------------------------------- constant filters


def geometric_filter() -> Tensor:
    """``Hz_geom`` [12]: the Symlet-6 low-pass filter normalised to unit sum (float32)."""
    f = torch.tensor(SYM6, dtype=torch.float32)
    return f / f.sum()


def filter_bank() -> Tensor:
    """``Hz_fbank`` [4, 43]: 4 octave bands built from Symlet-2 half-band filters.

    Starting from an impulse, each step dilates the bank by 2 (zeros between
    taps), smooths it with the low-pass ``lo2 = lo * lo[::-1] / 2`` and adds the
    high-pass ``hi2`` (same, with the alternating-sign filter) to the new band.
    Band 0 is the lowest frequency band; the four bands sum to an impulse.
    """
    lo = np.asarray(SYM2)
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo2 = np.convolve(lo, lo[::-1]) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.zeros((4, 1))
    bank[0, 0] = 1.0
    for i in range(1, 4):
        taps = bank.shape[1]
        dilated = np.zeros((4, 2 * taps - 1))
        dilated[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in dilated])
        start = (bank.shape[1] - hi2.size) // 2
        bank[i, start:start + hi2.size] += hi2
    return torch.as_tensor(bank, dtype=torch.float32)


# ----------------------------------------------------------------------------- matrix helpers


def _mat(rows: list[list[Any]], like: Tensor) -> Tensor:
    """Batch of matrices from rows of scalars / [B] tensors -> [B, R, K] (like's dtype/device)."""
    n = like.shape[0]
    elems = [e.to(like.dtype) if isinstance(e, Tensor) else like.new_full([n], float(e))
             for row in rows for e in row]
    return torch.stack(elems, dim=-1).reshape(n, len(rows), len(rows[0]))


def _translate2(tx: Any, ty: Any, like: Tensor) -> Tensor:
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]], like)


def _scale2(sx: Any, sy: Any, like: Tensor) -> Tensor:
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], like)


def _rotate2(theta: Tensor, like: Tensor) -> Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]], like)


def _translate3(t: Tensor, like: Tensor) -> Tensor:
    return _mat([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], like)


def _scale3(s: Tensor, like: Tensor) -> Tensor:
    return _mat([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], like)


def _rotate3(v: Tensor, theta: Tensor, like: Tensor) -> Tensor:
    """Rotation by ``theta`` [B] around the unit axis ``v`` [3] (Rodrigues), homogeneous 4x4."""
    x, y, z = (float(a) for a in v[:3])
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _mat([[x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s, 0],
                 [y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s, 0],
                 [z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c, 0],
                 [0, 0, 0, 1]], like)


def _sep_filter(x: Tensor, f: Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0),
                gain: float = 1.0, correlate: bool = False) -> Tensor:
    """Separable upsample (zero insertion) -> zero pad / crop -> FIR -> decimate, same on x and y.

    ``f`` [K] is convolved (``correlate=False``) or correlated; ``gain`` applies per axis.
    x: [B, C, H, W] -> [B, C, (H*up + pad0 + pad1 - K + 1) // down (ceil), ...].
    """
    b, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(b, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    x = x[:, :, max(-p0, 0):x.shape[2] - max(-p1, 0), max(-p0, 0):x.shape[3] - max(-p1, 0)]
    k = (f * gain).to(x.dtype)
    if not correlate:
        k = k.flip(0)
    k = k.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1)  # [C, 1, 1, K]
    x = F.conv2d(x, k, groups=c)                     # along x
    x = F.conv2d(x, k.transpose(2, 3), groups=c)     # along y
    return x[:, :, ::down, ::down]


# ----------------------------------------------------------------------------- the pipeline


class AugmentPipe(SavableModule):
    """ADA augmentations of a batch ``[B, C, H, W]`` (C = 1 or 3) -> same shape.

    Buffers (official names): ``p`` [] overall probability, ``Hz_geom`` [12],
    ``Hz_fbank`` [4, 43]. ``p`` starts at 0; set it with :meth:`set_p`.
    """

    kind: ClassVar[str] = "stylegan2-augment"
    config_class: ClassVar[type] = AugmentConfig

    def __init__(self, config: AugmentConfig | None = None):
        super().__init__(config or AugmentConfig())
        self.register_buffer("p", torch.zeros([]))
        self.register_buffer("Hz_geom", geometric_filter())
        self.register_buffer("Hz_fbank", filter_bank())

    # -- p get/set (the adaptive policy lives in the training loop)
    def get_p(self) -> float:
        return float(self.p)

    def set_p(self, value: float) -> None:
        """Set the overall augmentation probability in place (>= 0; may exceed 1 as in ADA)."""
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"augmentation probability p must be finite and >= 0, got {value}")
        with torch.no_grad():
            self.p.fill_(value)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"p": self.get_p()}

    @classmethod
    def from_official(cls, init_kwargs: dict[str, Any], state_dict: dict[str, Tensor]) -> AugmentPipe:
        """Build from an official ``AugmentPipe``'s constructor kwargs and state dict."""
        names = {f.name for f in dataclasses.fields(AugmentConfig)}
        unknown = sorted(set(init_kwargs) - names)
        if unknown:
            raise CheckpointError(f"official AugmentPipe: unsupported constructor argument(s) {unknown}")
        kwargs = {k: tuple(float(b) for b in v) if k == "imgfilter_bands" else float(v)
                  for k, v in init_kwargs.items()}
        try:
            pipe = cls(AugmentConfig(**kwargs))
        except ValueError as e:
            raise CheckpointError(f"official AugmentPipe: {e}") from e
        expected = {k: tuple(v.shape) for k, v in pipe.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state_dict.items()}
        if expected != got:
            raise CheckpointError(f"official AugmentPipe: state {got} does not match {expected}")
        pipe.load_state_dict({k: v.float() for k, v in state_dict.items()})
        return pipe

    def forward(self, images: Tensor, *, generator: torch.Generator | None = None,
                debug_percentile: float | None = None) -> Tensor:
        """images [B, C, H, W] -> augmented [B, C, H, W] (float32 math, input dtype out).

        ``generator`` supplies all randomness (torch's global RNG if None).
        ``debug_percentile`` in [0, 1] replaces every random draw by a value
        derived from it (deterministic output, for testing).
        """
        if images.ndim != 4:
            raise ShapeError(f"AugmentPipe: expected images [B, C, H, W], got shape {tuple(images.shape)}")
        cfg = self.config
        in_dtype = images.dtype
        x = images.float()
        b, c, h, w = x.shape
        dev = x.device
        if cfg.color and c not in (1, 3):
            raise ShapeError(f"AugmentPipe: color augmentations need 1 or 3 channels, got {c}")
        half = self.Hz_fbank.shape[1] // 2
        if cfg.imgfilter > 0 and min(h, w) <= half:
            raise ShapeError(f"AugmentPipe: imgfilter needs images larger than {half}x{half} px, got {h}x{w}")
        q = None if debug_percentile is None else torch.tensor(float(debug_percentile), device=dev)
        p = self.p.to(dev)

        def uniform(shape: list[int]) -> Tensor:
            return torch.rand(shape, generator=generator, device=dev)

        def normal(shape: list[int]) -> Tensor:
            return torch.randn(shape, generator=generator, device=dev)

        ref = torch.zeros(b, device=dev)  # dtype/device/batch template for matrices

        def pick(value: Tensor, prob: Tensor | float, neutral: float, debug_value: Tensor | None) -> Tensor:
            """value where the gate opens, else neutral; debug_value replaces all of it."""
            if q is not None:
                return torch.full_like(value, 0.0) + debug_value
            opens = uniform([value.shape[0]] + [1] * (value.ndim - 1)) < prob
            return torch.where(opens, value, torch.full_like(value, neutral))

        def erfinv_q() -> Tensor:  # the debug stand-in for a standard normal draw
            return torch.erfinv(q * 2 - 1)

        # 1. geometric: G_inv maps output pixel coordinates to input ones (origin at the centre).
        if cfg.geometric:
            g_inv = torch.eye(3, device=dev).expand(b, 3, 3)
            if cfg.xflip > 0:
                i = torch.floor(uniform([b]) * 2)
                i = pick(i, cfg.xflip * p, 0.0, None if q is None else torch.floor(q * 2))
                g_inv = g_inv @ _scale2(1 - 2 * i, 1, ref)
            if cfg.rotate90 > 0:
                i = torch.floor(uniform([b]) * 4)
                i = pick(i, cfg.rotate90 * p, 0.0, None if q is None else torch.floor(q * 4))
                g_inv = g_inv @ _rotate2(math.pi / 2 * i, ref)
            if cfg.xint > 0:
                t = (uniform([b, 2]) * 2 - 1) * cfg.xint_max
                t = pick(t, cfg.xint * p, 0.0, None if q is None else (q * 2 - 1) * cfg.xint_max)
                g_inv = g_inv @ _translate2(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h), ref)
            if cfg.scale > 0:
                s = torch.exp2(normal([b]) * cfg.scale_std)
                s = pick(s, cfg.scale * p, 1.0, None if q is None else torch.exp2(erfinv_q() * cfg.scale_std))
                g_inv = g_inv @ _scale2(1 / s, 1 / s, ref)
            # rotation happens before and after aniso, each with p_rot so that P(either) = rotate * p
            p_rot = 1 - torch.sqrt((1 - cfg.rotate * p).clamp(0, 1))
            if cfg.rotate > 0:
                theta = (uniform([b]) * 2 - 1) * math.pi * cfg.rotate_max
                theta = pick(theta, p_rot, 0.0,
                             None if q is None else (q * 2 - 1) * math.pi * cfg.rotate_max)
                g_inv = g_inv @ _rotate2(theta, ref)
            if cfg.aniso > 0:
                s = torch.exp2(normal([b]) * cfg.aniso_std)
                s = pick(s, cfg.aniso * p, 1.0, None if q is None else torch.exp2(erfinv_q() * cfg.aniso_std))
                g_inv = g_inv @ _scale2(1 / s, s, ref)
            if cfg.rotate > 0:
                theta = (uniform([b]) * 2 - 1) * math.pi * cfg.rotate_max
                theta = pick(theta, p_rot, 0.0, None if q is None else torch.zeros_like(q))
                g_inv = g_inv @ _rotate2(theta, ref)
            if cfg.xfrac > 0:
                t = normal([b, 2]) * cfg.xfrac_std
                t = pick(t, cfg.xfrac * p, 0.0, None if q is None else erfinv_q() * cfg.xfrac_std)
                g_inv = g_inv @ _translate2(-t[:, 0] * w, -t[:, 1] * h, ref)
            x = self._resample(x, g_inv)

        # 2. color: C maps homogeneous input colours to output colours.
        if cfg.color and (c == 3 or cfg.brightness > 0 or cfg.contrast > 0 or cfg.lumaflip > 0):
            eye4 = torch.eye(4, device=dev)
            mat = eye4.expand(b, 4, 4)
            v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev) / math.sqrt(3)  # luma axis
            vv = torch.outer(v, v)
            if cfg.brightness > 0:
                bright = normal([b]) * cfg.brightness_std
                bright = pick(bright, cfg.brightness * p, 0.0,
                              None if q is None else erfinv_q() * cfg.brightness_std)
                mat = _translate3(bright, ref) @ mat
            if cfg.contrast > 0:
                con = torch.exp2(normal([b]) * cfg.contrast_std)
                con = pick(con, cfg.contrast * p, 1.0,
                           None if q is None else torch.exp2(erfinv_q() * cfg.contrast_std))
                mat = _scale3(con, ref) @ mat
            if cfg.lumaflip > 0:
                i = torch.floor(uniform([b, 1, 1]) * 2)
                i = pick(i, cfg.lumaflip * p, 0.0, None if q is None else torch.floor(q * 2))
                mat = (eye4 - 2 * vv * i) @ mat  # Householder reflection of the luma axis
            if cfg.hue > 0 and c > 1:
                theta = (uniform([b]) * 2 - 1) * math.pi * cfg.hue_max
                theta = pick(theta, cfg.hue * p, 0.0, None if q is None else (q * 2 - 1) * math.pi * cfg.hue_max)
                mat = _rotate3(v, theta, ref) @ mat
            if cfg.saturation > 0 and c > 1:
                s = torch.exp2(normal([b, 1, 1]) * cfg.saturation_std)
                s = pick(s, cfg.saturation * p, 1.0,
                         None if q is None else torch.exp2(erfinv_q() * cfg.saturation_std))
                mat = (vv + (eye4 - vv) * s) @ mat
            flat = x.reshape(b, c, h * w)
            if c == 3:
                flat = mat[:, :3, :3] @ flat + mat[:, :3, 3:]
            else:  # grayscale: average the three output rows, sum the three input columns
                row = mat[:, :3, :].mean(dim=1, keepdim=True)  # [B, 1, 4]
                flat = flat * row[:, :, :3].sum(dim=2, keepdim=True) + row[:, :, 3:]
            x = flat.reshape(b, c, h, w)

        # 3. image-space filtering: random gain per frequency band, total power kept at the 1/f prior.
        if cfg.imgfilter > 0:
            nb = self.Hz_fbank.shape[0]
            power = torch.tensor([10.0, 1.0, 1.0, 1.0], device=dev) / 13
            gains = torch.ones(b, nb, device=dev)
            for i, band in enumerate(cfg.imgfilter_bands):
                ti = torch.exp2(normal([b]) * cfg.imgfilter_std)
                dbg = None
                if q is not None:
                    dbg = torch.exp2(erfinv_q() * cfg.imgfilter_std) if band > 0 else torch.ones_like(q)
                ti = pick(ti, cfg.imgfilter * p * band, 1.0, dbg)
                t = torch.ones(b, nb, device=dev)
                t[:, i] = ti
                t = t / (power * t.square()).sum(dim=-1, keepdim=True).sqrt()
                gains = gains * t
            taps = (gains @ self.Hz_fbank.to(dev)).repeat_interleave(c, dim=0)  # [B*C, 43]
            y = F.pad(x.reshape(1, b * c, h, w), [half] * 4, mode="reflect")
            y = F.conv2d(y, taps[:, None, None, :], groups=b * c)
            y = F.conv2d(y, taps[:, None, :, None], groups=b * c)
            x = y.reshape(b, c, h, w)

        # 4. corruptions
        if cfg.noise > 0:
            sigma = normal([b, 1, 1, 1]).abs() * cfg.noise_std
            sigma = pick(sigma, cfg.noise * p, 0.0, None if q is None else torch.erfinv(q) * cfg.noise_std)
            x = x + normal([b, c, h, w]) * sigma
        if cfg.cutout > 0:
            size = torch.full([b, 2, 1, 1, 1], cfg.cutout_size, device=dev)
            size = pick(size, cfg.cutout * p, 0.0, None if q is None else cfg.cutout_size + 0 * q)
            centre = uniform([b, 2, 1, 1, 1]) if q is None else torch.full([b, 2, 1, 1, 1], 0.0, device=dev) + q
            cx = torch.arange(w, device=dev).reshape(1, 1, 1, -1)
            cy = torch.arange(h, device=dev).reshape(1, 1, -1, 1)
            keep_x = ((cx + 0.5) / w - centre[:, 0]).abs() >= size[:, 0] / 2
            keep_y = ((cy + 0.5) / h - centre[:, 1]).abs() >= size[:, 1] / 2
            x = x * torch.logical_or(keep_x, keep_y).float()
        return x.to(in_dtype)

    def _resample(self, x: Tensor, g_inv: Tensor) -> Tensor:
        """Apply the inverse transforms g_inv [B, 3, 3] to x [B, C, H, W] with 2x oversampling."""
        b, c, h, w = x.shape
        dev = x.device
        ref = torch.zeros(b, device=dev)
        f = self.Hz_geom.to(dev)
        hz_pad = f.shape[0] // 4
        # 1. reflect-pad enough that the transformed image corners stay inside the data
        cx, cy = (w - 1) / 2, (h - 1) / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=dev)
        pts = g_inv @ corners.t()                                   # [B, 3, 4]
        xy = pts[:, :2, :].permute(1, 0, 2).flatten(1)              # [2, B*4]
        margin = torch.cat([-xy, xy]).max(dim=1).values             # [x0, y0, x1, y1]
        margin = margin + torch.tensor([hz_pad * 2 - cx, hz_pad * 2 - cy] * 2, device=dev)
        margin = margin.clamp_min(0).minimum(torch.tensor([w - 1, h - 1] * 2, device=dev, dtype=margin.dtype))
        mx0, my0, mx1, my1 = (int(m) for m in margin.ceil().tolist())  # one host read, not four
        x = F.pad(x, [mx0, mx1, my0, my1], mode="reflect")
        g_inv = _translate2((mx0 - mx1) / 2, (my0 - my1) / 2, ref) @ g_inv
        # 2. upsample 2x; express g_inv in upsampled pixel units (pixel centres at 2i + 0.5)
        x = _sep_filter(x, f, up=2, pad=((f.shape[0] + 1) // 2, (f.shape[0] - 2) // 2), gain=2.0)
        g_inv = _scale2(2, 2, ref) @ g_inv @ _scale2(0.5, 0.5, ref)
        g_inv = _translate2(-0.5, -0.5, ref) @ g_inv @ _translate2(0.5, 0.5, ref)
        # 3. sample an output of (size + 2*hz_pad) * 2 pixels; normalised grid coords in [-1, 1]
        out_h, out_w = (h + hz_pad * 2) * 2, (w + hz_pad * 2) * 2
        g_inv = (_scale2(2 / x.shape[3], 2 / x.shape[2], ref) @ g_inv
                 @ _scale2(out_w / 2, out_h / 2, ref))
        grid = F.affine_grid(g_inv[:, :2, :], [b, c, out_h, out_w], align_corners=False)
        x = grid_sample_bilinear(x, grid)  # twice differentiable in x, also on CUDA (R1 through ADA)
        # 4. downsample 2x (correlation with the same filter) and crop back to [H, W]
        crop = -hz_pad * 2
        return _sep_filter(x, f, down=2, pad=(crop + (f.shape[0] - 1) // 2, crop + (f.shape[0] - 2) // 2),
                           correlate=True)
