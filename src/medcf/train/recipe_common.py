"""Helpers every image-generating training recipe shares (StyleGAN2, DCGAN, DDPM, ...):
opening the training split, the facts of a dataset, PNG sample grids, the last logged
figures of a run (the domain-FID oracle and snapshots are ``medcf.train.fid_snapshots``),
and the two moves of an adversarial step: ``frozen`` (update one player while the other's
parameters take no gradient) and ``optimizer_step`` (zero, backward, step one optimizer).

Example:
    >>> ds, where = open_train_split("data/synth64", 64)           # doctest: +SKIP
    >>> channels, res, class_names = dataset_facts(ds)              # doctest: +SKIP
    >>> save_grid(torch.zeros(4, 1, 8, 8), 2, "runs/x/grid.png")    # doctest: +SKIP
    >>> with frozen(d):                                             # doctest: +SKIP
    ...     optimizer_step(tr, "g", g_loss)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from medcf.errors import DataError
from medcf.io import atomic_write

log = logging.getLogger(__name__)


def open_train_split(data, resolution: int | None) -> tuple[Dataset, str]:
    """A path (train split where the data has splits, else all of it) or a Dataset as given."""
    if not isinstance(data, (str, os.PathLike)):
        return data, "data"
    from medcf.data import open_dataset

    if not Path(data).exists():
        raise DataError(f"{data}: data not found")
    try:
        return open_dataset(data, split="train", resolution=resolution), str(data)
    except DataError as e:
        log.info("%s: no train split (%s); using all images", data, e)
        return open_dataset(data, resolution=resolution), str(data)


def dataset_facts(ds: Dataset) -> tuple[int, int, tuple[str, ...]]:
    """(channels, resolution, class_names) of a dataset following the sample-dict contract."""
    base = ds.dataset if isinstance(ds, Subset) else ds
    names = tuple(getattr(base, "class_names", ()) or ())
    image = ds[0]["image"]
    return int(image.shape[0]), int(image.shape[-1]), names


def save_grid(images: Tensor, rows: int, path: str | os.PathLike) -> Path:
    """images [N, C, H, W] in [-1, 1] (N = rows * cols, C = 1 or 3) -> PNG grid at ``path``."""
    n, c, h, w = images.shape
    cols = n // rows
    a = ((images[: rows * cols].detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    a = a.reshape(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c).numpy()
    img = Image.fromarray(a[..., 0] if c == 1 else a)
    return atomic_write(path, lambda p: img.save(p, format="PNG"))


def write_step_grid(trainer, images: Tensor, rows: int, folder: str = "samples") -> dict[str, str]:
    """A sample-grid hook's output: images [N, C, H, W] -> RUN_DIR/FOLDER/STEP.png (7-digit step);
    returns the stats entry ``{"samples_png": "FOLDER/STEP.png"}``."""
    name = f"{folder}/{trainer.step:07d}.png"
    save_grid(images, rows, Path(trainer.run_dir) / name)
    return {"samples_png": name}


def last_stats(run_dir: Path) -> dict[str, float]:
    """The last logged value of every numeric key in stats.jsonl."""
    out: dict[str, float] = {}
    path = run_dir / "stats.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            out.update({k: float(v) for k, v in rec.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` take no gradient inside the block; their flags are restored after."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def optimizer_step(trainer, name: str, loss: Tensor) -> None:
    """One update of the trainer's optimizer ``name`` on ``loss``: zero the gradients (to None),
    backward through the trainer (mixed precision / DDP aware), step."""
    optimizer = trainer.optimizers[name]
    optimizer.zero_grad(set_to_none=True)
    trainer.backward(loss)
    optimizer.step()


__all__ = ["dataset_facts", "frozen", "last_stats", "open_train_split", "optimizer_step", "save_grid",
           "write_step_grid"]
