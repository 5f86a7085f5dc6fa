"""Reader of a synthetic benchmark folder written by ``medcf.data.synthetic_writer``.

Folder format (``format: "medcf-synthetic"``, version 1)::

    DIR/dataset.json   {"format", "version", "task", "resolution", "n", "seed",
                        "class_names", "fo_names", "nuisance_names", "config"}
    DIR/metadata.csv   index,split,image,label,ctr,lesion,<fo names>,spurious,
                       <nuisance names>,heart_mask,lesion_mask,fo_mask[,blunted,effusion_mask]
    DIR/images/*.png   8-bit grey, pixel = round((x + 1) / 2 * 255)
    DIR/masks/*.png    heart, lesion and effusion 0/255; fo bit-packed (bit k = fo_names[k])

The ``blunted`` and ``effusion_mask`` columns came with the effusion task; a
folder written before them reads as all recesses sharp.

Items carry every synthetic key of the sample-dict contract; ``"index"`` is the
sample's index in the benchmark (the ``index`` column), so item ``i`` of a
split matches ``SyntheticDataset(config, n, seed)[index]``. With ``resolution``
different from the stored size, the image is resized with antialiasing and the
masks are resized the same way and thresholded at 0.5.

Example:
    >>> from medcf.data import open_dataset
    >>> ds = open_dataset("data/synth", split="val")       # doctest: +SKIP
    >>> ds[0]["fo_masks"].shape                             # doctest: +SKIP
    torch.Size([3, 64, 64])
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from medcf.data.images import (
    UnreadableFileError,
    check_channels,
    check_resolution,
    check_split,
    pixels_to_tensor,
    read_pixels,
)
from medcf.errors import DataError
from medcf.io import first_line

log = logging.getLogger(__name__)

FORMAT, VERSION = "medcf-synthetic", 1


def is_synthetic_folder(path: str | os.PathLike) -> bool:
    """True when ``path/dataset.json`` declares ``"format": "medcf-synthetic"``."""
    meta = Path(path) / "dataset.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _read_mask(path: Path) -> np.ndarray:  # -> uint8 [H, W]
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "1", "P"):
                raise DataError(f"{path}: mask must be an 8-bit single-channel PNG, got mode {im.mode}")
            return np.asarray(im.convert("L") if im.mode != "L" else im)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: mask file not found") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UnreadableFileError(f"{path}: unreadable mask ({first_line(e)})") from e


class SyntheticFolderDataset(Dataset):
    """A medcf-synthetic folder as a dataset with all synthetic keys (see module doc).

    Args:
        root: the folder holding ``dataset.json``.
        split: "train", "val", "test" or None (all rows).
        resolution: output size (None = stored size).
        channels: 1 (default, as stored) or 3 (gray repeated).
        skip_unreadable: drop rows whose files are missing or undecodable.
    """

    def __init__(self, root: str | os.PathLike, *, split: str | None = None,
                 resolution: int | None = None, channels: int | None = None,
                 skip_unreadable: bool = False):
        self.root = root = Path(root)
        check_resolution(resolution, where=str(root))
        check_channels(channels, where=str(root))
        info = self._read_info(root)
        self.info = info
        self.task: str = info["task"]
        self.class_names: tuple[str, ...] = tuple(info["class_names"])
        self.fo_names: tuple[str, ...] = tuple(info["fo_names"])
        self.nuisance_names: tuple[str, ...] = tuple(info["nuisance_names"])
        self.native_resolution: int = int(info["resolution"])
        self.resolution: int = resolution if resolution is not None else self.native_resolution
        self.channels: int = channels if channels is not None else 1
        check_split(split, where=str(root))
        self.split = split
        self._read_rows(root / "metadata.csv", split)
        self.skipped = 0
        self._check_files(skip_unreadable)

    # ------------------------------------------------------------------ reading the index

    @staticmethod
    def _read_info(root: Path) -> dict:
        meta = root / "dataset.json"
        try:
            info = json.loads(meta.read_text())
        except FileNotFoundError as e:
            raise DataError(f"{meta}: not found; not a medcf synthetic folder") from e
        except (OSError, ValueError) as e:
            raise DataError(f"{meta}: unreadable JSON ({first_line(e)})") from e
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise DataError(f"{meta}: format is not {FORMAT!r}")
        if info.get("version") != VERSION:
            raise DataError(f"{meta}: unsupported {FORMAT} version {info.get('version')!r} "
                            f"(this medcf reads version {VERSION})")
        for key in ("task", "resolution", "class_names", "fo_names", "nuisance_names"):
            if key not in info:
                raise DataError(f"{meta}: missing key {key!r}")
        return info

    def _read_rows(self, path: Path, split: str | None) -> None:
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                columns = list(reader.fieldnames or [])
                rows = list(reader)
        except FileNotFoundError as e:
            raise DataError(f"{path}: metadata.csv not found in synthetic folder") from e
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{path}: unreadable CSV ({first_line(e)})") from e
        need = (["index", "split", "image", "label", "ctr", "lesion", *self.fo_names, "spurious",
                 *self.nuisance_names, "heart_mask", "lesion_mask", "fo_mask"])
        missing = [c for c in need if c not in columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        if split is not None:
            rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise DataError(f"{path}: no rows" + (f" in split {split!r}" if split else ""))
        try:
            self._index = np.array([int(r["index"]) for r in rows], dtype=np.int64)
            self._label = np.array([int(r["label"]) for r in rows], dtype=np.int64)
            floats = lambda cols: np.array([[float(r[c]) for c in cols] for r in rows],  # noqa: E731
                                           dtype=np.float32)
            self._ctr = floats(["ctr"])[:, 0]
            self._lesion = floats(["lesion"])[:, 0]
            self._fo_flags = floats(self.fo_names)
            self._spurious = floats(["spurious"])[:, 0]
            self._nuisance = floats(self.nuisance_names)
            self._blunted = np.array([float(r.get("blunted") or 0) for r in rows], dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise DataError(f"{path}: bad number in metadata ({first_line(e)})") from e
        bad = (self._label < 0) | (self._label >= len(self.class_names))
        if bad.any():
            raise DataError(f"{path}: label {int(self._label[bad][0])} out of range for "
                            f"classes {self.class_names}")
        self._files = [(r["image"], r["heart_mask"], r["lesion_mask"], r["fo_mask"],
                        r.get("effusion_mask") or "") for r in rows]

    def _paths(self, k: int) -> list[Path]:
        return [self.root / p for p in self._files[k] if p]

    def _check_files(self, skip_unreadable: bool) -> None:
        keep, bad = [], []
        for k in range(len(self._files)):
            problem = None
            for p in self._paths(k):
                if not p.is_file():
                    problem = f"{p}: not found"
                    break
            if problem is None and skip_unreadable:
                try:
                    self._load(k)
                except DataError as e:  # any per-file problem: unreadable, multi-frame, odd mode
                    problem = str(e)
            if problem is None:
                keep.append(k)
            elif skip_unreadable:
                bad.append(problem)
            else:
                raise DataError(f"{problem} (listed in {self.root / 'metadata.csv'})")
        if bad:
            self.skipped = len(bad)
            log.warning("%s: skipped %d unreadable sample(s), e.g. %s", self.root, len(bad), bad[0])
            self._select(np.array(keep, dtype=np.int64))
            if not keep:
                raise DataError(f"{self.root}: no readable samples")

    def _select(self, keep: np.ndarray) -> None:
        for name in ("_index", "_label", "_ctr", "_lesion", "_fo_flags", "_spurious", "_nuisance",
                     "_blunted"):
            setattr(self, name, getattr(self, name)[keep])
        self._files = [self._files[k] for k in keep]

    # ------------------------------------------------------------------ items

    def _resize_masks(self, m: torch.Tensor) -> torch.Tensor:  # [K, H, W] {0,1} -> [K, R, R]
        r = self.resolution
        if m.shape[-1] == r and m.shape[-2] == r:
            return m
        m = F.interpolate(m[None], size=(r, r), mode="bilinear", align_corners=False,
                          antialias=True)[0]
        return (m >= 0.5).float()

    def _load(self, k: int) -> dict[str, torch.Tensor]:
        image_rel, heart_rel, lesion_rel, fo_rel, effusion_rel = self._files[k]
        arr = read_pixels(self.root / image_rel)  # [H, W, C] in [0, 1]
        n = self.native_resolution
        if arr.shape[:2] != (n, n):
            raise DataError(f"{self.root / image_rel}: image is {arr.shape[1]}x{arr.shape[0]}, "
                            f"dataset.json says {n}x{n}")
        heart = _read_mask(self.root / heart_rel) > 127  # [H, W]
        lesion = (_read_mask(self.root / lesion_rel) > 127) if lesion_rel else np.zeros((n, n), bool)
        fo = _read_mask(self.root / fo_rel)
        effusion = ((_read_mask(self.root / effusion_rel) > 127) if effusion_rel
                    else np.zeros((n, n), bool))
        for p, m in ((heart_rel, heart), (lesion_rel, lesion), (fo_rel, fo), (effusion_rel, effusion)):
            if m.shape != (n, n):
                raise DataError(f"{self.root / p}: mask is {m.shape[1]}x{m.shape[0]}, expected {n}x{n}")
        bits = np.stack([(fo >> b) & 1 for b in range(len(self.fo_names))]).astype(np.float32)
        masks = torch.from_numpy(np.concatenate(
            [heart[None].astype(np.float32), lesion[None].astype(np.float32),
             effusion[None].astype(np.float32), bits]))
        masks = self._resize_masks(masks)  # [3 + F, R, R]
        return {
            "image": pixels_to_tensor(arr, self.resolution, self.channels),  # [C, R, R]
            "heart_mask": masks[0:1].clone(),                                 # [1, R, R]
            "lesion_mask": masks[1:2].clone(),                                # [1, R, R]
            "effusion_mask": masks[2:3].clone(),                              # [1, R, R]
            "fo_masks": masks[3:].clone(),                                    # [F, R, R]
        }

    def __len__(self) -> int:
        return len(self._files)

    @property
    def labels(self) -> list[int]:
        """Class index of every item (read from metadata.csv, no image decoding)."""
        return self._label.tolist()

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        item = self._load(i)
        return {
            "image": item["image"],
            "label": torch.tensor(int(self._label[i]), dtype=torch.int64),
            "index": torch.tensor(int(self._index[i]), dtype=torch.int64),
            "ctr": torch.tensor(float(self._ctr[i]), dtype=torch.float32),
            "heart_mask": item["heart_mask"],
            "lesion": torch.tensor(float(self._lesion[i]), dtype=torch.float32),
            "lesion_mask": item["lesion_mask"],
            "fo_flags": torch.from_numpy(self._fo_flags[i].copy()),    # [F]
            "fo_masks": item["fo_masks"],
            "spurious": torch.tensor(float(self._spurious[i]), dtype=torch.float32),
            "nuisance": torch.from_numpy(self._nuisance[i].copy()),    # [len(nuisance_names)]
            "blunted": torch.tensor(float(self._blunted[i]), dtype=torch.float32),
            "effusion_mask": item["effusion_mask"],                    # [1, R, R]
        }

    def verify(self) -> None:
        """Decode every sample now; raise the first ``DataError``."""
        for k in range(len(self)):
            self._load(k)

    def __repr__(self) -> str:
        return (f"SyntheticFolderDataset({str(self.root)!r}, split={self.split!r}, n={len(self)}, "
                f"task={self.task!r}, resolution={self.resolution})")
