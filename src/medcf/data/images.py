"""Reading one image file into a float tensor ``[C, H, W]`` in ``[-1, 1]``.

Supported: PNG, JPEG, TIFF and BMP through Pillow (8- or 16-bit, gray, gray+alpha,
RGB, RGBA, palette), and DICOM through ``medcf.data.dicom`` (optional extra
``medcf[dicom]``). Values are scaled by the bit depth, not by the image's own
range: 8-bit ``0 -> -1`` and ``255 -> 1``; 16-bit ``0 -> -1`` and ``65535 -> 1``.
Alpha is dropped. Gray -> RGB repeats the channel; RGB -> gray is the ITU-R
601 luminance ``0.299 R + 0.587 G + 0.114 B``. Resizing is bilinear with
antialiasing to a square ``resolution x resolution``; a non-square image is fitted
by ``fit``: ``"pad"`` (the default: the whole image, aspect ratio kept, black
borders; anatomy is not distorted), ``"crop"`` (the centred square, aspect kept) or
``"squash"`` (stretched to the square).

Example:
    >>> from medcf.data import load_image
    >>> x = load_image("scan.png", resolution=64, channels=1)   # doctest: +SKIP
    >>> x.shape, float(x.min()) >= -1.0                         # doctest: +SKIP
    (torch.Size([1, 64, 64]), True)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from medcf.errors import DataError
from medcf.io import first_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_EXTENSIONS = (".dcm", ".dicom")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2, as Pillow's "L" conversion
FITS = ("pad", "crop", "squash")  # how a non-square image becomes R x R
SPLITS = ("train", "val", "test")  # the split names every dataset reader knows

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class UnreadableFileError(DataError):
    """A file that exists but cannot be decoded; ``skip_unreadable=True`` skips these."""


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a ``.dcm``/``.dicom`` name or a file with the DICOM preamble magic."""
    path = Path(path)
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a file medcf can read: a known image extension or a DICOM file."""
    path = Path(path)
    if path.name.startswith("."):
        return False
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    return is_dicom_file(path)


def read_pixels(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` to float32 ``[H, W, C]`` (C = 1 or 3) in ``[0, 1]``.

    Raises ``DataError`` for a missing file and ``UnreadableFileError`` (a
    ``DataError``) for a file that cannot be decoded (corrupt, truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    if path.suffix.lower() not in IMAGE_EXTENSIONS and is_dicom_file(path):
        from medcf.data.dicom import read_dicom_pixels

        return read_dicom_pixels(path)
    return _read_pillow(path)


def _read_pillow(path: Path) -> np.ndarray:  # -> [H, W, C] in [0, 1]
    try:
        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                raise DataError(f"{path}: multi-frame image ({im.n_frames} frames) not "
                                "supported; medcf reads 2D images")
            im.load()  # decodes now: truncated files fail here
            im = ImageOps.exif_transpose(im)
            return _pillow_to_unit(im, path)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise UnreadableFileError(f"{path}: unreadable image ({first_line(e)})") from e


def _pillow_to_unit(im: Image.Image, path: Path) -> np.ndarray:  # -> [H, W, C] in [0, 1]
    mode = im.mode
    if mode == "1":
        im, mode = im.convert("L"), "L"
    elif mode in ("P", "PA"):
        im = im.convert("RGBA")
        mode = "RGBA"
    elif mode in ("La",):
        im, mode = im.convert("LA"), "LA"
    elif mode in ("RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        im, mode = im.convert("RGB"), "RGB"

    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(im).astype(np.float32) / 65535.0
    elif mode == "I":  # 32-bit integer container; 16-bit PNG/TIFF data often lands here
        raw = np.asarray(im)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise DataError(f"{path}: 32-bit integer image with values outside 0..65535 "
                            "is not supported; save it as 8- or 16-bit")
        arr = raw.astype(np.float32) / 65535.0
    elif mode == "F":
        arr = np.asarray(im).astype(np.float32)
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
            raise DataError(f"{path}: floating-point image must hold values in [0, 1]; "
                            f"found [{float(np.nanmin(arr)):g}, {float(np.nanmax(arr)):g}]")
    elif mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im).astype(np.float32) / 255.0
    else:
        raise DataError(f"{path}: unsupported image mode {mode!r}")

    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 2:  # gray + alpha
        arr = arr[:, :, :1]
    elif arr.shape[2] == 4:  # RGB + alpha
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def check_channels(channels: int | None, where: str = "channels") -> None:
    if channels is not None and channels not in (1, 3):
        raise DataError(f"{where}: channels must be 1 or 3, got {channels}")


def check_resolution(resolution: int | None, where: str = "resolution") -> None:
    if resolution is not None and (not isinstance(resolution, int) or resolution < 1):
        raise DataError(f"{where}: resolution must be a positive integer, got {resolution!r}")


def check_fit(fit: str, where: str = "fit") -> None:
    if fit not in FITS:
        raise DataError(f"{where}: fit must be one of {', '.join(FITS)}, got {fit!r}")


def check_split(split: str | None, where: str = "split") -> None:
    """One-line ``DataError`` unless ``split`` is None (all images) or one of ``SPLITS``."""
    if split is not None and split not in SPLITS:
        raise DataError(f"{where}: unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def _fit_square(t: Tensor, resolution: int, fit: str) -> Tensor:  # [C, H, W] -> [C, R, R]
    h, w = t.shape[1:]
    if fit == "squash" or h == w:
        size = (resolution, resolution)
    else:  # pad: the longer side becomes R; crop: the shorter side does
        scale = resolution / (max(h, w) if fit == "pad" else min(h, w))
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if tuple(t.shape[1:]) != size:
        t = F.interpolate(t[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    h, w = t.shape[1:]
    if fit == "pad" and (h, w) != (resolution, resolution):
        top, left = (resolution - h) // 2, (resolution - w) // 2
        t = F.pad(t, (left, resolution - w - left, top, resolution - h - top), value=0.0)  # 0 -> -1: black
    elif fit == "crop" and (h, w) != (resolution, resolution):
        top, left = (h - resolution) // 2, (w - resolution) // 2
        t = t[:, top:top + resolution, left:left + resolution]
    return t


def pixels_to_tensor(arr: np.ndarray, resolution: int | None = None,
                     channels: int | None = None, fit: str = "pad") -> Tensor:
    """float ``[H, W, C]`` (or ``[H, W]``) in ``[0, 1]`` -> float32 ``[C', R, R]`` in ``[-1, 1]``.

    ``resolution=None`` keeps the size, ``channels=None`` keeps the channel count;
    ``fit`` (pad | crop | squash) says how a non-square image becomes square.
    """
    check_channels(channels)
    check_resolution(resolution)
    check_fit(fit)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)  # [C, H, W]
    if channels == 1 and t.shape[0] == 3:  # luminance before resizing (less work)
        w = torch.tensor(LUMA_WEIGHTS, dtype=t.dtype).view(3, 1, 1)
        t = (t * w).sum(0, keepdim=True)
    if resolution is not None and tuple(t.shape[1:]) != (resolution, resolution):
        t = _fit_square(t, resolution, fit)
    if channels == 3 and t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return (t * 2.0 - 1.0).clamp_(-1.0, 1.0).contiguous()


def load_image(path: str | os.PathLike, resolution: int | None = None,
               channels: int | None = None, fit: str = "pad") -> Tensor:
    """Read one image (PNG/JPEG/TIFF/BMP/DICOM) as float32 ``[C, H, W]`` in ``[-1, 1]``.

    Example:
        >>> x = load_image("xray.png", resolution=128, channels=3)   # doctest: +SKIP
        >>> x.shape
        torch.Size([3, 128, 128])
    """
    check_channels(channels, where=str(path))
    check_resolution(resolution, where=str(path))
    check_fit(fit, where=str(path))
    return pixels_to_tensor(read_pixels(path), resolution, channels, fit)
