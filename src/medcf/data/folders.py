"""Datasets of image files: class subfolders, a CSV of path,label, or a plain list.

Items follow the medcf sample-dict contract::

    {"image": float32 [C, H, W] in [-1, 1], "label": int64 [], "index": int64 []}

Unlabelled data (a folder of images without class subfolders, a single file)
has ``label == -1`` and ``class_names == ()``.

File existence is checked when the dataset is built; images are decoded when an
item is read (``verify()`` decodes everything up front). With
``skip_unreadable=True`` every file is decoded once at construction and missing
or undecodable files are dropped; ``.skipped`` holds their count and a warning
is logged.

Example:
    >>> from medcf.data import ImageFolderDataset, CSVDataset
    >>> ds = ImageFolderDataset("xrays/", resolution=64, channels=1)   # doctest: +SKIP
    >>> ds.class_names                                                   # doctest: +SKIP
    ('normal', 'pneumonia')
    >>> ds = CSVDataset("labels.csv", label_column="finding")          # doctest: +SKIP
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from medcf.data.images import (
    SPLITS,
    check_channels,
    check_fit,
    check_resolution,
    is_image_file,
    pixels_to_tensor,
    read_pixels,
)
from medcf.errors import DataError

log = logging.getLogger(__name__)

_SPLIT_FOLDER_NAMES = {"train", "val", "valid", "validation", "test"}


class FileListDataset(Dataset):
    """Images given as a list of files with optional integer labels.

    Args:
        files: image paths (PNG/JPEG/TIFF/BMP/DICOM).
        labels: one class index per file, or None for unlabelled data (label -1).
        class_names: names of the classes (``()`` when unlabelled).
        resolution: output size R (images resized to R x R); None keeps the size
            of the files, which must then all be the same square size.
        channels: 1 or 3; None keeps the channel count of the first image.
        skip_unreadable: drop missing/undecodable files (count in ``.skipped``)
            instead of raising ``DataError``.
        source: what to name in error messages (folder or CSV path).

    Example:
        >>> ds = FileListDataset(["a.png", "b.png"], [0, 1], ("neg", "pos"), resolution=32)  # doctest: +SKIP
        >>> ds[0]["image"].shape                                                          # doctest: +SKIP
        torch.Size([1, 32, 32])
    """

    def __init__(self, files: Sequence[str | os.PathLike], labels: Sequence[int] | None = None,
                 class_names: Sequence[str] = (), *, resolution: int | None = None,
                 channels: int | None = None, skip_unreadable: bool = False,
                 source: str | os.PathLike | None = None, fit: str = "pad"):
        self.source = str(source) if source is not None else "file list"
        check_resolution(resolution, where=self.source)
        check_fit(fit, where=self.source)
        self.fit = fit
        check_channels(channels, where=self.source)
        files = [Path(f) for f in files]
        if labels is not None and len(labels) != len(files):
            raise DataError(f"{self.source}: {len(files)} files but {len(labels)} labels")
        labels = [-1] * len(files) if labels is None else [int(v) for v in labels]
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.skipped = 0

        # 1. existence (always eager); with skip_unreadable also a full decode
        keep, first, bad = [], None, []
        for i, f in enumerate(files):
            if not f.is_file():
                if not skip_unreadable:
                    raise DataError(f"{f}: image file not found (listed in {self.source})")
                bad.append(f"{f}: not found")
                continue
            if skip_unreadable:
                try:
                    arr = read_pixels(f)
                except DataError as e:  # any per-file problem: unreadable, multi-frame, odd mode
                    bad.append(str(e))
                    continue
                if first is None:
                    first = arr
            keep.append(i)
        if bad:
            self.skipped = len(bad)
            log.warning("%s: skipped %d unreadable file(s), e.g. %s", self.source, len(bad), bad[0])
        self.files = [files[i] for i in keep]
        self.labels = [labels[i] for i in keep]
        if not self.files:
            raise DataError(f"{self.source}: no readable images")

        # 2. probe the first image for size and channels
        if first is None:
            first = read_pixels(self.files[0])
        h, w, c = first.shape
        self._native_size: tuple[int, int] | None = None
        if resolution is None:
            if h != w:
                raise DataError(f"{self.files[0]}: image is {w}x{h} (not square); pass --resolution N "
                                "(resolution=N) to fit images to N x N (--fit pad|crop|squash)")
            self._native_size = (h, w)
            resolution = h
        self.resolution: int = resolution
        self.channels: int = channels if channels is not None else c

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> torch.Tensor:  # -> [C, R, R]
        """The i-th image as float32 ``[C, R, R]`` in ``[-1, 1]``."""
        path = self.files[i]
        arr = read_pixels(path)
        if self._native_size is not None and arr.shape[:2] != self._native_size:
            h0, w0 = self._native_size
            raise DataError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]} but {self.files[0].name} "
                            f"is {w0}x{h0}; images differ in size, pass resolution=N to resize them")
        return pixels_to_tensor(arr, self.resolution, self.channels, self.fit)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        return {
            "image": self.load(i),
            "label": torch.tensor(self.labels[i], dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
        }

    def verify(self) -> None:
        """Decode every file now; raise the first ``DataError`` (bad file, size mismatch)."""
        for i in range(len(self)):
            self.load(i)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, n={len(self)}, classes={self.class_names}, "
                f"resolution={self.resolution}, channels={self.channels})")


# ----------------------------------------------------------------------------- class folders


def list_image_files(folder: Path) -> list[Path]:
    """All readable-looking files under ``folder`` (recursive, sorted, hidden names skipped)."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            p = Path(root) / name
            if is_image_file(p):
                out.append(p)
    return out


def subfolders(folder: Path) -> list[Path]:
    """Non-hidden subfolders of ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFolderDataset(FileListDataset):
    """``root/<class name>/**/<image>``; ``class_names`` are the sorted subfolder names.

    With ``split="train"`` (or "val"/"test") the classes are read from ``root/train``;
    class folders without split folders are split with ``split_fractions`` (train, val,
    test fractions, e.g. ``(0.8, 0.1, 0.1)``): per class, the sorted files are shuffled
    with ``split_seed`` and cut in that ratio (stratified and reproducible).
    ``class_names`` renames the classes (one name per subfolder, in sorted order).

    Example:
        >>> ds = ImageFolderDataset("chest/", split="val", resolution=128)   # doctest: +SKIP
        >>> ds = ImageFolderDataset("chest/", split="train", split_fractions=(0.8, 0.1, 0.1))  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike, *, split: str | None = None,
                 resolution: int | None = None, channels: int | None = None,
                 skip_unreadable: bool = False, class_names: Sequence[str] | None = None,
                 fit: str = "pad", split_fractions: Sequence[float] | None = None, split_seed: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: folder not found")
        fractions = check_fractions(split_fractions, where=str(root))
        if split is not None and fractions is not None and _has_split_folders(root):
            raise DataError(f"{root}: already holds split folders; split fractions (--split "
                            f"{','.join(f'{f:g}' for f in fractions)}) apply to plain class folders only")
        if split is not None and fractions is None:
            root = _split_folder(root, split)
        classes = subfolders(root)
        if not classes:
            raise DataError(f"{root}: no class subfolders (expected {root}/<class name>/<images>)")
        names = [c.name for c in classes]
        if split is None and set(names) <= _SPLIT_FOLDER_NAMES and all(subfolders(c) for c in classes):
            raise DataError(f"{root}: holds split folders {names}; pass split='train' (or 'val'/'test')")
        if class_names is not None:
            if len(class_names) != len(names):
                raise DataError(f"{root}: {len(class_names)} class_names given for "
                                f"{len(names)} class folders {names}")
            names = list(class_names)
        files: list[Path] = []
        labels: list[int] = []
        for k, c in enumerate(classes):
            found = list_image_files(c)
            if not found:
                raise DataError(f"{c}: class folder '{c.name}' holds no images")
            if split is not None and fractions is not None:
                found = _fraction_of(found, fractions, SPLITS.index(split), seed=split_seed + k)
                if not found:
                    raise DataError(f"{c}: split {split!r} gets no images of class '{c.name}' with "
                                    f"fractions {','.join(f'{f:g}' for f in fractions)}; use more images "
                                    "or larger fractions")
            files += found
            labels += [k] * len(found)
        self.split_fractions, self.split_seed = fractions, split_seed
        super().__init__(files, labels, names, resolution=resolution, channels=channels,
                         skip_unreadable=skip_unreadable, source=root, fit=fit)


def check_fractions(fractions: Sequence[float] | None, where: str = "split") -> tuple[float, ...] | None:
    """None, or three non-negative (train, val, test) fractions summing to 1 (+- 1e-6)."""
    if fractions is None:
        return None
    f = tuple(float(v) for v in fractions)
    if len(f) != 3 or any(not 0 <= v <= 1 for v in f) or abs(sum(f) - 1) > 1e-6 or f[0] == 0:
        raise DataError(f"{where}: split fractions must be three numbers train,val,test >= 0 that sum "
                        f"to 1 with train > 0 (e.g. --split 0.8,0.1,0.1), got {fractions}")
    return f


def _fraction_of(files: list[Path], fractions: tuple[float, ...], part: int, *, seed: int) -> list[Path]:
    """The ``part``-th (0 train, 1 val, 2 test) share of ``files``, shuffled with ``seed``."""
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    n = len(files)
    cut1 = round(fractions[0] * n)
    cut2 = cut1 + round(fractions[1] * n) if fractions[2] > 0 else n
    lo, hi = ((0, cut1), (cut1, min(cut2, n)), (min(cut2, n), n))[part]
    return [files[i] for i in sorted(order[lo:hi])]


def _has_split_folders(root: Path) -> bool:
    names = {p.name for p in subfolders(root)}
    return bool(names) and names <= _SPLIT_FOLDER_NAMES


def _split_folder(root: Path, split: str) -> Path:
    aliases = {"val": ("val", "valid", "validation")}.get(split, (split,))
    for name in aliases:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no '{split}' split folder (found {[p.name for p in subfolders(root)]}); "
                    "to split class folders, give fractions: --split 0.8,0.1,0.1 on `medcf train` "
                    "(split_fractions=(0.8, 0.1, 0.1) in Python; seeded, stratified)")


# ----------------------------------------------------------------------------- CSV


def read_label_csv(csv_path: str | os.PathLike, *, path_column: str = "path",
                   label_column: str | None = "label", class_names: Sequence[str] | None = None,
                   split: str | None = None, split_column: str = "split",
                   ) -> tuple[list[Path], list[int] | None, tuple[str, ...]]:
    """Parse a CSV with a header into (files, labels, class_names).

    Paths are relative to the CSV's folder (absolute paths are kept). Labels are
    either all integers (class indices) or class names; names map to indices in
    ``class_names`` (default: the sorted distinct names). ``label_column=None``
    reads an unlabelled list. With ``split``, rows are filtered on ``split_column``.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path}: unreadable CSV ({e})") from e
    if not columns:
        raise DataError(f"{csv_path}: empty CSV; expected a header line like '{path_column},{label_column}'")
    if path_column not in columns:
        raise DataError(f"{csv_path}: no '{path_column}' column (columns: {', '.join(columns)}); "
                        "pass path_column=")
    if label_column is not None and label_column not in columns:
        raise DataError(f"{csv_path}: no label column '{label_column}' (columns: {', '.join(columns)}); "
                        "pass label_column=")
    if split is not None:
        if split_column not in columns:
            raise DataError(f"{csv_path}: split={split!r} requested but the CSV has no "
                            f"'{split_column}' column")
        rows = [r for r in rows if (r.get(split_column) or "").strip() == split]
        if not rows:
            raise DataError(f"{csv_path}: no rows with {split_column} == {split!r}")
    if not rows:
        raise DataError(f"{csv_path}: no rows below the header")

    base = csv_path.parent
    files = []
    for n, r in enumerate(rows, start=2):
        p = (r.get(path_column) or "").strip()
        if not p:
            raise DataError(f"{csv_path}: row {n} has an empty '{path_column}'")
        files.append(base / p)
    if label_column is None:
        return files, None, tuple(class_names or ())

    raw = [(r.get(label_column) or "").strip() for r in rows]
    for n, v in enumerate(raw, start=2):
        if not v:
            raise DataError(f"{csv_path}: row {n} has an empty '{label_column}'")
    labels, names = _parse_labels(raw, class_names, csv_path, label_column)
    return files, labels, names


def _parse_labels(raw: list[str], class_names: Sequence[str] | None, where: Path,
                  column: str) -> tuple[list[int], tuple[str, ...]]:
    as_int = []
    for v in raw:
        try:
            as_int.append(int(v))
        except ValueError:
            as_int = None
            break
    if as_int is not None:  # class indices
        names = tuple(class_names) if class_names is not None else tuple(
            str(k) for k in range(max(as_int) + 1))
        for n, k in enumerate(as_int, start=2):
            if not 0 <= k < len(names):
                raise DataError(f"{where}: row {n}: label {k} out of range for "
                                f"{len(names)} classes {names}")
        return as_int, names
    names = tuple(class_names) if class_names is not None else tuple(sorted(set(raw)))
    lookup = {name: k for k, name in enumerate(names)}
    labels = []
    for n, v in enumerate(raw, start=2):
        if v not in lookup:
            raise DataError(f"{where}: row {n}: unknown label name {v!r} in '{column}' "
                            f"(class names: {', '.join(names)})")
        labels.append(lookup[v])
    return labels, names


class CSVDataset(FileListDataset):
    """A CSV with a header: one image path (relative to the CSV) and one label per row.

    Labels may be class indices or class names (see ``read_label_csv``). An
    optional split column (default ``split``) is filtered with ``split=``.

    Example:
        >>> # labels.csv:  path,label \\n imgs/a.png,normal \\n imgs/b.png,cardiomegaly
        >>> ds = CSVDataset("labels.csv", resolution=64,
        ...                 class_names=("normal", "cardiomegaly"))   # doctest: +SKIP
    """

    def __init__(self, csv_path: str | os.PathLike, *, path_column: str = "path",
                 label_column: str | None = "label", class_names: Sequence[str] | None = None,
                 split: str | None = None, split_column: str = "split",
                 resolution: int | None = None, channels: int | None = None,
                 skip_unreadable: bool = False, fit: str = "pad"):
        files, labels, names = read_label_csv(
            csv_path, path_column=path_column, label_column=label_column,
            class_names=class_names, split=split, split_column=split_column)
        super().__init__(files, labels, names, resolution=resolution, channels=channels,
                         skip_unreadable=skip_unreadable, source=csv_path, fit=fit)
