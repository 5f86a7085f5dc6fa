"""Two image domains from one labelled dataset, for the translation backbones (CycleGAN, ICAM).

``resolve_domains`` turns ``--domain-a`` / ``--domain-b`` (class names or indices) into
class indices with one-line errors for unknown, identical or empty classes;
``UnpairedDomains`` serves unpaired (A, B) pairs, one image of each domain per item,
so every batch holds ``image_a`` [B, C, H, W] and ``image_b`` [B, C, H, W].
``grid_hook`` writes fixed-input sample grids during training.

Example:
    >>> a, b = resolve_domains(ds, "normal", "cardiomegaly", where="data/synth64")  # doctest: +SKIP
    >>> pairs = UnpairedDomains(ds, a, b, seed=0)                                   # doctest: +SKIP
    >>> pairs[0]["image_a"].shape                                                   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from medcf.errors import DataError, MedcfError


def dataset_labels(ds: Dataset) -> list[int]:
    """Class index of every item: the dataset's ``labels`` when it has them, else read item by item."""
    base, idx = ds, None
    if isinstance(ds, Subset):
        base, idx = ds.dataset, list(ds.indices)
    labels = getattr(base, "labels", None)
    if labels is not None:
        labels = [int(v) for v in labels]
        return [labels[i] for i in idx] if idx is not None else labels
    return [int(ds[i]["label"]) for i in range(len(ds))]


def class_names_of(ds: Dataset) -> tuple[str, ...]:
    base = ds.dataset if isinstance(ds, Subset) else ds
    return tuple(str(n) for n in (getattr(base, "class_names", ()) or ()))


def _one(value: str | int | None, names: tuple[str, ...], flag: str, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
        i = int(value)
        if 0 <= i < max(len(names), 2):
            return i
    raise DataError(f"{where}: {flag} {value!r} is not a class of the data (classes: {list(names) or [0, 1]})")


def resolve_domains(ds: Dataset, domain_a: str | int | None, domain_b: str | int | None, *,
                    where: str = "data") -> tuple[int, int]:
    """(class index of domain A, of domain B); None picks classes 0 and 1.

    Raises ``DataError``/``MedcfError`` (one line) for an unknown class, the same class
    twice, or a domain without training images (one-class data).
    """
    names = class_names_of(ds)
    a = _one(domain_a, names, "--domain-a", where, 0)
    b = _one(domain_b, names, "--domain-b", where, 1)
    if a == b:
        raise MedcfError(f"--domain-a and --domain-b: both name class {_name(a, names)!r}; give two "
                         "different classes")
    labels = dataset_labels(ds)
    for flag, c in (("--domain-a", a), ("--domain-b", b)):
        if labels.count(c) == 0:
            raise DataError(f"{where}: no training images of class {_name(c, names)!r} ({flag}); "
                            "translation needs images of both domains")
    return a, b


def _name(i: int, names: tuple[str, ...]) -> str:
    return names[i] if 0 <= i < len(names) else str(i)


class UnpairedDomains(Dataset):
    """Item i: ``{"image_a", "image_b"}``, image i of domain A (cycled) and a seeded-random
    partner of domain B; length max(|A|, |B|). The pairing is fixed at construction, so a
    resumed run sees the same data."""

    def __init__(self, ds: Dataset, domain_a: int, domain_b: int, *, seed: int = 0):
        labels = dataset_labels(ds)
        self.ds = ds
        self.index_a = [i for i, v in enumerate(labels) if v == domain_a]
        self.index_b = [i for i, v in enumerate(labels) if v == domain_b]
        if not self.index_a or not self.index_b:
            raise DataError("UnpairedDomains: both domains need at least one image")
        n = len(self)
        g = torch.Generator().manual_seed(seed)
        self.order_a = torch.randperm(n, generator=g) % len(self.index_a)
        self.order_b = torch.randperm(n, generator=g) % len(self.index_b)

    def __len__(self) -> int:
        return max(len(self.index_a), len(self.index_b))

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        a = self.ds[self.index_a[int(self.order_a[i])]]["image"]
        b = self.ds[self.index_b[int(self.order_b[i])]]["image"]
        return {"image_a": a, "image_b": b}


def fixed_images(ds: Dataset, domain: int, n: int) -> Tensor:
    """The first ``n`` images [n', C, H, W] of class ``domain`` (n' <= n) for sample grids."""
    labels = dataset_labels(ds)
    idx = [i for i, v in enumerate(labels) if v == domain][:n]
    return torch.stack([ds[i]["image"] for i in idx])


def grid_pairs(val: Dataset | None, train: Dataset, domain_a: int, domain_b: int, n: int = 8
               ) -> tuple[Tensor, Tensor]:
    """Up to ``n`` fixed images of each domain (same count) for sample grids: from ``val`` when
    it holds both domains, else from ``train``. -> ([m, C, H, W], [m, C, H, W])"""
    for ds in (val, train):
        if ds is None or len(ds) == 0:
            continue
        labels = dataset_labels(ds)
        if domain_a in labels and domain_b in labels:
            x_a, x_b = fixed_images(ds, domain_a, n), fixed_images(ds, domain_b, n)
            m = min(len(x_a), len(x_b))
            return x_a[:m], x_b[:m]
    raise DataError("sample grid: no images of both domains")


def grid_hook(translate: Callable[[Any, Tensor, Tensor], Tensor], x_a: Tensor, x_b: Tensor,
              rows_per_domain: int) -> Callable:
    """A ``Hook`` fn writing RUN_DIR/samples/STEP.png: ``translate(trainer, x_a, x_b)`` returns
    the grid images [rows * cols, C, H, W] in row order; ``rows_per_domain`` rows per domain."""
    from medcf.train.recipe_common import write_step_grid

    def sample_grid(tr) -> dict[str, Any]:
        with torch.no_grad():
            images = translate(tr, x_a.to(tr.device), x_b.to(tr.device))
        return write_step_grid(tr, images, 2 * rows_per_domain)

    return sample_grid


def open_split(data: str | os.PathLike, split: str, resolution: int | None) -> Dataset:
    """``medcf.data.open_dataset`` of one split, with a one-line error for a missing path."""
    from medcf.data import open_dataset

    if not Path(data).exists():
        raise DataError(f"{data}: data not found")
    return open_dataset(data, split=split, resolution=resolution)


__all__ = ["UnpairedDomains", "class_names_of", "dataset_labels", "fixed_images", "grid_hook", "grid_pairs",
           "open_split", "resolve_domains"]
