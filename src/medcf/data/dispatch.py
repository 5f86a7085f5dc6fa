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
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from medcf.data.dicom import DicomDataset
from medcf.data.folders import (
    CSVDataset,
    FileListDataset,
    ImageFolderDataset,
    check_fractions,
    list_image_files,
    subfolders,
)
from medcf.data.images import IMAGE_EXTENSIONS, check_fit, check_split, is_dicom_file, is_image_file
from medcf.data.medmnist import MedMNISTDataset, missing_file_message
from medcf.data.synthetic_folder import SyntheticFolderDataset, is_synthetic_folder
from medcf.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataOptions:
    """A data path plus how to read it, usable wherever a data path is (``os.PathLike``).

    Training recipes pass their ``data`` to ``open_dataset``; wrapping the path carries
    the options through unchanged, and ``str()`` (what runs record as their data) names them.

    Example:
        >>> train_classifier(DataOptions("chest/", split_fractions=(0.8, 0.1, 0.1)), "runs/clf")  # doctest: +SKIP
    """

    path: str
    split_fractions: tuple[float, ...] | None = None  # (train, val, test) for plain class folders
    split_seed: int = 0
    fit: str = "pad"                                  # pad | crop | squash for non-square images

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        extra = []
        if self.split_fractions is not None:
            extra.append(f"split {','.join(f'{f:g}' for f in self.split_fractions)} by class, "
                         f"seed {self.split_seed}")
        if self.fit != "pad":
            extra.append(f"fit {self.fit}")
        return f"{self.path} ({'; '.join(extra)})" if extra else str(self.path)


def open_dataset(path: str | os.PathLike, *, split: str | None = None,
                 resolution: int | None = None, channels: int | None = None,
                 skip_unreadable: bool = False, path_column: str = "path",
                 label_column: str = "label", class_names: Sequence[str] | None = None,
                 label_index: int | None = None, fit: str | None = None,
                 split_fractions: Sequence[float] | None = None, split_seed: int | None = None) -> Dataset:
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
        fit: "pad" (default), "crop" or "squash": how non-square images become R x R.
        split_fractions, split_seed: class folders without split folders: (train, val,
            test) fractions, split per class with the seed (see ``ImageFolderDataset``).
            A ``DataOptions`` path carries these three; explicit arguments win.

    Every dataset has ``class_names``, ``channels``, ``resolution``, ``skipped``.

    Example:
        >>> ds = open_dataset("xrays/", split="train", resolution=64)   # doctest: +SKIP
        >>> ds[0]["image"].shape, ds.class_names                        # doctest: +SKIP
        (torch.Size([1, 64, 64]), ('normal', 'pneumonia'))
    """
    if isinstance(path, DataOptions):
        fit = path.fit if fit is None else fit
        split_fractions = path.split_fractions if split_fractions is None else split_fractions
        split_seed = path.split_seed if split_seed is None else split_seed
        path = path.path
    fit = "pad" if fit is None else fit
    check_fit(fit, where=str(path))
    p = Path(path)
    check_split(split, where=str(p))
    common = dict(resolution=resolution, channels=channels)
    csv_opts = path_column != "path" or label_column != "label"
    if not p.exists():
        if p.suffix.lower() == ".npz":
            raise DataError(missing_file_message(p))
        raise DataError(f"{p}: no such file or folder")

    files_opts = dict(common, fit=fit)  # readers of image files
    fractions = check_fractions(split_fractions, where=str(p))
    ds = _open(p, split, common, skip_unreadable, path_column, label_column, class_names,
               label_index, csv_opts, files_opts, fractions, split_seed or 0)
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
          csv_opts, files_opts, fractions, seed) -> Dataset:
    if fractions is not None and not (p.is_dir() and not is_synthetic_folder(p) and subfolders(p)):
        raise DataError(f"{p}: split fractions (--split {','.join(f'{f:g}' for f in fractions)}) apply to "
                        "class folders only; synthetic folders, CSVs and .npz files carry their splits")
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
            return ImageFolderDataset(p, split=split, skip_unreadable=skip, class_names=class_names,
                                      split_fractions=fractions, split_seed=seed, **files_opts)
        files = list_image_files(p)
        if not files:
            raise DataError(f"{p}: no images, class subfolders or dataset.json in folder")
        _no_split(p, split, "a folder without split subfolders")
        _no_option(p, class_names is not None, "class_names", "an unlabelled folder")
        if all(is_dicom_file(f) for f in files):
            return DicomDataset(p, skip_unreadable=skip, **files_opts)
        return FileListDataset(files, None, (), skip_unreadable=skip, source=p, **files_opts)

    suffix = p.suffix.lower()
    if suffix == ".npz":
        _no_option(p, csv_opts, "path_column/label_column", "a MedMNIST file")
        return MedMNISTDataset(p, split=split, label_index=label_index,
                                           class_names=class_names, **common)
    _no_option(p, label_index is not None, "label_index", "anything but a MedMNIST .npz")
    if suffix == ".csv":
        return CSVDataset(p, split=split, path_column=path_column, label_column=label_column,
                                 class_names=class_names, skip_unreadable=skip, **files_opts)
    if p.name == "dataset.json" and is_synthetic_folder(p.parent):
        return _open(p.parent, split, common, skip, path_column, label_column, class_names,
                     label_index, csv_opts, files_opts, fractions, seed)
    _no_option(p, csv_opts or class_names is not None, "path/label column or class_names",
               "a single image")
    if is_dicom_file(p):
        _no_split(p, split, "a single DICOM file")
        return DicomDataset(p, skip_unreadable=skip, **files_opts)
    if suffix in IMAGE_EXTENSIONS:
        _no_split(p, split, "a single image")
        return FileListDataset([p], None, (), skip_unreadable=skip, source=p, **files_opts)
    raise DataError(f"{p}: unknown data type; expected a folder, .csv, .npz, DICOM or image "
                    f"file ({', '.join(IMAGE_EXTENSIONS)})")
