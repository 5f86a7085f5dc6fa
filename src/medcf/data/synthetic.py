"""Synthetic chest-radiograph benchmark with known ground truth.

Every factor of an image is drawn from a numpy Generator seeded by
``(seed, index)``, so sample ``i`` is the same whatever order samples are made
in. Three tasks:

- ``cardiomegaly``: label = CTR > 0.5, where CTR (cardiothoracic ratio) = heart
  width / thorax width (widest horizontal extents, in the patient frame). CTR is
  drawn uniformly from ``[ctr_range[0], 0.5 - ctr_gap]`` for label 0 and from
  ``[0.5 + ctr_gap, ctr_range[1]]`` for label 1; the label is then recomputed as
  exactly ``ctr > 0.5`` on the float32 value.
- ``opacity``: label = a lesion is present in a lung field (``lesion_mask``);
  CTR is drawn from the whole ``ctr_range`` independently of the label.
- ``effusion``: label = a costophrenic recess is blunted by pleural fluid
  (``blunted``; ``effusion_mask`` marks the fluid). The fluid fills the lowest
  lateral corner of one lung field (patient right, left, or both) up to a
  meniscus that rises towards the lateral chest wall; its height above the
  costophrenic angle is drawn from ``effusion_height_range``. CTR is drawn from
  the whole ``ctr_range``. In the other tasks every recess is sharp.

Foreign objects (pacemaker with lead, ECG electrodes, laterality marker) are
drawn independently of the label at their own rates. The spurious token (a
hollow square in the lower right corner) appears on a fraction
``spurious_rate`` of positive images and, by default, never on negative ones,
so ``P(spurious | label=1) = spurious_rate`` and ``P(spurious | label=0) =
spurious_negative_rate`` (0 by default; equal rates make the token independent
of the label, e.g. to train a detector of it or to test shortcut reliance).

Units of ``nuisance`` (order of NUISANCE_NAMES): rotation in degrees; shift_x,
shift_y, thorax_width and blur (Gaussian sigma) as fractions of the image
width; contrast a gain about mid-grey; brightness an offset and noise a
Gaussian std, both in [-1, 1] image units.

Example:
    >>> from medcf.data.synthetic import SynthConfig, SyntheticDataset
    >>> ds = SyntheticDataset(SynthConfig(task="cardiomegaly", resolution=32), n=4, seed=0)
    >>> s = ds[0]
    >>> tuple(s["image"].shape), int(s["label"]) == int(float(s["ctr"]) > 0.5)
    ((1, 32, 32), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.utils.data import Dataset

from medcf.data import synthetic_draw as D
from medcf.errors import DataError

FO_NAMES = ("pacemaker", "electrodes", "marker")
NUISANCE_NAMES = ("rotation", "shift_x", "shift_y", "thorax_width", "contrast", "brightness",
                  "noise", "blur")
CLASS_NAMES = {"cardiomegaly": ("normal", "cardiomegaly"), "opacity": ("clear", "opacity"),
               "effusion": ("sharp", "blunted")}
MIN_RESOLUTION, MAX_RESOLUTION = 32, 256


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic benchmark (ranges are (low, high), drawn uniformly)."""

    task: str = "cardiomegaly"                        # "cardiomegaly" | "opacity" | "effusion"
    resolution: int = 64                              # square images, 32..256
    positive_rate: float = 0.5                        # P(label = 1)
    ctr_range: tuple[float, float] = (0.36, 0.66)     # cardiothoracic ratio range
    ctr_gap: float = 0.02                             # cardiomegaly: |ctr - 0.5| >= ctr_gap
    lesion_radius_range: tuple[float, float] = (0.04, 0.075)  # opacity radius, fraction of width
    lesion_intensity_range: tuple[float, float] = (0.15, 0.25)  # added density of the opacity
    effusion_height_range: tuple[float, float] = (0.10, 0.22)   # meniscus above the angle, fraction of width
    pacemaker_rate: float = 0.15                      # P(pacemaker with lead)
    electrodes_rate: float = 0.3                      # P(ECG electrodes)
    marker_rate: float = 0.5                          # P(laterality marker "L")
    spurious_rate: float = 0.0                        # P(spurious token | label=1); 0 = off
    spurious_negative_rate: float = 0.0               # P(spurious token | label=0)
    rotation_range: tuple[float, float] = (-5.0, 5.0)          # degrees
    shift_range: tuple[float, float] = (-0.04, 0.04)           # fraction of width, both axes
    thorax_width_range: tuple[float, float] = (0.68, 0.80)     # fraction of width
    contrast_range: tuple[float, float] = (0.8, 1.2)
    brightness_range: tuple[float, float] = (-0.1, 0.1)
    noise_range: tuple[float, float] = (0.0, 0.04)
    blur_range: tuple[float, float] = (0.0, 0.008)             # Gaussian sigma, fraction of width

    def __post_init__(self) -> None:
        if self.task not in CLASS_NAMES:
            raise DataError(f"SynthConfig.task: unknown task {self.task!r} (choose from {sorted(CLASS_NAMES)})")
        if not (isinstance(self.resolution, int) and MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION):
            raise DataError(f"SynthConfig.resolution: must be an integer in {MIN_RESOLUTION}..{MAX_RESOLUTION}, got {self.resolution!r}")
        for name in ("positive_rate", "pacemaker_rate", "electrodes_rate", "marker_rate", "spurious_rate",
                     "spurious_negative_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise DataError(f"SynthConfig.{name}: must be in [0, 1], got {value!r}")
        for f in fields(self):
            if f.name.endswith("_range"):
                lo, hi = getattr(self, f.name)
                if not lo <= hi:
                    raise DataError(f"SynthConfig.{f.name}: low {lo} > high {hi}")
        lo, hi = self.ctr_range
        if self.task == "cardiomegaly" and not (0.2 <= lo < 0.5 - self.ctr_gap and 0.5 + self.ctr_gap < hi <= 0.72):
            raise DataError(f"SynthConfig.ctr_range: need 0.2 <= low < 0.5 - ctr_gap and 0.5 + ctr_gap < high <= 0.72, got {self.ctr_range} with gap {self.ctr_gap}")
        if not 0.2 <= lo <= hi <= 0.72:
            raise DataError(f"SynthConfig.ctr_range: must lie within [0.2, 0.72], got {self.ctr_range}")
        if not 0.0 <= self.ctr_gap < 0.2:
            raise DataError(f"SynthConfig.ctr_gap: must be in [0, 0.2), got {self.ctr_gap}")
        if not 0.03 <= self.effusion_height_range[0] <= self.effusion_height_range[1] <= 0.4:
            raise DataError(f"SynthConfig.effusion_height_range: must lie within [0.03, 0.4], got {self.effusion_height_range}")
        if not (0.5 <= self.thorax_width_range[0] and self.thorax_width_range[1] <= 0.85):
            raise DataError(f"SynthConfig.thorax_width_range: must lie within [0.5, 0.85], got {self.thorax_width_range}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES[self.task]


@dataclass
class SynthSample:
    """One rendered sample as numpy arrays (H = W = resolution)."""

    image: np.ndarray        # [H, W] float32 in [-1, 1]
    label: int
    ctr: float               # float32-representable
    heart_mask: np.ndarray   # [H, W] bool
    lesion: bool
    lesion_mask: np.ndarray  # [H, W] bool (all False without a lesion)
    fo_flags: np.ndarray     # [3] bool, order FO_NAMES
    fo_masks: np.ndarray     # [3, H, W] bool
    spurious: bool
    nuisance: np.ndarray     # [len(NUISANCE_NAMES)] float32
    blunted: bool = False    # a costophrenic recess is blunted by pleural fluid
    effusion_mask: np.ndarray | None = None  # [H, W] bool: the fluid (all False when sharp)


def _lerp(rng_range: tuple[float, float], t: float) -> float:
    return rng_range[0] + (rng_range[1] - rng_range[0]) * t


def render_sample(config: SynthConfig, seed: int, index: int) -> SynthSample:
    """Draw sample ``index`` of the benchmark ``(config, seed)``; numpy only, deterministic."""
    if seed < 0 or index < 0:
        raise DataError(f"render_sample: seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng((seed, index))
    u = rng.random(48)  # fixed slots: the same slot always drives the same factor
    g = D.grid(config.resolution)
    px = g.pixel

    # 1. label, CTR, flags
    label = int(u[0] < config.positive_rate)
    lo, hi = config.ctr_range
    if config.task == "cardiomegaly":
        ctr = _lerp((0.5 + config.ctr_gap, hi), u[1]) if label else _lerp((lo, 0.5 - config.ctr_gap), u[1])
    else:
        ctr = _lerp((lo, hi), u[1])
    ctr = float(np.float32(ctr))
    if config.task == "cardiomegaly":
        label = int(ctr > 0.5)
    fo_flags = np.array([u[2] < config.pacemaker_rate, u[3] < config.electrodes_rate,
                         u[4] < config.marker_rate])
    spurious = bool(u[5] < (config.spurious_rate if label == 1 else config.spurious_negative_rate))
    lesion = config.task == "opacity" and label == 1
    blunted = config.task == "effusion" and label == 1

    # 2. nuisance
    rot = _lerp(config.rotation_range, u[6])
    shx, shy = _lerp(config.shift_range, u[7]), _lerp(config.shift_range, u[8])
    tw = _lerp(config.thorax_width_range, u[9])
    contrast = _lerp(config.contrast_range, u[10])
    brightness = _lerp(config.brightness_range, u[11])
    noise = _lerp(config.noise_range, u[12])
    blur = _lerp(config.blur_range, u[13])
    nuisance = np.array([rot, shx, shy, tw, contrast, brightness, noise, blur], np.float32)

    # 3. canonical patient frame: undo shift then rotation. X, Y: [H, W]
    th = math.radians(rot)
    c, s = math.cos(th), math.sin(th)
    du, dv = g.u - 2.0 * shx, g.v - 2.0 * shy
    X = c * du + s * dv
    Y = c * dv - s * du
    AX = np.abs(X)
    T = tw  # thorax half width in canonical units (image width = 2)

    # 4. anatomy geometry (lungs drawn with |X|: one ellipse serves both sides)
    lcx, lax = 0.52 * T, 0.48 * T
    lcy = 0.04 + 0.08 * (u[14] - 0.5)
    lay = 0.62 + 0.06 * (u[15] - 0.5)
    ydb = lcy + 0.55 * lay                        # costophrenic level
    dome_h = 0.14 + 0.06 * u[16]
    right_up = 0.04 + 0.04 * u[17]                # patient-right (image-left) dome sits higher
    dome = ydb - dome_h * (1.0 - ((AX - lcx) * (1.0 / lax)) ** 2) - right_up * (X < 0)
    lung_sd = np.maximum(D.ellipse_sd(AX, Y, lcx, lcy, lax, lay, 0.0), Y - dome)
    lung = D.coverage(lung_sd, px)

    # heart: rotated ellipse whose horizontal extent is exactly ctr * thorax width
    half_w = ctr * T
    aspect = 0.62 + 0.12 * u[18]
    tilt = 0.15 + 0.2 * u[19]
    ha = half_w / math.sqrt(math.cos(tilt) ** 2 + (aspect * math.sin(tilt)) ** 2)
    hb = aspect * ha
    hx = 2.0 * half_w * (0.5 - (0.30 + 0.08 * u[20]))     # right border at 30-38% of heart width
    hy = ydb - dome_h - right_up - 0.2 * hb + 0.04 * (u[21] - 0.5)
    heart_sd = D.ellipse_sd(X, Y, hx, hy, ha, hb, tilt)
    heart = D.coverage(heart_sd, px)

    # body outline: torso with rounded shoulders + neck
    margin = 0.10 + 0.06 * u[22]
    body_sd = np.minimum(D.box_sd(X, Y, 0.0, 0.45, T + margin, 1.2, 0.45),
                         D.box_sd(X, Y, 0.0, -1.0, 0.2, 0.45, 0.08))
    body = D.coverage(body_sd, px)

    # 5. density (0 = air; higher = more attenuation = brighter)
    tex = D.texture(rng, g)
    d = 0.30 * body + 0.22 * np.clip(body_sd * (-1.0 / 0.35), 0.0, 1.0)
    hilum = np.exp(((AX - 0.28 * T) ** 2 + (Y - lcy + 0.05) ** 2) * (-1.0 / 0.03))
    d += lung * (0.05 * tex + 0.10 * hilum - 0.30 * (1.0 - 0.95 * heart))
    d += 0.04 * heart
    # spine with vertebral bodies
    spine = D.coverage(AX - 0.075, px)
    d += spine * (0.05 + 0.03 * np.cos((Y - 0.13 * u[23]) * (2 * math.pi / 0.13)))
    # ribs: periodic arcs inside the rib cage, off the spine
    sp = 0.15 + 0.03 * u[24]
    xn = AX * (1.0 / T)
    t = (Y - T * (-0.30 * xn + 0.60 * xn * xn)) * (1.0 / sp) + u[25]
    rib_sd = (np.abs(t - np.round(t)) - 0.2) * sp
    cage_sd = np.maximum(D.ellipse_sd(AX, Y, lcx, lcy, lax + 0.05, lay + 0.05, 0.0), 0.09 - AX)
    d += 0.07 * D.coverage(np.maximum(rib_sd, np.maximum(cage_sd, Y - dome - 0.03)), px)
    # clavicles
    cy0 = lcy - lay + 0.10 + 0.06 * (u[26] - 0.5)
    xc = AX - 0.06
    clav_sd = np.maximum(np.abs(Y - (cy0 - 0.15 * xc + 0.35 * xc * xc)) - 0.035,
                         np.abs(AX - 0.36 * T) - 0.33 * T)
    d += 0.08 * D.coverage(clav_sd, px)

    # 6. opacity lesion inside a lung field (upper/middle zone, centre well inside the lung)
    lesion_mask = np.zeros(g.u.shape, bool)
    if lesion:
        side = -1.0 if u[27] < 0.5 else 1.0
        ly = lcy - lay * (0.15 + 0.5 * u[28])
        half_span = lax * math.sqrt(1.0 - ((ly - lcy) / lay) ** 2)
        lx = side * (lcx + 0.9 * (u[29] - 0.5) * half_span)
        r = 2.0 * _lerp(config.lesion_radius_range, u[30])
        les_sd = D.ellipse_sd(X, Y, lx, ly, r, r * (0.7 + 0.3 * u[31]), math.pi * u[32])
        amp = _lerp(config.lesion_intensity_range, u[33])
        d += amp * D.coverage(les_sd, px) * lung
        lesion_mask = (les_sd <= 0) & (lung_sd <= 0)

    # 6b. pleural effusion: fluid fills the lateral costophrenic recess of one or both lungs
    effusion_mask = np.zeros(g.u.shape, bool)
    if blunted:
        sides = (-1.0,) if u[46] < 0.4 else (1.0,) if u[46] < 0.8 else (-1.0, 1.0)
        h = 2.0 * _lerp(config.effusion_height_range, u[47])
        for side in sides:
            a_cp, y_cp = _costophrenic_angle(lcx, lcy, lax, lay, ydb, dome_h, right_up * (side < 0))
            # meniscus: concave, from the angle's level at the dome's apex (|x| = lcx) up to
            # y_cp - h at the angle and beyond, so only the lateral recess fills
            r = np.clip((AX - lcx) * (1.0 / (a_cp - lcx)), 0.0, 1.0)
            fluid_sd = np.maximum(np.maximum(lung_sd, (y_cp - h * r * (0.4 + 0.6 * r)) - Y), lcx - AX)
            fluid_sd = np.where(side * X > 0, fluid_sd, 1.0)
            # the fluid replaces the air of the lung: back to soft-tissue density
            d += 0.30 * D.coverage(fluid_sd, px)
            effusion_mask |= fluid_sd <= 0

    # 7. foreign objects on the patient (canonical frame) and on the detector (image frame)
    fo_masks = np.zeros((3,) + g.u.shape, bool)
    e_jitter = rng.random((5, 2))
    if fo_flags[0]:  # pacemaker box + lead to the right-ventricle apex
        ps = 1.0 if u[34] < 0.8 else -1.0
        pcx, pcy = ps * T * (0.45 + 0.2 * u[35]), lcy - lay * (0.72 + 0.12 * u[36])
        bx, by = max(0.07 + 0.03 * u[37], 1.5 * px), max(0.05 + 0.02 * u[38], 1.2 * px)
        box = D.box_sd(X, Y, pcx, pcy, bx, by, 0.35 * min(bx, by))
        pts = D.bezier((pcx - ps * bx, pcy), (ps * 0.04, lcy - 0.35 * lay + 0.1 * u[39]),
                       (hx + 0.3 * half_w, hy + 0.25 * hb), 10)
        lead_hw = max(0.012, 0.6 * px)
        # only pixels near the lead's bounding box (mapped back to the image frame) need distances
        iu = c * pts[:, 0] - s * pts[:, 1] + 2.0 * shx
        iv = s * pts[:, 0] + c * pts[:, 1] + 2.0 * shy
        pad = lead_hw / px + 2
        n_px = config.resolution
        c0, c1 = (max(0, int((iu.min() + 1) / px - pad)), min(n_px, int((iu.max() + 1) / px + pad) + 1))
        r0, r1 = (max(0, int((iv.min() + 1) / px - pad)), min(n_px, int((iv.max() + 1) / px + pad) + 1))
        lead = np.full(g.u.shape, 1.0, np.float32)
        if r0 < r1 and c0 < c1:
            lead[r0:r1, c0:c1] = D.polyline_sd(X[r0:r1, c0:c1], Y[r0:r1, c0:c1], pts, lead_hw)
        d += 0.6 * D.coverage(box, px) + 0.4 * D.coverage(lead, px)
        fo_masks[0] = (box <= 0) | (lead <= 0)
    if fo_flags[1]:  # 3-5 ECG electrodes: bright ring with a brighter snap
        k = 3 + int(u[40] * 3)
        anchors = np.array([[-0.75, -0.72], [0.75, -0.72], [-0.7, 0.62], [0.7, 0.62], [0.1, 0.7]])
        centres = anchors[:k] * [T, 1.0] + (e_jitter[:k] - 0.5) * 0.16
        re = max(0.045, 1.3 * px)
        dist = np.sqrt(((X[None] - centres[:, 0, None, None]) ** 2
                        + (Y[None] - centres[:, 1, None, None]) ** 2).min(0))
        d += 0.3 * D.coverage(dist - re, px) + 0.3 * D.coverage(dist - 0.45 * re, px)
        fo_masks[1] = dist <= re
    if fo_flags[2]:  # laterality marker "L" in a top corner of the detector
        ms = -1.0 if u[41] < 0.5 else 1.0
        mh = max(0.16, 5 * px)
        sw = max(mh / 4, 1.2 * px)
        mw = 0.6 * mh
        mcx, mcy = ms * (0.76 + 0.06 * u[42]), -0.8 + 0.06 * u[43]
        glyph = np.minimum(D.box_sd(g.u, g.v, mcx - mw / 2 + sw / 2, mcy, sw / 2, mh / 2),
                           D.box_sd(g.u, g.v, mcx, mcy + mh / 2 - sw / 2, mw / 2, sw / 2))
        cov = D.coverage(glyph, px)
        d += cov * (1.05 - d)
        fo_masks[2] = glyph <= 0
    if spurious:  # hollow square token in the lower right corner of the detector
        so = max(0.07, 2.5 * px)
        scx, scy = 0.78 + 0.06 * u[44], 0.78 + 0.06 * u[45]
        tok = np.maximum(D.box_sd(g.u, g.v, scx, scy, so, so), -D.box_sd(g.u, g.v, scx, scy, 0.5 * so, 0.5 * so))
        cov = D.coverage(tok, px)
        d += cov * (1.05 - d)

    # 8. acquisition: contrast/brightness, blur, noise, clip to [-1, 1]
    img = 2.0 * (contrast * (d - 0.4) + 0.4 + brightness) - 1.0
    img = D.gaussian_blur(img, blur * config.resolution, g)
    img = img + noise * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip(img, -1.0, 1.0).astype(np.float32, copy=False)

    return SynthSample(image=img, label=label, ctr=ctr, heart_mask=heart_sd <= 0, lesion=lesion,
                       lesion_mask=lesion_mask, fo_flags=fo_flags, fo_masks=fo_masks,
                       spurious=spurious, nuisance=nuisance, blunted=blunted,
                       effusion_mask=effusion_mask)


def _costophrenic_angle(lcx, lcy, lax, lay, ydb, dome_h, lift) -> tuple[float, float]:
    """(|x|, y) of the lateral costophrenic angle: the lowest point of the lung's lateral half,
    where the lower edge of the lung ellipse meets the diaphragm dome (lifted by ``lift``)."""
    t = _ANGLE_T                                            # [K] in [0, 1], fraction of lax
    lower = lcy + lay * np.sqrt(1.0 - t * t)                # ellipse's lower edge
    dome = ydb - dome_h * (1.0 - t * t) - lift
    bottom = np.minimum(lower, dome)
    k = int(np.argmax(bottom))
    return float(lcx + lax * t[k]), float(bottom[k])


_ANGLE_T = np.linspace(0.0, 1.0, 129)


def sample_to_tensors(sample: SynthSample, index: int) -> dict[str, torch.Tensor]:
    """The sample-dict contract (see the team interfaces) from a rendered sample."""
    f32 = torch.float32
    return {
        "image": torch.from_numpy(sample.image)[None],                       # [1, H, W]
        "label": torch.tensor(sample.label, dtype=torch.int64),
        "index": torch.tensor(index, dtype=torch.int64),
        "ctr": torch.tensor(sample.ctr, dtype=f32),
        "heart_mask": torch.from_numpy(sample.heart_mask[None].astype(np.float32)),  # [1, H, W]
        "lesion": torch.tensor(float(sample.lesion), dtype=f32),
        "lesion_mask": torch.from_numpy(sample.lesion_mask[None].astype(np.float32)),  # [1, H, W]
        "fo_flags": torch.from_numpy(sample.fo_flags.astype(np.float32)),    # [3]
        "fo_masks": torch.from_numpy(sample.fo_masks.astype(np.float32)),    # [3, H, W]
        "spurious": torch.tensor(float(sample.spurious), dtype=f32),
        "nuisance": torch.from_numpy(sample.nuisance),                        # [8]
        "blunted": torch.tensor(float(sample.blunted), dtype=f32),
        "effusion_mask": torch.from_numpy(_effusion_mask(sample)[None].astype(np.float32)),  # [1, H, W]
    }


def _effusion_mask(sample: SynthSample) -> np.ndarray:  # [H, W] bool
    if sample.effusion_mask is None:
        return np.zeros(sample.image.shape, bool)
    return sample.effusion_mask


class SyntheticDataset(Dataset):
    """Map-style dataset of ``n`` synthetic radiographs; item ``i`` is sample ``offset + i``.

    Example:
        >>> ds = SyntheticDataset(SynthConfig(task="opacity", resolution=32), n=10, seed=1)
        >>> ds.class_names, ds[3]["lesion_mask"].shape
        (('clear', 'opacity'), torch.Size([1, 32, 32]))
    """

    channels = 1

    def __init__(self, config: SynthConfig, n: int, seed: int = 0, offset: int = 0):
        if n < 0 or seed < 0 or offset < 0:
            raise DataError(f"SyntheticDataset: n, seed and offset must be >= 0, got n={n}, seed={seed}, offset={offset}")
        self.config = config
        self.n, self.seed, self.offset = int(n), int(seed), int(offset)
        self.class_names = config.class_names
        self.resolution = config.resolution

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -self.n <= i < self.n:
            raise IndexError(f"SyntheticDataset: index {i} out of range for {self.n} samples")
        index = self.offset + (i % self.n)
        return sample_to_tensors(render_sample(self.config, self.seed, index), index)


def write_synthetic(config: SynthConfig, n: int, out_dir, seed: int = 0, **kwargs):
    """Stream ``n`` samples to a medcf-synthetic folder (see ``medcf.data.synthetic_writer``).

    Example:
        >>> write_synthetic(SynthConfig(resolution=64), 5000, "data/synth")  # doctest: +SKIP
    """
    # imported here: the writer module imports this one
    from medcf.data.synthetic_writer import write_synthetic as write

    return write(config, n, out_dir, seed=seed, **kwargs)
