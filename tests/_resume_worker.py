"""Subprocess worker for tests/test_engine.py: a tiny training run that can SIGKILL itself.

    python tests/_resume_worker.py RUN_DIR [--kill-at K --kill-mode start|mid] [--resume]
                                   [--workers N]

The run exercises every source of state the engine must restore: Adam moments, an LR
scheduler, EMA, an extra_state object, dropout (global torch RNG), python/numpy global
RNG, ``tr.generator`` noise, and a dataset whose length (37) is not a multiple of the
batch (8), so batches cross epoch boundaries.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medcf.io import SavableModule
from medcf.train import Hook, TrainConfig, Trainer

STEPS, CKPT_EVERY, LOG_EVERY, BATCH = 24, 5, 3, 8


@dataclass(frozen=True)
class TinyConfig:
    channels: int = 4


class TinyNet(SavableModule):
    kind = "test-tiny"
    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__(config)
        self.conv = nn.Conv2d(1, config.channels, 3, padding=1)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(config.channels, 2)

    def forward(self, x):  # [B,1,8,8] -> [B,2]
        h = F.relu(self.conv(x)).mean(dim=(2, 3))
        return self.head(self.drop(h))


class ToyData(torch.utils.data.Dataset):
    def __len__(self):
        return 37

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(1000 + i)
        x = torch.rand(1, 8, 8, generator=g) * 2 - 1
        return {"image": x, "label": torch.tensor(i % 2), "index": torch.tensor(i)}


class RunningSum:
    """extra_state: accumulates a number from every step (like ADA's p)."""

    def __init__(self):
        self.total = 0.0

    def state_dict(self):
        return {"total": self.total}

    def load_state_dict(self, state):
        self.total = float(state["total"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--kill-at", type=int, default=-1)
    ap.add_argument("--kill-mode", choices=("start", "mid"), default="start")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--mixed-precision", default="no")
    args = ap.parse_args()

    torch.manual_seed(0)  # identical initial weights in every invocation
    net = TinyNet(TinyConfig())
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    extra = RunningSum()

    def step_fn(tr, batch):
        if tr.step == args.kill_at and args.kill_mode == "start":
            os.kill(os.getpid(), signal.SIGKILL)
        x = batch["image"]
        x = x + 0.1 * torch.randn(x.shape, generator=tr.generator, device=x.device)
        if random.random() < 0.5:  # python global RNG
            x = x.flip(-1)
        x = x * float(1.0 + 0.1 * np.random.rand())  # numpy global RNG
        model, o = tr.models["model"], tr.optimizers["model"]
        loss = F.cross_entropy(model(x), batch["label"])  # dropout: torch global RNG
        o.zero_grad(set_to_none=True)
        tr.backward(loss)
        if tr.step == args.kill_at and args.kill_mode == "mid":
            os.kill(os.getpid(), signal.SIGKILL)
        o.step()
        sched.step()
        extra.total += loss.item()
        return {"loss": loss.item()}

    config = TrainConfig(out_dir=args.run_dir, steps=STEPS, batch_size=BATCH, seed=7,
                         log_every=LOG_EVERY, checkpoint_every=CKPT_EVERY, ema_decay=0.8,
                         num_workers=args.workers, mixed_precision=args.mixed_precision,
                         progress=False)
    trainer = Trainer(config, models={"model": net}, optimizers={"model": opt},
                      schedulers={"model": sched}, dataset=ToyData(), step_fn=step_fn,
                      extra_state=extra, run_info={"worker": "resume"},
                      hooks=[Hook(every=4, fn=lambda tr: {"extra_total": extra.total})])
    trainer.fit(resume=args.resume)


if __name__ == "__main__":
    main()
