"""Overhead of the StyleGAN2-ADA training recipe over its bare iteration, in one process.

(a) recipe: ``medcf.train.stylegan2.train_stylegan2`` on an in-memory dataset
    (engine, data loader, EMA, logging, ADA bookkeeping), timed over 16-step
    intervals (each holds exactly one lazy R1 and four lazy PL steps) after a
    warm-up interval: on CUDA wall time from the engine's ``img_per_s``; on CPU
    this process's CPU time (a long run minus a 16-step run), so that other work
    on a shared machine does not enter the figure.
(b) bare: the same networks (``build_networks``, same seed), batch, optimizers
    (``lazy_adam``) and settings, run in a plain loop on one pre-loaded batch: G main
    and D main steps plus the lazy R1 (every 16) and PL (every 4) steps; no EMA, no
    logging, no data loading, no augmentation.

Both are timed ``--repeats`` times, interleaved, and the medians reported
(``--profile`` also prints the per-step CPU time of the optimizer steps, zero_grad,
the data loader, EMA and host reads from a torch.profiler run); the last line is ``overhead_ratio=X.XX`` = median (a) / median (b).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stylegan2_training.py      # CPU, small
    .venv/bin/python benchmarks/bench_stylegan2_training.py --device cuda --config auto64
    .venv/bin/python benchmarks/bench_stylegan2_training.py --profile 32            # profile table

``--config small``: 32 px, 1 channel, batch 8, channel_base 2048, channel_max 64,
z = w = 64, 2 mapping layers (half the recipe's default widths: a loaded 2-core
machine runs it at about a second per step). ``auto64``:
the official ``--cfg auto`` at 64 px: batch 32, z = w = 512, 2 mapping layers,
channel_base 16384, channel_max 512, fp16 on the 4 highest resolutions, R1 gamma
0.0256, EMA 10 kimg.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medcf.train.stylegan2 import build_networks, lazy_adam, train_stylegan2

WINDOW = 16  # steps per timing window: one R1 (every 16) and four PL (every 4) steps

CONFIGS = {
    "small": dict(resolution=32, channels=1, batch_size=8, z_dim=64, w_dim=64, mapping_layers=2,
                  channel_base=2048, channel_max=64, fp16_res=0, r1_gamma=None, ema_kimg=None),
    "auto64": dict(resolution=64, channels=1, batch_size=32, z_dim=512, w_dim=512, mapping_layers=2,
                   channel_base=16384, channel_max=512, fp16_res=4, r1_gamma=0.0256, ema_kimg=10.0),
}


class Noise(Dataset):
    """n fixed random images [C, R, R] in [-1, 1] (label 0), decoded once."""

    def __init__(self, n: int, channels: int, resolution: int):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand([n, channels, resolution, resolution], generator=g) * 2 - 1
        self.class_names = ()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": torch.tensor(-1)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """Seconds: this process's CPU time on CPU (robust to other work on a shared machine), wall on GPU."""
    return time.process_time() if device.type == "cpu" else time.perf_counter()


def recipe_ms(cfg: dict, data: Dataset, windows: int, aug: str, num_workers: int, device: torch.device,
              profile: torch.profiler.profile | None = None) -> list[float]:
    """ms/step of the recipe over ``windows`` 16-step intervals after one warm-up interval.

    CUDA: wall time, from the engine's img_per_s per log interval. CPU: process CPU time of
    a run of 16 * (windows + 1) steps minus that of a 16-step run (setup, the warm-up
    interval and the final checkpoint cancel), one figure per call.
    """
    kw = {k: v for k, v in cfg.items() if k != "channels"}

    def run(steps: int, ctx) -> tuple[float, list[dict]]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            t0 = clock(device)
            with ctx:
                train_stylegan2(data, out, steps=steps, aug=aug, log_every=WINDOW, checkpoint_every=0,
                                sample_every=0, grid=(1, 1), progress=False, num_workers=num_workers, **kw)
            t = clock(device) - t0
            return t, [json.loads(s) for s in (out / "stats.jsonl").read_text().splitlines()]

    t_long, recs = run(WINDOW * (windows + 1), profile if profile is not None else _Null())
    if device.type != "cpu" or profile is not None:
        ips = [r["img_per_s"] for r in recs if "img_per_s" in r][1:windows + 1]
        return [1000.0 * cfg["batch_size"] / v for v in ips]
    t_short, _ = run(WINDOW, _Null())
    return [1000.0 * (t_long - t_short) / (WINDOW * windows)]


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def mixed_forward(G, z: torch.Tensor, gen: torch.Generator, prob: float = 0.9):
    """Official-style style mixing without host syncs: z [B, z_dim] -> (img [B, C, R, R], ws)."""
    ws = G.mapping(z, None)                                              # [B, num_ws, w_dim]
    n = ws.shape[1]
    cutoff = torch.randint(1, n, [], generator=gen, device=z.device)
    cutoff = torch.where(torch.rand([], generator=gen, device=z.device) < prob, cutoff, n)
    ws2 = G.mapping(torch.randn(z.shape, generator=gen, device=z.device), None, skip_w_avg_update=True)
    ws = torch.where((torch.arange(n, device=z.device) >= cutoff)[None, :, None], ws2, ws)
    return G.synthesis(ws, noise_mode="random", generator=gen), ws


def bare_ms(cfg: dict, data: Noise, windows: int, device: torch.device) -> list[float]:
    """ms/step of the bare iteration (same nets/optimizers/settings), one window per entry."""
    b, res = cfg["batch_size"], cfg["resolution"]
    G, D = build_networks(cfg["channels"], res, 0, z_dim=cfg["z_dim"], w_dim=cfg["w_dim"],
                          mapping_layers=cfg["mapping_layers"], channel_base=cfg["channel_base"],
                          channel_max=cfg["channel_max"], mbstd_group=min(4, b),
                          fp16_res=cfg["fp16_res"], seed=0)
    G.to(device).train()
    D.to(device).train()
    opt_G, opt_D = lazy_adam(G.parameters(), 0.0025, 4), lazy_adam(D.parameters(), 0.0025, 16)
    gamma = 0.0002 * res**2 / b if cfg["r1_gamma"] is None else cfg["r1_gamma"]
    real = data.images[:b].to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    pl_mean = torch.zeros([], device=device)

    def step(i: int) -> None:
        nonlocal pl_mean
        G.requires_grad_(True)
        D.requires_grad_(False)
        fake, _ = mixed_forward(G, torch.randn([b, G.z_dim], generator=gen, device=device), gen)
        loss = F.softplus(-D(fake)).mean()
        opt_G.zero_grad(set_to_none=True)
        loss.backward()
        opt_G.step()
        if i % 4 == 0:
            fake, ws = mixed_forward(G, torch.randn([b // 2, G.z_dim], generator=gen, device=device), gen)
            noise = torch.randn(fake.shape, generator=gen, device=device) / math.sqrt(res * res)
            (gw,) = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
            lengths = gw.square().sum(2).mean(1).sqrt()
            pl_mean = pl_mean.lerp(lengths.mean().detach(), 0.01)
            opt_G.zero_grad(set_to_none=True)
            ((lengths - pl_mean).square().mean() * 2.0 * 4).backward()
            opt_G.step()
        G.requires_grad_(False)
        D.requires_grad_(True)
        with torch.no_grad():
            fake, _ = mixed_forward(G, torch.randn([b, G.z_dim], generator=gen, device=device), gen)
        loss = (F.softplus(D(fake)) + F.softplus(-D(real))).mean()
        opt_D.zero_grad(set_to_none=True)
        loss.backward()
        opt_D.step()
        if i % 16 == 0:
            x = real.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
            opt_D.zero_grad(set_to_none=True)
            ((gx.square().sum([1, 2, 3]) * (gamma / 2)).mean() * 16).backward()
            opt_D.step()

    times = []
    for w in range(windows + 1):  # the first window warms up
        _sync(device)
        t0 = clock(device)
        for i in range(WINDOW):
            step(w * WINDOW + i)
        _sync(device)
        if w:
            times.append(1000.0 * (clock(device) - t0) / WINDOW)
    if device.type == "cpu":
        return [statistics.fmean(times)]  # one figure per call, like recipe_ms
    return times


# what the recipe does outside G/D forward/backward, by profiler label (CPU time, inclusive)
LABELS = {
    "optimizer steps": ("Optimizer.step#",),
    "zero_grad": ("Optimizer.zero_grad#",),
    "data loader": ("enumerate(DataLoader)#",),
    "EMA lerp/copy": ("aten::_foreach_lerp_", "aten::lerp_", "aten::_foreach_copy_"),
    "host reads (.item/float/tolist)": ("aten::_local_scalar_dense",),
}


def breakdown(events, steps: int) -> None:
    """Per-step CPU ms of the LABELS groups in ``prof.key_averages()`` (inclusive times)."""
    total = sum(e.self_cpu_time_total for e in events) / 1000 / steps
    print(f"breakdown over {steps} steps (profiled, CPU ms/step; total self CPU {total:.1f}):")
    for name, prefixes in LABELS.items():
        hits = [e for e in events if e.key.startswith(prefixes)]
        ms = sum(e.cpu_time_total for e in hits) / 1000 / steps
        calls = sum(e.count for e in hits) / steps
        print(f"  {name:34s} {ms:8.2f} ms/step  {calls:6.1f} calls/step  ({100 * ms / total:.1f} %)")


def count_host_reads(cfg: dict, data: Dataset, aug: str, steps: int = 2 * WINDOW) -> float:
    """Device-to-host scalar reads (``.item()``, ``float(t)``, ``int(t)``...; on a GPU each one
    is a synchronisation) per step of ``Trainer.fit``, its final checkpoint included."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from medcf.train import engine

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    fit = engine.Trainer.fit

    def counted(self, *a, **k):
        with Count():
            return fit(self, *a, **k)

    engine.Trainer.fit = counted
    try:
        kw = {k: v for k, v in cfg.items() if k != "channels"}
        with tempfile.TemporaryDirectory() as tmp:
            train_stylegan2(data, Path(tmp) / "run", steps=steps, aug=aug, log_every=WINDOW,
                            checkpoint_every=0, sample_every=0, grid=(1, 1), progress=False, **kw)
    finally:
        engine.Trainer.fit = fit
    return Count.n / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--config", choices=sorted(CONFIGS), default=None,
                    help="small (CPU default) | auto64 (CUDA default)")
    ap.add_argument("--windows", type=int, default=2, help="timed 16-step windows per run")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved recipe/bare runs")
    ap.add_argument("--aug", choices=("none", "ada"), default="none",
                    help="recipe augmentation (the bare loop never augments)")
    ap.add_argument("--workers", type=int, default=0, help="recipe data-loader workers")
    ap.add_argument("--n", type=int, default=512, help="images in the in-memory dataset")
    ap.add_argument("--count-reads", action="store_true",
                    help="count device-to-host scalar reads per recipe step (32 steps) and exit")
    ap.add_argument("--profile", type=int, default=0, metavar="ROWS",
                    help="profile one recipe run with torch.profiler and print the top ROWS ops")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    if device.type == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"  # the engine picks the accelerator itself
    cfg = CONFIGS[args.config or ("auto64" if device.type == "cuda" else "small")]
    data = Noise(args.n, cfg["channels"], cfg["resolution"])
    print(f"# {platform.node()} {platform.processor() or platform.machine()} cpus={os.cpu_count()} "
          f"threads={torch.get_num_threads()} torch={torch.__version__} device={device} "
          f"config={args.config or ('auto64' if device.type == 'cuda' else 'small')} aug={args.aug} "
          f"loadavg={os.getloadavg()[0]:.2f}")
    if device.type == "cuda":
        print(f"# gpu={torch.cuda.get_device_name(device)}")

    if args.count_reads:
        print(f"host_reads_per_step={count_host_reads(cfg, data, args.aug):.2f} "
              "(Trainer.fit over 32 steps, final checkpoint included)")
        return
    if args.profile:
        acts = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        prof = torch.profiler.profile(activities=acts)
        recipe_ms(cfg, data, args.windows, args.aug, args.workers, device, profile=prof)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        events = prof.key_averages()
        print(events.table(sort_by=sort, row_limit=args.profile))
        breakdown(events, WINDOW * (args.windows + 1))

    if not args.repeats:
        return
    rec, bare = [], []
    for r in range(args.repeats):
        rec += recipe_ms(cfg, data, args.windows, args.aug, args.workers, device)
        bare += bare_ms(cfg, data, args.windows, device)
        print(f"repeat {r}: recipe {statistics.median(rec):.1f} ms/step, bare {statistics.median(bare):.1f} "
              f"ms/step (medians so far; loadavg {os.getloadavg()[0]:.2f})", flush=True)
    a, b = statistics.median(rec), statistics.median(bare)
    kimg = cfg["batch_size"] / 1000
    what = "process CPU time" if device.type == "cpu" else "wall time"
    print(f"recipe_ms_per_step={a:.1f} ({a / 1000 / kimg:.2f} s/kimg)  bare_ms_per_step={b:.1f} "
          f"({b / 1000 / kimg:.2f} s/kimg)  ({what}; per-repeat ratios "
          f"{', '.join(f'{x / y:.2f}' for x, y in zip(rec, bare, strict=True))})" if device.type == "cpu" else
          f"recipe_ms_per_step={a:.1f} ({a / 1000 / kimg:.2f} s/kimg)  bare_ms_per_step={b:.1f} "
          f"({b / 1000 / kimg:.2f} s/kimg)  ({what}, {len(rec)} windows of {WINDOW} steps)")
    print(f"overhead_ratio={a / b:.2f}")


if __name__ == "__main__":
    main()
