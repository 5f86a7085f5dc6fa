"""The shared training engine: one loop every backbone reuses.

A recipe supplies models, optimizers, a dataset and a ``step_fn`` that performs
one optimizer step on one batch; the engine does the rest: device placement,
mixed precision and multi-process DDP (via ``accelerate``), seeding, a
resumable data order, EMA of the exported model, progress bar, ``stats.jsonl``
/ TensorBoard logging, hooks, and atomic checkpoints with exact resume.

Run directory::

    RUN_DIR/model/          latest exported model (SavableModule dir, meta {"steps": ...})
    RUN_DIR/train_state.pt  resume state (weights_only=True): models, optimizers, step, EMA,
                            sampler position, RNG states, extra_state, grad scaler
    RUN_DIR/stats.jsonl     one JSON object per log interval / hook firing
    RUN_DIR/run.json        TrainConfig + run_info
    RUN_DIR/tb/             TensorBoard events (TrainConfig.tensorboard)

``TrainConfig`` / ``Hook`` live in ``medcf.train.engine_config`` and the run-directory
helpers (``clear_run_dir``) in ``medcf.train.engine_rundir``; all are importable from here.

Example:
    >>> def step_fn(tr, batch):
    ...     model, opt = tr.models["model"], tr.optimizers["model"]
    ...     loss = F.cross_entropy(model(batch["image"]), batch["label"])
    ...     opt.zero_grad(set_to_none=True); tr.backward(loss); opt.step()
    ...     return {"loss": loss.item()}
    >>> trainer = Trainer(TrainConfig("runs/clf", steps=1000), models={"model": net},
    ...                   optimizers={"model": opt}, dataset=ds, step_fn=step_fn)  # doctest: +SKIP
    >>> model_dir = trainer.fit()                                                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from medcf.errors import CheckpointError, MedcfError
from medcf.io import (
    SavableModule,
    atomic_torch_save,
    atomic_write_text,
    config_to_dict,
    load_torch_state,
)
from medcf.progress import tqdm  # a live bar on a terminal, plain lines in a log
from medcf.train.ema import EMA
from medcf.train.engine_config import Hook, StepFn, TrainConfig
from medcf.train.engine_rundir import (
    RUN_NAME,
    STATE_NAME,
    STATS_NAME,
    clean_stale_writes,
    clear_run_dir,
    line_step,
)
from medcf.train.rng import capture_rng_state, restore_rng_state, seed_everything
from medcf.train.sampler import ResumableBatchSampler, derive_seed

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class Trainer:
    """Runs ``step_fn`` for ``config.steps`` steps; see the module docstring for the run layout.

    Inside ``step_fn`` and hooks: ``tr.step`` (steps completed before this one),
    ``tr.generator`` (a ``torch.Generator`` on ``tr.device`` seeded from (seed, step, rank)),
    ``tr.device``, ``tr.accelerator``, ``tr.models`` / ``tr.optimizers`` (prepared, possibly
    DDP-wrapped), ``tr.unwrap(name)``, ``tr.ema_model()``, ``tr.backward(loss)``,
    ``tr.rank``, ``tr.world_size``, ``tr.is_main_process``, ``tr.run_dir``.

    ``schedulers`` (optional dict of LR schedulers the step_fn steps) and ``extra_state``
    (any object with ``state_dict``/``load_state_dict``, e.g. an ADA probability) are
    saved for resume; ``collate_fn`` is passed to the DataLoader.
    """

    def __init__(self, config: TrainConfig, *, models: Mapping[str, nn.Module],
                 optimizers: Mapping[str, torch.optim.Optimizer], dataset: Dataset,
                 step_fn: StepFn, export: str | None = "model", extra_state: Any = None,
                 hooks: Sequence[Hook] = (), run_info: Mapping[str, Any] | None = None,
                 schedulers: Mapping[str, Any] | None = None,
                 collate_fn: Callable | None = None):
        if not isinstance(config, TrainConfig):
            raise MedcfError(f"Trainer: config must be a TrainConfig, got {type(config).__name__}")
        if not models:
            raise MedcfError("Trainer: models must hold at least one model")
        if export is not None and export not in models:
            raise MedcfError(f"Trainer: export={export!r} is not one of models {sorted(models)}")
        if export is not None and not isinstance(models[export], SavableModule):
            raise MedcfError(f"Trainer: exported model {export!r} must be a medcf.io.SavableModule, "
                             f"got {type(models[export]).__name__}")
        if config.ema_decay is not None and export is None:
            raise MedcfError("Trainer: ema_decay needs an exported model (export=None given)")
        if extra_state is not None and not (hasattr(extra_state, "state_dict")
                                            and hasattr(extra_state, "load_state_dict")):
            raise MedcfError("Trainer: extra_state must have state_dict() and load_state_dict()")
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError as e:
            raise MedcfError("Trainer: dataset must be a map-style Dataset with len()") from e
        if n < 1:
            raise MedcfError("Trainer: dataset is empty")
        try:
            json.dumps(dict(run_info or {}))
        except (TypeError, ValueError) as e:
            raise MedcfError(f"Trainer: run_info must be JSON-serialisable ({e})") from e

        if config.tensorboard:
            _summary_writer_class()  # fail before anything is written
        self.config = config
        self.accelerator = _make_accelerator(config.mixed_precision)
        self.device: torch.device = self.accelerator.device
        self.rank: int = self.accelerator.process_index
        self.world_size: int = self.accelerator.num_processes
        if config.batch_size % self.world_size:
            raise MedcfError(f"TrainConfig.batch_size={config.batch_size} is not divisible by the "
                             f"number of processes ({self.world_size})")
        self.run_dir = Path(config.out_dir)
        self.models: dict[str, nn.Module] = dict(models)
        self.optimizers: dict[str, torch.optim.Optimizer] = dict(optimizers)
        self.schedulers: dict[str, Any] = dict(schedulers or {})
        self.dataset, self.step_fn, self.export = dataset, step_fn, export
        self.extra_state, self.hooks = extra_state, tuple(hooks)
        self.run_info = dict(run_info or {})
        self.collate_fn = collate_fn
        self.step = 0
        self.generator = torch.Generator(device=self.device)
        self.ema: EMA | None = None
        self._prepared = False
        self._elapsed_before = 0.0
        self._acc, self._acc_n = {}, {}  # per-key sums / step counts over the log interval
        self._acc_steps = 0
        self._tb = None

    # ------------------------------------------------------------------ helpers for step_fn

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()`` with mixed-precision loss scaling where enabled."""
        self.accelerator.backward(loss)

    def unwrap(self, name: str) -> nn.Module:
        """The plain module behind ``models[name]`` (no DDP / autocast wrapper)."""
        return self.accelerator.unwrap_model(self.models[name])

    def ema_model(self) -> nn.Module:
        """The EMA copy of the exported model, or the raw exported model without EMA."""
        if self.ema is not None:
            return self.ema.module
        if self.export is None:
            raise MedcfError("Trainer.ema_model: no exported model (export=None)")
        return self.unwrap(self.export)

    # ------------------------------------------------------------------ main entry

    def fit(self, resume: bool = False) -> Path:
        """Train to ``config.steps``; returns RUN_DIR/model (RUN_DIR when export=None).

        ``resume=True`` continues the run in ``out_dir`` exactly where its last checkpoint
        left it; ``resume=False`` refuses a directory that already holds a run.
        """
        cfg = self.config
        state = self._open_run_dir(resume)
        self._prepare()
        if state is not None:
            self._load_state(state)
        else:
            seed_everything(cfg.seed, self.rank)
        self._open_logs(resumed=state is not None)
        out = self.run_dir / "model" if self.export is not None else self.run_dir
        if self.step >= cfg.steps:
            logger.info("%s: already trained for %d steps (target %d); nothing to do",
                        self.run_dir, self.step, cfg.steps)
            if self.export is not None and not (out / "config.json").is_file():
                self._checkpoint()
            self._close_logs()
            return out

        sampler = ResumableBatchSampler(len(self.dataset), cfg.batch_size, cfg.seed,  # type: ignore[arg-type]
                                        rank=self.rank, world_size=self.world_size,
                                        start_batch=self.step)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                            collate_fn=self.collate_fn, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(
                                derive_seed(cfg.seed, self.step, self.rank, 0xDA7A)))
        batches = iter(loader)
        if state is not None:  # last: nothing after this may consume global randomness
            self._restore_rng(state)
        logger.info("%s: training steps %d..%d on %s x%d (batch %d, mixed precision %s)",
                    self.run_dir, self.step + 1, cfg.steps, self.device, self.world_size,
                    cfg.batch_size, self.accelerator.mixed_precision)

        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.run_dir.name, unit="step",
                   disable=not (cfg.progress and self.is_main_process), dynamic_ncols=True)
        self._t_start = self._t_interval = time.perf_counter()
        self._interval_start_step = self.step
        try:
            while self.step < cfg.steps:
                batch = _to_device(next(batches), self.device)
                self.generator.manual_seed(derive_seed(cfg.seed, self.step, self.rank))
                losses = self.step_fn(self, batch)
                if self.ema is not None:
                    self.ema.update(self.unwrap(self.export))  # type: ignore[arg-type]
                self.step += 1
                self._accumulate(losses)
                last = self.step == cfg.steps
                record: dict[str, Any] = {}
                if self.step % cfg.log_every == 0 or last:
                    record.update(self._interval_stats())
                    bar.set_postfix({k: _fmt(v) for k, v in record.items()
                                     if k not in ("step", "elapsed")}, refresh=False)
                record.update(self._run_hooks(last))
                if record and self.is_main_process:
                    self._write_record(record)
                if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or last:
                    self._checkpoint()
                bar.update(1)
        finally:
            bar.close()
            self._close_logs()
        logger.info("%s: finished %d steps in %.1f s", self.run_dir, self.step, self._elapsed())
        return out

    # ------------------------------------------------------------------ setup

    def _open_run_dir(self, resume: bool) -> dict[str, Any] | None:
        run_dir, state_path = self.run_dir, self.run_dir / STATE_NAME
        if resume:
            if not state_path.is_file():
                raise CheckpointError(f"{state_path}: no training state to resume; start a new run "
                                      "without --resume (resume=False)")
            state = load_torch_state(state_path)
            self._check_compatible(state, state_path)
        else:
            held = [p for p in (STATE_NAME, RUN_NAME, STATS_NAME, "model")
                    if (run_dir / p).exists()]
            restart = bool(held) and not (run_dir / STATE_NAME).exists() and not (run_dir / "model").exists()
            if held and not restart:
                raise MedcfError(f"{run_dir}: already holds a training run ({held[0]}); pass --resume "
                                 "(resume=True) to continue it, --overwrite to start over, or choose "
                                 "another --out")
            if restart and self.is_main_process:  # it stopped before its first checkpoint: nothing to keep
                logger.warning("%s: the previous run stopped before its first checkpoint; starting over",
                               run_dir)
                clear_run_dir(run_dir)
            state = None
        self.accelerator.wait_for_everyone()  # every rank has checked before anyone writes
        if self.is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            info = {"format": "medcf-run", "version": 1, "config": config_to_dict(self.config),
                    "run_info": self.run_info, "world_size": self.world_size,
                    "torch": torch.__version__}
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            if state is None:
                info["started"] = now
            else:
                try:
                    old = json.loads((run_dir / RUN_NAME).read_text())
                except (OSError, ValueError):
                    old = {}
                info["started"] = old.get("started", now)
                info["resumed"] = [*old.get("resumed", []), {"time": now, "step": state["step"]}]
            atomic_write_text(run_dir / RUN_NAME, json.dumps(info, indent=2) + "\n")
        self.accelerator.wait_for_everyone()
        return state

    def _check_compatible(self, state: Any, where: Path) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise CheckpointError(f"{where}: not a medcf training state (version {STATE_VERSION})")
        old = state.get("config", {})
        for key in ("batch_size", "seed"):
            if old.get(key) != getattr(self.config, key):
                raise CheckpointError(f"{where}: run used {key}={old.get(key)}, but TrainConfig has "
                                      f"{key}={getattr(self.config, key)}; resume needs the same value")
        for what, mine in (("models", self.models), ("optimizers", self.optimizers),
                           ("schedulers", self.schedulers)):
            if sorted(state.get(what, {})) != sorted(mine):
                raise CheckpointError(f"{where}: saved {what} {sorted(state.get(what, {}))} differ "
                                      f"from the trainer's {sorted(mine)}")
        if (state.get("ema") is None) != (self.config.ema_decay is None):
            raise CheckpointError(f"{where}: EMA on/off differs from TrainConfig.ema_decay")

    def _prepare(self) -> None:
        if self._prepared:
            return
        names_m, names_o = list(self.models), list(self.optimizers)
        prepared = self.accelerator.prepare(*[self.models[k] for k in names_m],
                                            *[self.optimizers[k] for k in names_o])
        if len(names_m) + len(names_o) == 1:
            prepared = (prepared,)
        self.models = dict(zip(names_m, prepared[:len(names_m)], strict=True))
        self.optimizers = dict(zip(names_o, prepared[len(names_m):], strict=True))
        if self.config.ema_decay is not None:
            self.ema = EMA(self.unwrap(self.export), self.config.ema_decay)  # type: ignore[arg-type]
        self._prepared = True

    # ------------------------------------------------------------------ state

    def _state_dict(self) -> dict[str, Any]:
        rng = capture_rng_state()
        rngs = [rng]
        if self.world_size > 1:
            from accelerate.utils import gather_object
            rngs = gather_object([rng])
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "config": config_to_dict(self.config),
            "world_size": self.world_size,
            "models": {k: self.unwrap(k).state_dict() for k in self.models},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "sampler": ResumableBatchSampler(len(self.dataset), self.config.batch_size,  # type: ignore[arg-type]
                                             self.config.seed).position(self.step),
            "rng": rngs,
            "scaler": self.accelerator.scaler.state_dict() if self.accelerator.scaler else None,
            "extra": self.extra_state.state_dict() if self.extra_state is not None else None,
            "log": {"sums": self._acc_floats(), "counts": dict(self._acc_n), "steps": self._acc_steps},
            "elapsed": self._elapsed(),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        where = self.run_dir / STATE_NAME
        try:
            for k in self.models:
                self.unwrap(k).load_state_dict(state["models"][k])
            for k, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][k])
            for k, sched in self.schedulers.items():
                sched.load_state_dict(state["schedulers"][k])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{where}: state does not fit the trainer's models/optimizers "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.extra_state is not None and state.get("extra") is not None:
            self.extra_state.load_state_dict(state["extra"])
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        if state["sampler"]["batches"] != self.step:
            raise CheckpointError(f"{where}: sampler position does not match step {self.step}")
        log = state.get("log") or {}
        self._acc, self._acc_steps = dict(log.get("sums", {})), int(log.get("steps", 0))
        self._acc_n = {k: int(log.get("counts", {}).get(k, self._acc_steps)) for k in self._acc}
        self._elapsed_before = float(state.get("elapsed", 0.0))
        logger.info("%s: resuming at step %d", self.run_dir, self.step)

    def _restore_rng(self, state: dict[str, Any]) -> None:
        rngs = state["rng"]
        if len(rngs) == self.world_size:
            restore_rng_state(rngs[self.rank])
        else:
            logger.warning("%s: saved with %d processes, resumed with %d; global RNG reseeded "
                           "(data order is unaffected)", self.run_dir, len(rngs), self.world_size)
            seed_everything(derive_seed(self.config.seed, self.step), self.rank)

    def _checkpoint(self) -> None:
        state = self._state_dict()  # collective when distributed: every rank calls it
        if self.is_main_process:
            if self.export is not None:
                exported = self.ema_model()
                exported.save(self.run_dir / "model", meta={"steps": self.step})  # type: ignore[operator]
            atomic_torch_save(state, self.run_dir / STATE_NAME)
            logger.info("%s: checkpoint at step %d", self.run_dir, self.step)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ logging

    def _open_logs(self, resumed: bool) -> None:
        self._stats_file = None
        if not self.is_main_process:
            return
        stats = self.run_dir / STATS_NAME
        if resumed:
            clean_stale_writes(self.run_dir)
        if resumed and stats.exists():  # drop lines after the checkpoint and any torn last line
            kept = [line for line in stats.read_text().splitlines()
                    if 0 <= line_step(line) <= self.step]
            atomic_write_text(stats, "".join(line + "\n" for line in kept))
        self._stats_file = stats.open("a")
        if self.config.tensorboard:
            self._tb = _summary_writer_class()(str(self.run_dir / "tb"),
                                               purge_step=self.step + 1 if resumed else None)

    def _close_logs(self) -> None:
        if self._stats_file is not None:
            self._stats_file.close()
            self._stats_file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _accumulate(self, losses: Mapping[str, Any] | None) -> None:
        for k, v in (losses or {}).items():
            if isinstance(v, Tensor):  # 0-dim: summed on its device (float64 where it exists), no sync
                v = v.detach().to(torch.float32 if v.device.type == "mps" else torch.float64)
            else:
                v = float(v)
            self._acc[k] = self._acc.get(k, 0.0) + v
            self._acc_n[k] = self._acc_n.get(k, 0) + 1
        self._acc_steps += 1

    def _acc_floats(self) -> dict[str, float]:
        """The interval sums as floats: device-side sums are read here, in one transfer."""
        out = {k: v for k, v in self._acc.items() if not isinstance(v, Tensor)}
        dev = [k for k, v in self._acc.items() if isinstance(v, Tensor)]
        if dev:
            where = self._acc[dev[0]].device
            out.update(zip(dev, torch.stack([self._acc[k].to(where) for k in dev]).tolist(), strict=True))
        return out

    def _interval_stats(self) -> dict[str, Any]:
        now = time.perf_counter()
        sums = self._acc_floats()
        keys = sorted(sums)
        means = [sums[k] / max(self._acc_n.get(k, 0), 1) for k in keys]  # over steps that logged k
        if self.world_size > 1 and keys:  # average over ranks (same keys on every rank)
            t = self.accelerator.reduce(torch.tensor(means, device=self.device), "mean")
            means = t.tolist()
        steps = self.step - self._interval_start_step
        record: dict[str, Any] = {"step": self.step, **dict(zip(keys, means, strict=True))}
        record["img_per_s"] = steps * self.config.batch_size / max(now - self._t_interval, 1e-9)
        record["elapsed"] = self._elapsed()
        lrs = {k: o.param_groups[0]["lr"] for k, o in self.optimizers.items() if o.param_groups}
        if len(lrs) == 1:
            record["lr"] = float(next(iter(lrs.values())))
        else:
            record.update({f"lr_{k}": float(v) for k, v in lrs.items()})
        self._acc, self._acc_n, self._acc_steps = {}, {}, 0
        self._t_interval, self._interval_start_step = now, self.step
        return record

    def _run_hooks(self, last: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        modes = {k: m.training for k, m in self.models.items()}
        for hook in self.hooks:
            if not (self.step % hook.every == 0 or (last and hook.at_end)):
                continue
            if hook.main_process_only and not self.is_main_process:
                continue
            result = hook.fn(self)
            if result:
                out.update(result)
        for k, m in self.models.items():  # a hook may have switched a model to eval()
            m.train(modes[k])
        if out and "step" not in out:
            out["step"] = self.step
        return out

    def _write_record(self, record: dict[str, Any]) -> None:
        line: dict[str, Any] = {"step": self.step}
        for k, v in record.items():
            if isinstance(v, Tensor) and v.numel() == 1:
                v = v.item()
            if isinstance(v, bool | int | float | str) or v is None:
                line[k] = v
            if self._tb is not None:
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(k, v, self.step)
                elif isinstance(v, Tensor) and v.ndim in (3, 4):
                    img = ((v.detach().float().cpu().clamp(-1, 1) + 1) / 2)
                    if img.ndim == 4:
                        self._tb.add_images(k, img, self.step)
                    else:
                        self._tb.add_image(k, img, self.step)
        if self._stats_file is not None:
            self._stats_file.write(json.dumps(line, allow_nan=True) + "\n")
            self._stats_file.flush()
        logger.info("step %d: %s", self.step,
                    " ".join(f"{k}={_fmt(v)}" for k, v in line.items() if k != "step"))

    def _elapsed(self) -> float:
        start = getattr(self, "_t_start", None)
        return self._elapsed_before + (time.perf_counter() - start if start is not None else 0.0)



def _make_accelerator(mixed_precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    cpu = forced_cpu or not _has_accelerator()  # cpu=True: gloo under torchrun on CPU
    if mixed_precision != "no" and cpu:
        logger.warning("mixed_precision=%r needs a GPU; training in float32 on CPU", mixed_precision)
        mixed_precision = "no"
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") not in (None, mixed_precision):
        AcceleratorState._reset_state(reset_partial_state=False)  # keep the process group
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise MedcfError("TrainConfig.tensorboard=True needs the 'tensorboard' package "
                         "(pip install tensorboard)") from e
    return SummaryWriter


def _has_accelerator() -> bool:
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


__all__ = ["TrainConfig", "Trainer", "Hook", "StepFn", "STATE_NAME", "STATS_NAME", "RUN_NAME", "clear_run_dir"]
