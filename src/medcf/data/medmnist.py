"""MedMNIST 2D datasets from a local ``.npz`` file (medcf never downloads).

A MedMNIST file (e.g. ``pneumoniamnist.npz``, ``chestmnist_64.npz``) holds
``train_images``/``train_labels``, ``val_*`` and ``test_*`` arrays; images are
uint8 ``[N, H, W]`` (gray) or ``[N, H, W, 3]`` (RGB), labels ``[N, 1]`` or, for
multi-label sets such as ChestMNIST, ``[N, K]``. For a multi-label file pick one
finding with ``label_index`` to get a binary task. ``split=None`` concatenates
all splits (train, val, test order). The file is read with
``numpy.load(allow_pickle=False)``; the chosen splits are held in memory.

Get the files from the MedMNIST Zenodo records (v2: https://zenodo.org/records/6496656,
MedMNIST+ with 64/128/224 px: https://zenodo.org/records/10519652) or
``python -m medmnist download``, then pass the local path.

Example:
    >>> from medcf.data import MedMNISTDataset
    >>> ds = MedMNISTDataset("pneumoniamnist.npz", split="train")           # doctest: +SKIP
    >>> ds.class_names                                                      # doctest: +SKIP
    ('normal', 'pneumonia')
    >>> ds = MedMNISTDataset("chestmnist.npz", split="val", label_index=1)  # doctest: +SKIP
    >>> ds.class_names                                                      # doctest: +SKIP
    ('no_cardiomegaly', 'cardiomegaly')
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medcf.data.images import (
    SPLITS,
    check_channels,
    check_resolution,
    check_split,
    pixels_to_tensor,
)
from medcf.errors import DataError
from medcf.io import first_line

MEDMNIST_URL = "https://zenodo.org/records/10519652"

# Label names of the MedMNIST chest sets (from the MedMNIST INFO table).
KNOWN_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "chestmnist": ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
                   "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema",
                   "fibrosis", "pleural", "hernia"),
}


def missing_file_message(path: Path) -> str:
    return (f"{path}: MedMNIST file not found; medcf never downloads data: get "
            f"{_flag(path) or 'the'}.npz from the MedMNIST Zenodo record {MEDMNIST_URL} "
            "(or `python -m medmnist download`) and pass its local path")


def _flag(path: Path) -> str:
    """``chestmnist_64.npz`` -> ``chestmnist``."""
    return re.sub(r"_\d+$", "", path.stem.lower())


class MedMNISTDataset(Dataset):
    """A MedMNIST 2D ``.npz`` file as a medcf dataset (see module doc).

    Args:
        path: local ``.npz`` file.
        split: "train", "val", "test" or None (all, concatenated).
        resolution: output size (None keeps the file's size).
        channels: 1 or 3 (None keeps the file's channels).
        label_index: for multi-label files, the column used as a binary label.
        class_names: override the class names.
    """

    def __init__(self, path: str | os.PathLike, *, split: str | None = None,
                 resolution: int | None = None, channels: int | None = None,
                 label_index: int | None = None, class_names: Sequence[str] | None = None):
        path = Path(path)
        self.source = str(path)
        check_resolution(resolution, where=self.source)
        check_channels(channels, where=self.source)
        self.skipped = 0
        if not path.is_file():
            raise DataError(missing_file_message(path))
        check_split(split, where=str(path))
        images, labels, label_width = self._read(path, split, label_index)
        self._images = images  # list of uint8 arrays [N_i, H, W(, 3)]
        self._labels = labels  # list of int64 arrays [N_i]
        self._starts = np.cumsum([0] + [len(a) for a in images])
        if self._starts[-1] == 0:
            raise DataError(f"{path}: no images in split {split or 'train/val/test'}")
        h, w = images[0].shape[1:3]
        if h != w and resolution is None:
            raise DataError(f"{path}: images are {w}x{h} (not square); pass resolution=N")
        self.resolution: int = resolution if resolution is not None else h
        self.channels: int = channels if channels is not None else (3 if images[0].ndim == 4 else 1)
        self.split = split
        self.class_names = self._class_names(path, class_names, label_width, label_index)

    def _read(self, path: Path, split: str | None, label_index: int | None):
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = set(npz.files)
                wanted = [split] if split is not None else [s for s in SPLITS if f"{s}_images" in keys]
                if not wanted:
                    raise DataError(f"{path}: no train_images/val_images/test_images arrays "
                                    f"(keys: {', '.join(sorted(keys))}); not a MedMNIST file")
                images, labels, width = [], [], 1
                for s in wanted:
                    if f"{s}_images" not in keys or f"{s}_labels" not in keys:
                        raise DataError(f"{path}: no '{s}_images'/'{s}_labels' arrays "
                                        f"(keys: {', '.join(sorted(keys))})")
                    x, y = npz[f"{s}_images"], npz[f"{s}_labels"]
                    y, width = self._check(path, s, x, y, label_index)
                    images.append(x)
                    labels.append(y)
        except DataError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"{path}: unreadable .npz file ({first_line(e)})") from e
        return images, labels, width

    @staticmethod
    def _check(path: Path, s: str, x: np.ndarray, y: np.ndarray, label_index: int | None):
        rgb = x.ndim == 4 and x.shape[3] == 3
        if not (x.ndim == 3 or rgb):
            raise DataError(f"{path}: {s}_images has shape {x.shape}; medcf reads 2D MedMNIST "
                            "([N, H, W] or [N, H, W, 3]), not 3D volumes")
        if x.dtype != np.uint8:
            raise DataError(f"{path}: {s}_images has dtype {x.dtype}; expected uint8")
        y = np.asarray(y)
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or len(y) != len(x):
            raise DataError(f"{path}: {s}_labels has shape {y.shape} for {len(x)} images")
        width = y.shape[1]
        if width > 1:
            if label_index is None:
                raise DataError(f"{path}: multi-label file ({width} labels per image); pass "
                                f"label_index=K (0..{width - 1}) for a binary task on one finding")
            if not 0 <= label_index < width:
                raise DataError(f"{path}: label_index {label_index} out of range 0..{width - 1}")
            y = y[:, label_index]
        else:
            y = y[:, 0]
        return y.astype(np.int64), width

    def _class_names(self, path: Path, class_names, width: int, label_index: int | None):
        if class_names is not None:
            names = tuple(class_names)
        elif width > 1:
            known = KNOWN_CLASS_NAMES.get(_flag(path))
            finding = known[label_index] if known and len(known) == width else f"label{label_index}"
            names = (f"no_{finding}", finding)
        else:
            known = KNOWN_CLASS_NAMES.get(_flag(path))
            k = int(max(int(y.max()) for y in self._labels if len(y)) + 1)
            names = known if known and len(known) >= k else tuple(str(i) for i in range(k))
        top = max(int(y.max()) for y in self._labels if len(y))
        if min(int(y.min()) for y in self._labels if len(y)) < 0 or top >= len(names):
            raise DataError(f"{path}: labels outside 0..{len(names) - 1} for class names {names}")
        return names

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def labels(self) -> list[int]:
        """Class index of every item, in item order."""
        return np.concatenate(self._labels).tolist()

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        part = int(np.searchsorted(self._starts, i, side="right") - 1)
        j = i - int(self._starts[part])
        arr = self._images[part][j].astype(np.float32) / 255.0  # [H, W(, 3)]
        return {
            "image": pixels_to_tensor(arr, self.resolution, self.channels),
            "label": torch.tensor(int(self._labels[part][j]), dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
        }

    def verify(self) -> None:
        """Nothing to decode lazily: the arrays were checked when the file was read."""

    def __repr__(self) -> str:
        return (f"MedMNISTDataset({self.source!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.class_names}, resolution={self.resolution})")
