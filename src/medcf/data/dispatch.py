"""``open_dataset``: one entry point for every kind of on-disk data.

What ``path`` is decides the reader:

- folder with a medcf-synthetic ``dataset.json`` -> ``SyntheticFolderDataset`` (all synthetic keys)
- folder with class subfolders -> ``ImageFolderDataset`` (``split`` picks ``root/<split>``)
- folder of images without subfolders -> ``FileListDataset``, unlabelled (label -1)
- folder of DICOM files without subfolders -> ``DicomDataset``, unlabelled
- ``*.csv`` with a header (path,label) -> ``CSVDataset`` (paths relative to the CSV)
- ``*.npz`` -> ``MedMNISTDataset`` (a local file; medcf never downloads)
- ``*.dcm`` or a file with the DICOM magic -> ``DicomDataset`` of one image
- ``*.png``/``*.jpg``/``*.tif``/``*.bmp`` -> ``FileListDataset`` of one image, unlabelled

Example:
    >>> from medcf.data import open_dataset
    >>> ds = open_dataset("data/synth", split="train")                   # doctest: +SKIP
    >>> ds = open_dataset("labels.csv", resolution=128, channels=1)      # doctest: +SKIP
    >>> ds = open_dataset("pneumoniamnist.npz", split="test")            # doctest: +SKIP
    >>> batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from medcf.data.dicom import DicomDataset
from medcf.data.folders import (
    CSVDataset,
    FileListDataset,
    ImageFolderDataset,
    list_image_files,
    subfolders,
)
from medcf.data.images import IMAGE_EXTENSIONS, is_dicom_file, is_image_file
from medcf.data.medmnist import MedMNISTDataset, missing_file_message
from medcf.data.synthetic_folder import SyntheticFolderDataset, is_synthetic_folder
from medcf.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def open_dataset(path: str | os.PathLike, *, split: str | None = None,
                 resolution: int | None = None, channels: int | None = None,
                 skip_unreadable: bool = False, path_column: str = "path",
                 label_column: str = "label", class_names: Sequence[str] | None = None,
                 label_index: int | None = None) -> Dataset:
    """Open on-disk data as a map-style dataset of sample dicts (see module table).

    Args:
        path: folder, CSV, ``.npz``, DICOM or image file.
        split: "train", "val" or "test" (synthetic split column, ``root/<split>``
            class folders, a CSV ``split`` column, or the MedMNIST arrays); None = all.
        resolution: output size R (R x R); None keeps the stored size, which must
            then be square and the same for every image.
        channels: 1 or 3; None keeps the stored channel count.
        skip_unreadable: drop missing/corrupt files (``dataset.skipped`` counts
            them, a warning is logged) instead of raising ``DataError``.
        path_column, label_column, class_names: CSV options (``class_names`` also
            overrides class-folder and MedMNIST names).
        label_index: MedMNIST multi-label files: the finding used as binary label.

    Every dataset has ``class_names``, ``channels``, ``resolution``, ``skipped``.

    Example:
        >>> ds = open_dataset("xrays/", split="train", resolution=64)   # doctest: +SKIP
        >>> ds[0]["image"].shape, ds.class_names                        # doctest: +SKIP
        (torch.Size([1, 64, 64]), ('normal', 'pneumonia'))
    """
    p = Path(path)
    if split is not None and split not in SPLITS:
        raise DataError(f"{p}: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    common = dict(resolution=resolution, channels=channels)
    csv_opts = path_column != "path" or label_column != "label"
    if not p.exists():
        if p.suffix.lower() == ".npz":
            raise DataError(missing_file_message(p))
        raise DataError(f"{p}: no such file or folder")

    ds = _open(p, split, common, skip_unreadable, path_column, label_column, class_names,
               label_index, csv_opts)
    log.info("opened %s as %s (%d items)", p, type(ds).__name__, len(ds))
    return ds


def describe_dataset(ds: Dataset, *, verify: bool = False, progress: bool = False) -> dict:
    """Summary of an opened dataset: type, size, classes and their counts, image facts.

    ``verify=True`` decodes every item first (raising the first ``DataError``).

    Example:
        >>> describe_dataset(open_dataset("data/synth"))["label_counts"]   # doctest: +SKIP
        {'normal': 2512, 'cardiomegaly': 2488}
    """
    from medcf.progress import tqdm  # a live bar on a terminal, plain lines in a log

    if verify:
        for i in tqdm(range(len(ds)), desc="verify", unit="img", disable=not progress):
            ds[i]
    names = tuple(getattr(ds, "class_names", ()))
    labels = list(getattr(ds, "labels", []))
    counts: dict[str, int] = {}
    for k in labels:
        key = names[k] if 0 <= k < len(names) else ("unlabelled" if k < 0 else str(k))
        counts[key] = counts.get(key, 0) + 1
    first = ds[0]
    image = first["image"]
    return {
        "type": type(ds).__name__,
        "items": len(ds),
        "class_names": list(names),
        "label_counts": counts,
        "resolution": getattr(ds, "resolution", image.shape[-1]),
        "channels": getattr(ds, "channels", image.shape[0]),
        "skipped": getattr(ds, "skipped", 0),
        "keys": sorted(first.keys()),
        "first_image_range": [round(float(image.min()), 4), round(float(image.max()), 4)],
        "verified": verify,
    }


def _no_split(p: Path, split: str | None, what: str) -> None:
    if split is not None:
        raise DataError(f"{p}: split={split!r} does not apply to {what}")


def _no_option(p: Path, flag: bool, option: str, what: str) -> None:
    if flag:
        raise DataError(f"{p}: option {option} does not apply to {what}")


def _open(p: Path, split, common, skip, path_column, label_column, class_names, label_index,
          csv_opts) -> Dataset:
    if p.is_dir():
        _no_option(p, label_index is not None, "label_index", "a folder")
        if is_synthetic_folder(p):
            _no_option(p, csv_opts or class_names is not None, "path/label column or class_names",
                       "a synthetic folder")
            return SyntheticFolderDataset(p, split=split, skip_unreadable=skip, **common)
        _no_option(p, csv_opts, "path_column/label_column", "a folder (open the CSV instead)")
        if subfolders(p):
            loose = [f for f in p.iterdir() if f.is_file() and is_image_file(f)]
            if loose:
                log.warning("%s: %d image file(s) beside the class folders are ignored", p, len(loose))
            return ImageFolderDataset(p, split=split, skip_unreadable=skip,
                                      class_names=class_names, **common)
        files = list_image_files(p)
        if not files:
            raise DataError(f"{p}: no images, class subfolders or dataset.json in folder")
        _no_split(p, split, "a folder without split subfolders")
        _no_option(p, class_names is not None, "class_names", "an unlabelled folder")
        if all(is_dicom_file(f) for f in files):
            return DicomDataset(p, skip_unreadable=skip, **common)
        return FileListDataset(files, None, (), skip_unreadable=skip, source=p, **common)

    suffix = p.suffix.lower()
    if suffix == ".npz":
        _no_option(p, csv_opts, "path_column/label_column", "a MedMNIST file")
        return MedMNISTDataset(p, split=split, label_index=label_index,
                                           class_names=class_names, **common)
    _no_option(p, label_index is not None, "label_index", "anything but a MedMNIST .npz")
    if suffix == ".csv":
        return CSVDataset(p, split=split, path_column=path_column, label_column=label_column,
                                 class_names=class_names, skip_unreadable=skip, **common)
    if p.name == "dataset.json" and is_synthetic_folder(p.parent):
        return _open(p.parent, split, common, skip, path_column, label_column, class_names,
                     label_index, csv_opts)
    _no_option(p, csv_opts or class_names is not None, "path/label column or class_names",
               "a single image")
    if is_dicom_file(p):
        _no_split(p, split, "a single DICOM file")
        return DicomDataset(p, skip_unreadable=skip, **common)
    if suffix in IMAGE_EXTENSIONS:
        _no_split(p, split, "a single image")
        return FileListDataset([p], None, (), skip_unreadable=skip, source=p, **common)
    raise DataError(f"{p}: unknown data type; expected a folder, .csv, .npz, DICOM or image "
                    f"file ({', '.join(IMAGE_EXTENSIONS)})")
