"""Settings of the shared training engine: ``TrainConfig`` (engine options every recipe
shares) and ``Hook`` (a periodic callback), with the ``StepFn`` signature.

Example:
    >>> cfg = TrainConfig("runs/clf", steps=1000, batch_size=32, ema_decay=0.999)
    >>> hook = Hook(every=100, fn=lambda tr: {"acc": 0.5})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from medcf.errors import MedcfError

if TYPE_CHECKING:
    from medcf.train.engine import Trainer

MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Engine settings shared by every recipe (the recipe's own settings go in ``run_info``)."""

    out_dir: str  # run directory
    steps: int  # total optimizer steps
    batch_size: int = 64  # global batch size (split across processes)
    seed: int = 0
    log_every: int = 50  # stats.jsonl line + progress-bar refresh
    checkpoint_every: int = 500  # 0 = only at the end
    ema_decay: float | None = None  # EMA of the exported model
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16" (GPU only; CPU falls back to "no")
    tensorboard: bool = False
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        def bad(msg: str) -> MedcfError:
            return MedcfError(f"TrainConfig.{msg}")

        if not str(self.out_dir):
            raise bad("out_dir must not be empty")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise bad(f"steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise bad(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not isinstance(self.log_every, int) or self.log_every < 1:
            raise bad(f"log_every must be an integer >= 1, got {self.log_every!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise bad(f"checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise bad(f"ema_decay must be in [0, 1) or None, got {self.ema_decay!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise bad(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise bad(f"num_workers must be an integer >= 0, got {self.num_workers!r}")


@dataclass(frozen=True)
class Hook:
    """Call ``fn(trainer)`` every ``every`` steps (and after the last step when ``at_end``).

    The returned dict (or None) is logged to stats.jsonl / TensorBoard: numbers as
    scalars, strings in stats.jsonl only, [C,H,W] / [B,C,H,W] tensors in [-1, 1] as
    TensorBoard images. With ``main_process_only`` (default) it runs on rank 0 only, so
    use ``tr.unwrap(name)`` / ``tr.ema_model()`` there rather than the DDP-wrapped model.
    """

    every: int
    fn: Callable[[Trainer], Mapping[str, Any] | None]
    at_end: bool = True
    main_process_only: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 1:
            raise MedcfError(f"Hook.every must be an integer >= 1, got {self.every!r}")


# step_fn returns floats or 0-dim tensors; tensors are summed on the device and read only
# every log_every steps (no host sync per step)
StepFn = Callable[["Trainer", dict[str, Tensor]], Mapping[str, float | Tensor]]


__all__ = ["MIXED_PRECISION", "Hook", "StepFn", "TrainConfig"]
