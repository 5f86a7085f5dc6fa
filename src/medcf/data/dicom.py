"""DICOM images (optional extra ``pip install 'medcf[dicom]'``, needs pydicom).

One 2D frame is turned into display values in ``[0, 1]`` the way a viewer shows it:

1. Modality LUT: ``RescaleSlope``/``RescaleIntercept`` (or a Modality LUT Sequence).
2. VOI: the file's first ``WindowCenter``/``WindowWidth`` with its
   ``VOILUTFunction`` (LINEAR, LINEAR_EXACT, SIGMOID; DICOM PS3.3 C.11.2.1.2);
   else a VOI LUT Sequence; else the image's own min..max.
3. ``MONOCHROME1`` (bright = low values) is inverted so that bone is bright.

Colour DICOM (3 samples per pixel) is scaled by ``BitsStored``. Multi-frame
files are refused (medcf reads 2D images).

Example:
    >>> from medcf.data import load_dicom, DicomDataset
    >>> x = load_dicom("RG1_UNCI.dcm", resolution=256)       # doctest: +SKIP
    >>> x.shape                                              # doctest: +SKIP
    torch.Size([1, 256, 256])
    >>> ds = DicomDataset("scans/", resolution=128)          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from medcf.data.folders import FileListDataset, list_image_files, read_label_csv
from medcf.data.images import (
    UnreadableFileError,
    check_channels,
    check_resolution,
    is_dicom_file,
    pixels_to_tensor,
)
from medcf.errors import DataError
from medcf.io import first_line

log = logging.getLogger(__name__)


def _pydicom(path: Path):
    try:
        import pydicom
    except ImportError as e:
        raise DataError(f"{path}: reading DICOM needs pydicom; install it with "
                        "pip install 'medcf[dicom]'") from e
    return pydicom


def _first(value) -> float:
    """First entry of a possibly multi-valued DICOM number."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2) of values ``x`` onto ``[0, 1]``.

    Example:
        >>> window(np.array([0.0, 50.0, 100.0]), center=50.5, width=101).tolist()
        [0.0, 0.5, 1.0]
    """
    function = (function or "LINEAR").upper()
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"window width must be >= 1 for LINEAR, got {width}")
        if width == 1:
            return (x > center - 0.5).astype(np.float32)
        y = (x - (center - 0.5)) / (width - 1) + 0.5
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"window width must be > 0, got {width}")
        y = (x - center) / width + 0.5
    elif function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"window width must be > 0, got {width}")
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    else:
        raise ValueError(f"unknown VOILUTFunction {function!r}")
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def read_dicom_pixels(path: str | os.PathLike) -> np.ndarray:
    """Decode one DICOM file to float32 ``[H, W, C]`` in ``[0, 1]`` (see module doc)."""
    path = Path(path)
    pydicom = _pydicom(path)
    try:
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise UnreadableFileError(f"{path}: DICOM file has no pixel data")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise DataError(f"{path}: multi-frame DICOM ({frames} frames) not supported; "
                            "medcf reads 2D images")
        raw = ds.pixel_array
    except DataError:
        raise
    except Exception as e:  # pydicom raises many types for corrupt/unsupported files
        raise UnreadableFileError(f"{path}: unreadable DICOM ({first_line(e)})") from e
    return _to_unit(ds, raw, path, pydicom)


def _to_unit(ds, raw: np.ndarray, path: Path, pydicom) -> np.ndarray:  # -> [H, W, C] in [0, 1]
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 3:  # colour: pydicom already converted YBR to RGB
        if raw.ndim != 3:
            raise UnreadableFileError(f"{path}: unexpected colour pixel shape {raw.shape}")
        if np.issubdtype(raw.dtype, np.floating):
            return np.clip(raw, 0.0, 1.0).astype(np.float32)
        top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        return np.clip(raw.astype(np.float32) / top, 0.0, 1.0)
    if raw.ndim != 2:
        raise DataError(f"{path}: expected a 2D grayscale frame, got pixel shape {raw.shape}")

    # 1. modality LUT (slope/intercept or LUT sequence)
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    x = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)

    # 2. VOI: window from the file, else VOI LUT sequence, else min-max
    y = None
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            y = window(x, _first(ds.WindowCenter), _first(ds.WindowWidth),
                       str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR"))
        except (ValueError, TypeError, IndexError) as e:
            log.warning("%s: ignoring window (%s); using min-max", path, first_line(e))
    if y is None and "VOILUTSequence" in ds:
        try:
            y = _minmax(np.asarray(apply_voi_lut(x, ds, prefer_lut=True), dtype=np.float64))
        except Exception as e:  # a malformed LUT: fall back to min-max
            log.warning("%s: ignoring VOI LUT (%s); using min-max", path, first_line(e))
    if y is None:
        y = _minmax(x)

    # 3. MONOCHROME1: low values are bright
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        y = 1.0 - y
    return y.astype(np.float32)[:, :, None]


def load_dicom(path: str | os.PathLike, resolution: int | None = None,
               channels: int | None = None, fit: str = "pad") -> Tensor:
    """One DICOM file as float32 ``[C, H, W]`` in ``[-1, 1]`` (windowed, see module doc).

    Example:
        >>> x = load_dicom("RG1_UNCI.dcm", resolution=64)   # doctest: +SKIP
    """
    check_channels(channels, where=str(path))
    check_resolution(resolution, where=str(path))
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: DICOM file not found")
    return pixels_to_tensor(read_dicom_pixels(path), resolution, channels, fit)


class DicomDataset(FileListDataset):
    """A single DICOM file, a folder of DICOM files (recursive), or a labels CSV.

    Without ``labels`` the data is unlabelled (label -1). ``labels`` is a CSV with
    a header (``path,label`` by default; paths relative to the CSV) listing the
    DICOM files and their labels (names or indices).

    Example:
        >>> ds = DicomDataset("scans/", labels="scans/labels.csv", resolution=128)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, *, labels: str | os.PathLike | None = None,
                 path_column: str = "path", label_column: str = "label",
                 class_names: Sequence[str] | None = None, split: str | None = None,
                 resolution: int | None = None, channels: int | None = None,
                 skip_unreadable: bool = False, fit: str = "pad"):
        path = Path(path)
        _pydicom(path)  # fail early with the install hint
        if labels is not None:
            files, lab, names = read_label_csv(labels, path_column=path_column,
                                               label_column=label_column,
                                               class_names=class_names, split=split)
            source = labels
        elif path.is_file():
            files, lab, names, source = [path], None, (), path
        elif path.is_dir():
            files = [p for p in list_image_files(path) if is_dicom_file(p)]
            if not files:
                raise DataError(f"{path}: no DICOM files in folder")
            lab, names, source = None, (), path
        else:
            raise DataError(f"{path}: DICOM file or folder not found")
        super().__init__(files, lab, names, resolution=resolution, channels=channels,
                         skip_unreadable=skip_unreadable, source=source, fit=fit)
