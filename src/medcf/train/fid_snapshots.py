"""Domain-FID snapshots during training: one engine ``Hook`` shared by the recipes.

Every ``every`` engine steps (and after the last one) the FID (``medcf.eval.fid.FID``)
between a fixed set of real images and as many images produced by the model being
trained (samples from noise for the GAN and diffusion recipes, translations of
source-domain images for ICAM and CycleGAN) is computed on the features of a medcf
classifier run (``--fid-oracle``): domain FID, not comparable to Inception FID; the
extractor's name travels with every value. Each snapshot is one ``stats.jsonl`` record
``{"step", "fid", "fid_extractor", "fid_n_real", "fid_n_fake"}``; the recipe stores the
last one in the exported model's ``meta["fid"]`` (``FIDSnapshots.last_result``), also
after a resumed run that had nothing left to do (read back from ``stats.jsonl``).

Example:
    >>> oracle = load_fid_oracle("runs/oracle", channels=1, resolution=64)      # doctest: +SKIP
    >>> snaps = FIDSnapshots(oracle, real_subset(train_ds, 500), sample,
    ...                      every=1000, steps=4000)                           # doctest: +SKIP
    >>> hooks.append(snaps.hook)          # sample(tr, n) -> [n, C, H, W]      # doctest: +SKIP
    >>> meta["fid"] = snaps.last_result(run_dir)                               # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from medcf.errors import DataError, MedcfError

# sample_fn(trainer, n) -> [n, C, H, W] in [-1, 1]: the model's images, from fixed inputs so
# that two snapshots of the same weights agree
SampleFn = Callable[[Any, int], Tensor]


def check_fid_settings(fid_every: int, fid_n: int) -> None:
    """One-line errors for ``--fid-every`` < 0 and ``--fid-n`` < 2 (FID needs two images a side)."""
    if not isinstance(fid_every, int) or fid_every < 0:
        raise MedcfError(f"--fid-every: expected an integer >= 0 (0: only at the end), got {fid_every!r}")
    if not isinstance(fid_n, int) or fid_n < 2:
        raise MedcfError(f"--fid-n: expected an integer >= 2 (images per FID snapshot), got {fid_n!r}")


def load_fid_oracle(path: str | os.PathLike, channels: int, resolution: int,
                    flag: str = "--fid-oracle") -> nn.Module:
    """A medcf classifier run (any kind with ``features``) whose features give domain FID,
    checked on the data's image shape; a one-line ``MedcfError`` naming ``flag`` (the
    command-line option that gave the path) otherwise.

    Example:
        >>> oracle = load_fid_oracle("runs/oracle", channels=1, resolution=64)   # doctest: +SKIP
    """
    from medcf.classifiers import load_classifier

    if not Path(path).exists():
        raise MedcfError(f"{path}: {flag} not found (a classifier run, e.g. medcf train oracle)")
    try:
        model = load_classifier(path)
    except MedcfError as e:
        raise MedcfError(f"{flag} {e}") from None
    if not callable(getattr(model, "features", None)):
        raise MedcfError(f"{path}: {flag} has no features() to compute FID on")
    try:
        model.features(torch.zeros(2, channels, resolution, resolution))
    except (MedcfError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MedcfError(f"{path}: {flag} does not accept the training images ({first})") from None
    return model


def spread_indices(total: int, n: int) -> list[int]:
    """``min(n, total)`` indices spread evenly over ``range(total)`` (first and last included)."""
    n = min(n, total)
    if n <= 0:
        return []
    return torch.linspace(0, total - 1, n).round().long().tolist()


def real_subset(dataset: Dataset, n: int, indices: list[int] | None = None) -> Tensor:
    """``n`` images [n, C, R, R] spread evenly over ``dataset`` (or over ``indices`` of it)."""
    pool = list(range(len(dataset))) if indices is None else list(indices)
    return torch.stack([dataset[pool[i]]["image"] for i in spread_indices(len(pool), n)])


def translation_sets(dataset: Dataset, source: int, target: int, n: int) -> tuple[Tensor, Tensor]:
    """Up to ``n`` images of class ``source`` (to translate) and of class ``target`` (the real
    set), each spread evenly over that class: ([n_s, C, H, W], [n_t, C, H, W])."""
    from medcf.train.domains import dataset_labels

    labels = dataset_labels(dataset)
    pools = [[i for i, v in enumerate(labels) if v == c] for c in (source, target)]
    for c, pool in zip((source, target), pools, strict=True):
        if len(pool) < 2:
            raise DataError(f"FID snapshots: need at least 2 training images of class {c}, found {len(pool)}")
    return real_subset(dataset, n, pools[0]), real_subset(dataset, n, pools[1])


def last_logged_fid(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The last FID snapshot in RUN_DIR/stats.jsonl as ``{"fid", "extractor", "n_real",
    "n_fake", "step"}``, or None."""
    path = Path(run_dir) / "stats.jsonl"
    if not path.is_file():
        return None
    found = None
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("fid"), int | float):
            found = rec
    if found is None:
        return None
    return {"fid": float(found["fid"]), "extractor": found.get("fid_extractor"),
            "n_real": found.get("fid_n_real"), "n_fake": found.get("fid_n_fake"), "step": found.get("step")}


class FIDSnapshots:
    """Domain-FID snapshots as an engine hook: ``FID(oracle)`` of ``real`` [n, C, H, W]
    against ``sample_fn(trainer, n)`` every ``every`` engine steps (0: only after the last
    of ``steps``).

    ``hook`` is the ``medcf.train.engine.Hook`` to pass to the Trainer; ``last`` the latest
    result ``{"fid", "extractor", "n_real", "n_fake", "step"}`` of this process.
    """

    def __init__(self, oracle: nn.Module, real: Tensor, sample_fn: SampleFn, *, every: int, steps: int,
                 batch_size: int = 64):
        if real.ndim != 4 or real.shape[0] < 2:
            raise MedcfError(f"FID snapshots: need at least 2 real images [n, C, H, W], got {tuple(real.shape)}")
        self.oracle, self.real, self.sample_fn = oracle, real, sample_fn
        self.every, self.steps, self.batch_size = every, steps, batch_size
        self.last: dict[str, Any] | None = None

    @property
    def hook(self):
        from medcf.train.engine import Hook

        return Hook(every=self.every if self.every > 0 else self.steps, fn=self)

    def __call__(self, tr) -> dict[str, Any]:
        from medcf.eval.fid import FID

        self.oracle.to(tr.device)
        fid = FID(self.oracle)
        b = self.batch_size
        for i in range(0, self.real.shape[0], b):
            fid.update(self.real[i:i + b], real=True)
        with torch.no_grad():
            fake = self.sample_fn(tr, self.real.shape[0])                   # [n, C, H, W]
        for i in range(0, fake.shape[0], b):
            fid.update(fake[i:i + b], real=False)
        result = fid.compute()
        self.last = {**result.as_dict(), "step": tr.step}
        return {"fid": result.fid, "fid_extractor": result.extractor, "fid_n_real": result.n_real,
                "fid_n_fake": result.n_fake}

    def last_result(self, run_dir: str | os.PathLike) -> dict[str, Any] | None:
        """The latest snapshot: this run's, else the one logged in RUN_DIR/stats.jsonl (a resumed
        run that had nothing left to train)."""
        return self.last if self.last is not None else last_logged_fid(run_dir)


def translation_fid(oracle_dir: str | os.PathLike, train_ds: Dataset, domain_a: int, domain_b: int,
                    translate: Callable[[Any, Tensor, Tensor], Tensor], *, n: int,
                    every: int, steps: int, channels: int, resolution: int) -> FIDSnapshots:
    """Domain-FID snapshots of a translation backbone: ``translate(trainer, x_a, x_b)`` -> [m, C, H, W]
    (x_a [m, C, H, W]: training images of A; x_b: as many real B images, cycled, for a model that
    takes the target's code from a reference) of up to ``n`` A images against up to ``n`` real B
    images, on the features of the classifier run ``oracle_dir``. Shared by CycleGAN and ICAM.

    Example:
        >>> snaps = translation_fid("runs/oracle", ds, 0, 1, lambda tr, xa, xb: tr.unwrap("model").g_ab(xa),
        ...                         n=500, every=1000, steps=3000, channels=1, resolution=64)  # doctest: +SKIP
    """
    check_fid_settings(every, n)
    oracle = load_fid_oracle(oracle_dir, channels, resolution)
    source, real_b = translation_sets(train_ds, domain_a, domain_b, n)      # [n_a, C, H, W], [n_b, C, H, W]

    partners = real_b[torch.arange(len(source)) % len(real_b)]                 # [n_a, C, H, W]

    def translated(tr, _n: int) -> Tensor:                                  # -> [n_a, C, H, W]
        return torch.cat([translate(tr, source[i:i + 64].to(tr.device), partners[i:i + 64].to(tr.device))
                          for i in range(0, len(source), 64)])

    return FIDSnapshots(oracle, real_b, translated, every=every, steps=steps)


def keep_fid_in_meta(model: nn.Module, model_dir: str | os.PathLike, fid: dict | None) -> None:
    """Re-save ``model`` at ``model_dir`` with ``meta["fid"] = fid`` (nothing when ``fid`` is None)."""
    if fid:
        from medcf.io import read_header

        model.save(model_dir, meta={**read_header(model_dir).get("meta", {}), "fid": fid})


__all__ = ["FIDSnapshots", "SampleFn", "check_fid_settings", "last_logged_fid", "load_fid_oracle",
           "keep_fid_in_meta", "real_subset", "spread_indices", "translation_fid", "translation_sets"]
