"""Subprocess worker for tests/test_engine.py: a few SGD steps, saving gradients and batches.

Single process:  python tests/_ddp_worker.py OUT
Two processes:   python -m torch.distributed.run --standalone --nproc_per_node 2 \
                     tests/_ddp_worker.py OUT [--split 2]

With ``--split K`` the run stops after K steps and a fresh Trainer (other initial
weights) resumes it to the end, so the result also checks a distributed resume.

Every rank writes OUT/grads_rank{r}.pt with the (all-reduced) gradients and the sample
indices it saw at each step; the main process writes the run under OUT/run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medcf.io import SavableModule
from medcf.train import Hook, TrainConfig, Trainer

STEPS, BATCH = 3, 8


@dataclass(frozen=True)
class LinConfig:
    pixels: int = 16


class LinNet(SavableModule):  # no batch norm: per-sample losses are independent
    kind = "test-lin"
    config_class = LinConfig

    def __init__(self, config: LinConfig):
        super().__init__(config)
        self.fc1 = nn.Linear(config.pixels, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):  # [B,1,4,4] -> [B,3]
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


class ToyData(torch.utils.data.Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(500 + i)
        return {"image": torch.rand(1, 4, 4, generator=g) * 2 - 1,
                "label": torch.tensor(i % 3), "index": torch.tensor(i)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--split", type=int, default=0,
                    help="train to this step, then resume in a fresh Trainer with fresh weights")
    args = ap.parse_args(argv)
    out = Path(args.out)
    record = {"grads": [], "indices": []}

    def step_fn(tr, batch):
        model, o = tr.models["model"], tr.optimizers["model"]
        loss = F.cross_entropy(model(batch["image"]), batch["label"])
        o.zero_grad(set_to_none=True)
        tr.backward(loss)
        record["grads"].append({k: p.grad.detach().clone()
                                for k, p in tr.unwrap("model").named_parameters()})
        record["indices"].append(batch["index"].clone())
        o.step()
        return {"loss": loss.item()}

    def trainer(steps: int, init_seed: int) -> Trainer:
        torch.manual_seed(init_seed)
        net = LinNet(LinConfig())
        opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
        config = TrainConfig(out_dir=str(out / "run"), steps=steps, batch_size=BATCH, seed=3,
                             log_every=1, checkpoint_every=2, progress=False)
        return Trainer(config, models={"model": net}, optimizers={"model": opt},
                       dataset=ToyData(), step_fn=step_fn,
                       hooks=[Hook(every=1, fn=lambda tr: {"world": tr.world_size})])

    if args.split:
        trainer(args.split, init_seed=0).fit()
        tr = trainer(STEPS, init_seed=123)  # wrong initial weights: resume must replace them
        tr.fit(resume=True)
    else:
        tr = trainer(STEPS, init_seed=0)
        tr.fit()
    record["world_size"] = tr.world_size
    torch.save(record, out / f"grads_rank{tr.rank}.pt")


if __name__ == "__main__":
    main()
