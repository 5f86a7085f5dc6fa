"""Stages of ``medcf benchmark`` cached by a hash of their configuration.

A stage (synthetic data, a judge model, a method's backbone) lives in
``ROOT/NAME-HASH`` where HASH is the first 12 hex digits of the SHA-256 of its
configuration (canonical JSON), so a changed setting is a new folder and a
re-run skips every finished stage. ``STAGE_FILE`` inside marks it finished and
records its wall time (summed over interrupted attempts). An interrupted
training stage is continued from its last checkpoint (the training engine's
exact resume) when its folder holds one, else restarted.

Prepare hooks of the method table (``MethodSpec.prepare``) use ``cached_stage``
for their backbones, which is how ``train_min`` is measured for them;
``profile_stage`` is that hook for a backbone sized by its profile table alone;
``data_resolution`` is the image side a hook trains at.

Example:
    >>> from medcf.benchmark.cache import cached_stage
    >>> run = cached_stage("out/cache", "vae", {"steps": 600},
    ...                    lambda d, resume: train_autoencoder(data, d, steps=600, resume=resume))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from medcf.io import atomic_write_text
from medcf.train.engine_rundir import STATE_NAME  # the training engine's resume state

STAGE_FILE = "benchmark-stage.json"


def config_hash(config: Any) -> str:
    """12 hex digits of the SHA-256 of ``config`` as canonical JSON (sorted keys)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def stage_dir(root: str | os.PathLike, name: str, config: Any) -> Path:
    """``ROOT/NAME-HASH``: where the stage with this configuration lives."""
    return Path(root) / f"{name}-{config_hash(config)}"


def stage_record(path: str | os.PathLike) -> dict | None:
    """The finished-stage record of a stage folder, or None when it is not finished."""
    p = Path(path) / STAGE_FILE
    if not p.is_file():
        return None
    rec = json.loads(p.read_text())
    return rec if rec.get("done") else None


def _mark(path: Path, rec: dict) -> None:
    atomic_write_text(path / STAGE_FILE, json.dumps(rec, indent=2, default=str) + "\n")


def cached_stage(root: str | os.PathLike, name: str, config: Any,
                 run: Callable[[Path, bool], Any], *, resumable: bool = True) -> Path:
    """Run ``run(stage_folder, resume)`` unless the stage with ``config`` is finished; the folder.

    ``resume`` is True when an interrupted attempt left a training checkpoint there
    (``resumable`` stages only); otherwise a partial folder is removed first. ``run``
    writes into the folder (a training run directory, a dataset, ...).
    """
    path = stage_dir(root, name, config)
    if stage_record(path) is not None:
        return path
    previous = 0.0
    marker = path / STAGE_FILE
    if marker.is_file():
        previous = float(json.loads(marker.read_text()).get("seconds", 0.0))
    resume = resumable and (path / STATE_NAME).is_file()
    if resume:  # a killed attempt never wrote its seconds: the checkpoint's training time is the floor
        previous = max(previous, _checkpoint_elapsed(path / STATE_NAME))
    if path.exists() and not resume:
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    rec = {"name": name, "config": config, "done": False, "seconds": previous}
    _mark(path, rec)
    t0 = time.perf_counter()
    try:
        run(path, resume)
    finally:
        rec["seconds"] = previous + time.perf_counter() - t0
        _mark(path, rec)
    rec["done"] = True
    _mark(path, rec)
    return path


def stage_checkpoint_every(steps: int) -> int:
    """Engine steps between a benchmark stage's resume checkpoints: a quarter of the run, at
    least 50 and at most 1,000, so that a multi-hour CPU training stopped from outside (a killed
    session, a pre-empted job) loses at most 1,000 steps when ``--resume`` picks it up.

    Example:
        >>> stage_checkpoint_every(300), stage_checkpoint_every(3000), stage_checkpoint_every(12000)
        (75, 750, 1000)
    """
    return max(50, min(int(steps) // 4, 1000))


def _checkpoint_elapsed(state_file: Path) -> float:
    """The training seconds a resume checkpoint records (0.0 when it cannot be read: the
    training's own resume reports that file's problem)."""
    import torch

    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        return float(state.get("elapsed", 0.0)) if isinstance(state, dict) else 0.0
    except Exception:  # noqa: BLE001 - any unreadable file: no floor
        return 0.0


def profile_stage(out_dir: str | os.PathLike, name: str, data_dir: str | os.PathLike,
                  profile: Mapping[str, Any], defaults: Mapping[str, Any], seed: int,
                  train: Callable[[dict, Path, bool], Any], *,
                  normalise: Callable[[dict], None] | None = None,
                  explain: Mapping[str, Any] | None = None) -> dict:
    """The ``prepare`` hook of a backbone sized by its ``[methods.NAME]`` profile table.

    The stage's configuration (its cache key) is ``{"data": str(data_dir), **defaults,
    **table, "seed": seed}`` where ``table`` is ``profile`` without its ``explain``
    sub-table; ``normalise(config)``, when given, then edits it in place (e.g. casts a
    list's items, so that ``8.0`` and ``8`` are one stage). ``train(config, stage_folder,
    resume)`` trains into the folder when the stage is not finished. Returns the build
    keywords ``{"generator_dir", **explain, **profile["explain"]}``.

    Example:
        >>> kw = profile_stage("out/methods/cyclegan/cardiomegaly", "cyclegan", "out/cache/data",
        ...                    {"steps": 150}, {"width": 8, "steps": 300}, 0,
        ...                    lambda cfg, d, resume: train_cyclegan("out/cache/data", d, resume=resume,
        ...                                                          steps=int(cfg["steps"])))  # doctest: +SKIP
    """
    table = {k: v for k, v in profile.items() if k != "explain"}
    cfg = {"data": str(data_dir), **defaults, **table, "seed": seed}
    if normalise is not None:
        normalise(cfg)
    run = cached_stage(out_dir, name, cfg, lambda d, resume: train(cfg, d, resume))
    return {"generator_dir": str(run), **(explain or {}), **profile.get("explain", {})}


def data_resolution(data_dir: str | os.PathLike) -> int:
    """The side in pixels of the first training image of a dataset (what a backbone is trained at)."""
    from medcf.data import open_dataset

    return int(open_dataset(data_dir, split="train")[0]["image"].shape[-1])


def stage_seconds(paths) -> float:
    """Total recorded wall seconds of the finished stages among ``paths`` (folders; others ignored)."""
    total = 0.0
    for p in paths:
        rec = stage_record(p) if p is not None and Path(p).is_dir() else None
        if rec is not None:
            total += float(rec.get("seconds", 0.0))
    return total
