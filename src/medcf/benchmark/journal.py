"""A benchmark row's explanations, kept batch by batch, so that an interrupted row continues.

The slowest rows outlast a session (the DiME-faithful diffusion row at 64 px: hours on a
CPU). ``RowJournal`` wraps an explainer's ``explain``: it adds up the wall seconds of every
call (the row's ``sec_per_query``) and, given a folder, writes each batch's
``Counterfactual`` there as it is made (``batch-NNNNN.safetensors``: its tensors, and in the
file's metadata its threshold, its JSON ``info`` and the seconds it took). A resumed row
replays the batches it finds (same row key, same inputs and targets) instead of explaining
them again and counts their recorded seconds, so its figures are those of an uninterrupted
row (for explainers whose batches do not depend on each other, as medcf's do: each call seeds
its own random generator). ``close()`` deletes the folder once the row is finished.

Example:
    >>> journal = RowJournal(explainer, "runs/bench/rows/cardiomegaly/diffusion-dime/journal",
    ...                      key=row_hash)                                  # doctest: +SKIP
    >>> summary, rows, ex = evaluate_explainer(explainer, test, limit=400)   # doctest: +SKIP
    >>> journal.seconds, journal.replayed                                   # doctest: +SKIP
    >>> journal.close()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from torch import Tensor

from medcf.io import atomic_write, atomic_write_text
from medcf.types import Counterfactual

log = logging.getLogger(__name__)
KEY_FILE = "key.json"


class RowJournal:
    """Times ``explainer.explain`` and, with ``folder``, records and replays its batches.

    ``key`` names the row's configuration: a folder written under another key is emptied
    first, as it is with ``fresh=True`` (a row recomputed on purpose). Batches are matched
    by their order and checked against the stored input and target; the first mismatch
    drops that batch and every later one.
    """

    def __init__(self, explainer, folder: str | os.PathLike | None = None, *, key: str = "",
                 fresh: bool = False):
        self.seconds = 0.0
        self.replayed = 0                            # batches taken from the folder
        self.folder = Path(folder) if folder is not None else None
        self._next = 0
        if self.folder is not None:
            self._open(key, fresh)
        inner = explainer.explain

        def explain(x: Tensor, target) -> Counterfactual:   # x: [B, C, H, W]
            i, self._next = self._next, self._next + 1
            cf = self._replay(i, x, target)
            if cf is not None:
                return cf
            t0 = time.perf_counter()
            try:
                cf = inner(x, target)
            finally:
                dt = time.perf_counter() - t0
                self.seconds += dt
            self._record(i, x, target, cf, dt)
            return cf

        explainer.explain = explain

    def close(self) -> None:
        """Delete the folder (the row is finished and saved elsewhere)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------ files

    def _file(self, i: int) -> Path:
        return self.folder / f"batch-{i:05d}.safetensors"

    def _open(self, key: str, fresh: bool) -> None:
        try:
            old = json.loads((self.folder / KEY_FILE).read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            old = None
        if fresh or old != key:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / KEY_FILE, json.dumps({"key": key}) + "\n")

    def _drop_from(self, i: int) -> None:
        for f in self.folder.glob("batch-*.safetensors"):
            if int(f.stem.split("-")[1]) >= i:
                f.unlink(missing_ok=True)

    def _replay(self, i: int, x: Tensor, target) -> Counterfactual | None:
        if self.folder is None or not self._file(i).is_file():
            return None
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(self._file(i)), framework="pt") as f:
                meta = f.metadata() or {}
                t = {k: f.get_tensor(k) for k in f.keys()}
            same = torch.equal(t["query.x"], x.detach().cpu()) and (
                torch.equal(t["query.target"], target.detach().cpu()) if isinstance(target, Tensor)
                else meta.get("target") == json.dumps(target))
            info = json.loads(meta["info"])
            seconds, threshold = float(meta["seconds"]), float(meta["threshold"])
        except (OSError, KeyError, TypeError, ValueError, SafetensorError) as e:
            log.warning("%s: unreadable (%s); explaining from this batch on", self._file(i), e)
            same = False
        if not same:
            self._drop_from(i)
            return None
        info.update({k[len("info."):]: v.to(x.device) for k, v in t.items() if k.startswith("info.")})
        fields = {k[len("cf."):]: v.to(x.device) for k, v in t.items() if k.startswith("cf.")}
        self.seconds += seconds
        self.replayed += 1
        return Counterfactual(**fields, threshold=threshold, info=info)

    def _record(self, i: int, x: Tensor, target, cf: Counterfactual, seconds: float) -> None:
        if self.folder is None:
            return
        from safetensors.torch import save_file

        def own(v: Tensor) -> Tensor:  # a copy: safetensors refuses tensors that share memory
            return v.detach().to("cpu", copy=True).contiguous()

        tensors = {"query.x": own(x)}
        if isinstance(target, Tensor):
            tensors["query.target"] = own(target)
        for f in dataclasses.fields(cf):
            v = getattr(cf, f.name)
            if isinstance(v, Tensor):
                tensors[f"cf.{f.name}"] = own(v)
        info = cf.info if isinstance(cf.info, dict) else {}
        tensors.update({f"info.{k}": own(v) for k, v in info.items() if isinstance(v, Tensor)})
        try:
            meta = {"info": json.dumps({k: v for k, v in info.items() if not isinstance(v, Tensor)}),
                    "target": "" if isinstance(target, Tensor) else json.dumps(target),
                    "seconds": repr(float(seconds)), "threshold": repr(float(cf.threshold))}
        except (TypeError, ValueError) as e:  # an info value JSON cannot hold: the row is not journaled
            log.warning("%s: not journaling this row (%s); an interruption restarts it", self.folder, e)
            self.close()
            self.folder = None
            return
        atomic_write(self._file(i), lambda p: save_file(tensors, str(p), metadata=meta))


__all__ = ["RowJournal"]
