"""Write the synthetic benchmark to disk (streaming) and draw sample grids for docs.

Folder format (read back by ``medcf.data.open_dataset``)::

    DIR/dataset.json           {"format": "medcf-synthetic", "version": 1, "task", "resolution",
                                "n", "seed", "class_names", "fo_names", "nuisance_names", "config"}
    DIR/metadata.csv           index,split,image,label,ctr,lesion,pacemaker,electrodes,marker,
                               spurious,<nuisance names>,heart_mask,lesion_mask,fo_mask,
                               blunted,effusion_mask
    DIR/images/000000.png      8-bit grey, pixel = round((x + 1) / 2 * 255)
    DIR/masks/000000_heart.png 0/255;  000000_lesion.png 0/255 (only when a lesion exists)
    DIR/masks/000000_effusion.png 0/255 (only when a recess is blunted)
    DIR/masks/000000_fo.png    1 * pacemaker + 2 * electrodes + 4 * marker

Samples are rendered, saved and forgotten one at a time (flat memory); the CSV
is written row by row under a temporary name and ``dataset.json`` is written
last, so an interrupted run never looks like a complete dataset.

Example:
    >>> from medcf.data.synthetic import SynthConfig
    >>> from medcf.data.synthetic_writer import write_synthetic
    >>> summary = write_synthetic(SynthConfig(resolution=32), 20, "/tmp/synth_demo",
    ...                           overwrite=True, progress=False)   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medcf.data.synthetic import (
    CLASS_NAMES,
    FO_NAMES,
    NUISANCE_NAMES,
    SynthConfig,
    SynthSample,
    render_sample,
)
from medcf.errors import DataError
from medcf.io import atomic_write, atomic_write_text
from medcf.progress import tqdm  # a live bar on a terminal, plain lines in a log

log = logging.getLogger(__name__)

FORMAT, VERSION = "medcf-synthetic", 1
CSV_COLUMNS = (("index", "split", "image", "label", "ctr", "lesion") + FO_NAMES + ("spurious",)
               + NUISANCE_NAMES + ("heart_mask", "lesion_mask", "fo_mask", "blunted", "effusion_mask"))
_OWN_ENTRIES = ("dataset.json", "metadata.csv", "images", "masks")
_CHUNK = 256  # samples per worker task


@dataclass(frozen=True)
class WriteSummary:
    """What ``write_synthetic`` produced."""

    out_dir: str
    n: int
    label_counts: tuple[int, ...]   # per class index
    seconds: float


def split_of(index: int) -> str:
    """The split of sample ``index``: 'test' for index % 10 == 9, 'val' for 8, else 'train'."""
    r = index % 10
    return "test" if r == 9 else "val" if r == 8 else "train"


def _num(x: float) -> str:
    """Shortest text that reads back to the same float32."""
    return np.format_float_positional(np.float32(x), unique=True, trim="-")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[-1, 1] float -> 8-bit grey with pixel = round((x + 1) / 2 * 255)."""
    return np.round((np.clip(image, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _write_one(sample: SynthSample, index: int, root: Path) -> list[str]:
    """Save one sample's PNGs under ``root`` and return its CSV row."""
    stem = f"{index:06d}"
    image = f"images/{stem}.png"
    heart, fo = f"masks/{stem}_heart.png", f"masks/{stem}_fo.png"
    _save_png(root / image, to_uint8(sample.image))
    _save_png(root / heart, sample.heart_mask.astype(np.uint8) * 255)
    packed = (sample.fo_masks[0] * 1 + sample.fo_masks[1] * 2 + sample.fo_masks[2] * 4).astype(np.uint8)
    _save_png(root / fo, packed)
    lesion = ""
    if sample.lesion:
        lesion = f"masks/{stem}_lesion.png"
        _save_png(root / lesion, sample.lesion_mask.astype(np.uint8) * 255)
    effusion = ""
    if sample.blunted:
        effusion = f"masks/{stem}_effusion.png"
        _save_png(root / effusion, sample.effusion_mask.astype(np.uint8) * 255)
    flags = [str(int(f)) for f in sample.fo_flags]
    return ([str(index), split_of(index), image, str(sample.label), _num(sample.ctr),
             str(int(sample.lesion))] + flags + [str(int(sample.spurious))]
            + [_num(v) for v in sample.nuisance] + [heart, lesion, fo, str(int(sample.blunted)), effusion])


def _write_chunk(args: tuple[SynthConfig, int, int, int, str]) -> list[list[str]]:
    config, seed, start, stop, root = args
    return [_write_one(render_sample(config, seed, i), i, Path(root)) for i in range(start, stop)]


def _rows(config: SynthConfig, n: int, seed: int, root: Path, workers: int) -> Iterator[list[str]]:
    if workers <= 1:
        for i in range(n):
            yield _write_one(render_sample(config, seed, i), i, root)
        return
    tasks = [(config, seed, s, min(s + _CHUNK, n), str(root)) for s in range(0, n, _CHUNK)]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        for rows in pool.imap(_write_chunk, tasks):  # ordered: the CSV stays sorted by index
            yield from rows


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: output path exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out}: output directory is not empty (pass overwrite=True / --overwrite to replace it)")
        for name in _OWN_ENTRIES:  # remove only what a previous write produced
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)


def write_synthetic(config: SynthConfig, n: int, out_dir: str | os.PathLike, seed: int = 0, *,
                    overwrite: bool = False, workers: int = 1, progress: bool = True) -> WriteSummary:
    """Render samples ``0..n-1`` of ``(config, seed)`` into ``out_dir`` in the medcf-synthetic format.

    ``workers`` > 1 renders and saves in that many processes (rows stay in index
    order). A non-empty ``out_dir`` is refused unless ``overwrite`` is set, in which
    case only the entries this writer creates (dataset.json, metadata.csv, images/,
    masks/) are removed first.

    Example:
        >>> write_synthetic(SynthConfig(task="opacity", resolution=64), 5000, "data/synth")  # doctest: +SKIP
    """
    if n <= 0:
        raise DataError(f"write_synthetic: n must be > 0, got {n}")
    if seed < 0:
        raise DataError(f"write_synthetic: seed must be >= 0, got {seed}")
    out = Path(out_dir)
    _prepare(out, overwrite)
    t0 = time.perf_counter()
    counts = [0] * len(CLASS_NAMES[config.task])
    label_col = CSV_COLUMNS.index("label")

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            rows = _rows(config, n, seed, out, max(1, int(workers)))
            for row in tqdm(rows, total=n, desc="synth", unit="img", disable=not progress):
                writer.writerow(row)
                counts[int(row[label_col])] += 1

    atomic_write(out / "metadata.csv", write_csv)
    header = {"format": FORMAT, "version": VERSION, "task": config.task,
              "resolution": config.resolution, "n": n, "seed": seed,
              "class_names": list(config.class_names), "fo_names": list(FO_NAMES),
              "nuisance_names": list(NUISANCE_NAMES), "config": dataclasses.asdict(config)}
    atomic_write_text(out / "dataset.json", json.dumps(header, indent=2) + "\n")
    seconds = time.perf_counter() - t0
    log.info("wrote %d synthetic samples to %s in %.1f s", n, out, seconds)
    return WriteSummary(str(out), n, tuple(counts), seconds)


def save_sample_grid(config: SynthConfig, path: str | os.PathLike, *, n: int = 8, seed: int = 0,
                     offset: int = 0) -> Path:
    """Save a PNG with ``n`` samples: the image, then mask overlays (heart/lesion/fluid, objects).

    Example:
        >>> save_sample_grid(SynthConfig(resolution=128), "docs/img/synthetic_grid.png")  # doctest: +SKIP
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.6 * n, 5.0), dpi=100)
    axes = fig.subplots(3, n, squeeze=False)
    fo_cmap = ListedColormap([(0, 0, 0, 0), (1.0, 0.2, 0.2, 0.7), (0.2, 0.6, 1.0, 0.7), (1.0, 0.9, 0.1, 0.8)])
    task_cmap = ListedColormap([(0, 0, 0, 0), (0.1, 0.9, 0.3, 0.45), (1.0, 0.3, 0.9, 0.7)])
    for j in range(n):
        s = render_sample(config, seed, offset + j)
        for ax in axes[:, j]:
            ax.imshow(s.image, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        task_layer = np.where(s.lesion_mask | s.effusion_mask, 2, np.where(s.heart_mask, 1, 0))
        axes[1, j].imshow(task_layer, cmap=task_cmap, vmin=0, vmax=2, interpolation="nearest")
        fo_layer = np.zeros(s.image.shape, int)
        for k in range(len(FO_NAMES)):
            fo_layer[s.fo_masks[k]] = k + 1
        axes[2, j].imshow(fo_layer, cmap=fo_cmap, vmin=0, vmax=3, interpolation="nearest")
        name = config.class_names[s.label]
        axes[0, j].set_title(f"{name}\nCTR {s.ctr:.2f}" + (" +token" if s.spurious else ""), fontsize=8)
        objs = [f for f, on in zip(FO_NAMES, s.fo_flags, strict=True) if on]
        axes[2, j].set_xlabel(", ".join(objs) or "no objects", fontsize=7)
    axes[1, 0].set_ylabel("heart / lesion / fluid", fontsize=8)
    axes[2, 0].set_ylabel("foreign objects", fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda p: fig.savefig(p, format="png"))
