"""Is the synthetic benchmark learnable? Train small CNNs and report test figures.

Trains, on fresh samples of the synthetic benchmark (test = a disjoint index range):
  1. a cardiomegaly classifier (target: >= 97 % test accuracy at 64 px),
  2. a CTR regressor (target: MAE <= 0.02),
  3. an opacity classifier.

Usage (a GPU makes it take about a minute; on CPU use small numbers):
    python benchmarks/learn_synthetic.py --n-train 30000 --n-test 3000 --epochs 20
    python benchmarks/learn_synthetic.py --n-train 2000 --n-test 500 --epochs 2   # smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medcf.data.synthetic import SynthConfig, render_sample


def _render(args):
    config, seed, start, stop = args
    out = [render_sample(config, seed, i) for i in range(start, stop)]
    return (np.stack([s.image for s in out]), np.array([s.label for s in out]),
            np.array([s.ctr for s in out], np.float32))


def make_data(config, start, stop, seed, workers):
    chunks = [(config, seed, s, min(s + 500, stop)) for s in range(start, stop, 500)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_render, chunks)
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))[:, None]  # [N, 1, H, W]
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    c = torch.from_numpy(np.concatenate([p[2] for p in parts]))
    return x, y, c


def make_net(out: int, res: int) -> nn.Module:
    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                nn.MaxPool2d(2)]
    side = res // 16
    return nn.Sequential(*block(1, 32), *block(32, 64), *block(64, 128), *block(128, 128), nn.Flatten(),
                         nn.Linear(128 * side * side, 256), nn.ReLU(inplace=True), nn.Linear(256, out))


def train(x, target, kind, epochs, device, res, seed=0):
    """kind: 'cls' (BCE on a 0/1 label) or 'reg' (L1 on (ctr - 0.5) * 10)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = make_net(1, res).to(device)
    steps = epochs * (len(x) // 128)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    xd, td = x.to(device), target.float().to(device)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g).to(device)
        for k in range(len(x) // 128):
            idx = perm[k * 128:(k + 1) * 128]
            pred = net(xd[idx])[:, 0]
            if kind == "cls":
                loss = F.binary_cross_entropy_with_logits(pred, td[idx])
            else:
                loss = F.smooth_l1_loss(pred, (td[idx] - 0.5) * 10, beta=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def predict(net, x, device):
    return torch.cat([net(x[i:i + 1024].to(device))[:, 0].cpu() for i in range(0, len(x), 1024)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=30000)
    ap.add_argument("--n-test", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")
          + f", torch threads {torch.get_num_threads()}")
    res = args.resolution
    for task in ("cardiomegaly", "opacity"):
        cfg = SynthConfig(task=task, resolution=res)
        t0 = time.perf_counter()
        xtr, ytr, ctr_tr = make_data(cfg, 0, args.n_train, 0, args.workers)
        xte, yte, ctr_te = make_data(cfg, 10_000_000, 10_000_000 + args.n_test, 0, args.workers)
        print(f"[{task}] data: {args.n_train} train / {args.n_test} test at {res}px "
              f"in {time.perf_counter() - t0:.1f}s, positive rate {ytr.float().mean():.3f}")
        t0 = time.perf_counter()
        clf = train(xtr, ytr, "cls", args.epochs, device, res)
        acc = ((predict(clf, xte, device) > 0).long() == yte).float().mean().item()
        print(f"[{task}] classifier test accuracy {acc:.4f} ({time.perf_counter() - t0:.0f}s)")
        if task == "cardiomegaly":
            t0 = time.perf_counter()
            reg = train(xtr, ctr_tr, "reg", args.epochs, device, res)
            pred = predict(reg, xte, device) / 10 + 0.5
            mae = (pred - ctr_te).abs().mean().item()
            acc_from_reg = ((pred > 0.5).long() == yte).float().mean().item()
            print(f"[{task}] CTR regressor test MAE {mae:.4f}, accuracy of (pred > 0.5) {acc_from_reg:.4f} "
                  f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
