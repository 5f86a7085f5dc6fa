"""The run directory of the shared training engine: file names, clearing a run, and
removing what an interrupted atomic write left behind.

Layout (see ``medcf.train.engine``)::

    RUN_DIR/model/  RUN_DIR/train_state.pt  RUN_DIR/stats.jsonl  RUN_DIR/run.json  RUN_DIR/tb/

Example:
    >>> clear_run_dir("runs/vae")     # doctest: +SKIP
    ['model', 'run.json', 'stats.jsonl', 'train_state.pt']
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from medcf.errors import MedcfError

logger = logging.getLogger(__name__)

STATE_NAME = "train_state.pt"
STATS_NAME = "stats.jsonl"
RUN_NAME = "run.json"


def line_step(line: str) -> int:
    """The step of a stats.jsonl line; -1 for a torn or foreign line."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1


def clear_run_dir(run_dir: str | os.PathLike) -> list[str]:
    """Remove what the engine writes in a run directory (state, run.json, stats, model/,
    tb/, interrupted writes) so that a new run can start there; other files are kept.
    Returns the names removed. Used by ``--overwrite`` and to restart a run that
    stopped before its first checkpoint.

    Example:
        >>> clear_run_dir("runs/vae")     # doctest: +SKIP
        ['model', 'run.json', 'stats.jsonl', 'train_state.pt']
    """
    run_dir = Path(run_dir)
    if run_dir.is_symlink():
        raise MedcfError(f"{run_dir}: --out is a symbolic link; refusing to clear it")
    if not run_dir.is_dir():
        return []
    removed = []
    for entry in sorted(run_dir.iterdir()):
        name = entry.name
        ours = name in (STATE_NAME, RUN_NAME, STATS_NAME, "model", "tb") or (
            name.startswith(".") and any(k in name for k in (STATE_NAME, "model", RUN_NAME, STATS_NAME)))
        if not ours:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(name)
    return removed


def clean_stale_writes(run_dir: Path) -> None:
    """Remove temporaries of atomic writes interrupted by a kill (restoring model/ if needed)."""
    model = run_dir / "model"
    olds = sorted(run_dir.glob(".model.*.old"))
    if not model.exists() and olds:  # killed between the two renames of atomic_write_dir
        olds[-1].rename(model)
        logger.warning("%s: restored model/ from an interrupted checkpoint write", run_dir)
    for p in [*run_dir.glob(".model.*.tmp"), *run_dir.glob(".model.*.old"),
              *run_dir.glob(f".{STATE_NAME}.*.tmp"), *run_dir.glob(f".{STATS_NAME}.*.tmp"),
              *run_dir.glob(f".{RUN_NAME}.*.tmp")]:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


__all__ = ["RUN_NAME", "STATE_NAME", "STATS_NAME", "clean_stale_writes", "clear_run_dir", "line_step"]
