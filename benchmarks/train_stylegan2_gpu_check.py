"""GPU check of the StyleGAN2-ADA recipe: fp32 and fp16 (``fp16_res``) training on CUDA.

Renders ``--n`` synthetic 64x64 cardiomegaly images, then per precision trains
``--steps`` steps of ``medcf.train.stylegan2.train_stylegan2`` (batch 32, ADA,
lazy R1 and PL; cuDNN autotuning off unless ``--cudnn-benchmark``: ADA's padding
changes the input shapes every step) and prints seconds per step (after a warm-up
run of 20 steps),
images per second, the final ADA p and the last logged losses; exits non-zero
when a loss is not finite or G_ema's samples are not.

    PYTHONPATH=src python benchmarks/train_stylegan2_gpu_check.py /tmp/sg2gpu --steps 300
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import torch


def last_stats(run: Path) -> dict:
    lines = (run / "stats.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--precisions", default="fp32,fp16", help="fp32 (fp16_res=0), fp16 (fp16_res=2)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark = True (autotunes every new input shape)")
    args = ap.parse_args()

    from medcf.data import SynthConfig, write_synthetic
    from medcf.generators.stylegan2 import Generator
    from medcf.train.stylegan2 import train_stylegan2

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, {platform.python_version()}, "
          f"cudnn.benchmark {args.cudnn_benchmark}")
    data = args.out / "data"
    if not (data / "dataset.json").is_file():
        t0 = time.perf_counter()
        write_synthetic(SynthConfig(task="cardiomegaly", resolution=64), args.n, data, seed=0, progress=False)
        print(f"data: {args.n} images in {time.perf_counter() - t0:.0f} s")
    ok = True
    for name in args.precisions.split(","):
        fp16_res = {"fp32": 0, "fp16": 2}[name]
        run = args.out / f"sg2_{name}"
        shutil.rmtree(run, ignore_errors=True)
        common = dict(resolution=64, batch_size=32, channel_base=2048, channel_max=128, ada_kimg=100,
                      fp16_res=fp16_res, sample_every=0, checkpoint_every=10_000, progress=False, log_every=20)
        train_stylegan2(data, run, steps=20, **common)  # warm-up (cuDNN autotuning, allocator)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = train_stylegan2(data, run, steps=args.steps, resume=True, **common)
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / (args.steps - 20)
        stats = last_stats(run)
        losses = {k: stats[k] for k in ("loss_G", "loss_D", "loss_r1", "loss_pl", "D_real", "D_fake")
                  if k in stats}
        G = Generator.load(res.model_dir).cuda()
        with torch.no_grad():
            img = G(torch.randn(16, G.z_dim, device="cuda"), None, noise_mode="const")
        finite = all(math.isfinite(v) for v in losses.values()) and bool(torch.isfinite(img).all())
        ok &= finite
        print(f"{name} (fp16_res={fp16_res}): {dt * 1000:.1f} ms/step, {32 / dt:.0f} img/s, "
              f"{res.kimg:.1f} kimg, ADA p {res.augment_p:.3f}, finite={finite}, last: "
              + ", ".join(f"{k} {v:.3f}" for k, v in losses.items()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
