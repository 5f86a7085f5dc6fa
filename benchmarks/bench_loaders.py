"""Throughput of medcf.data readers on this machine (single process, no DataLoader workers).

Measures: a 64 px synthetic folder (image + 3 mask PNGs per item), a class-folder
dataset of 256x256 16-bit PNGs resized to 64, and the real 1955x1841 CR
radiograph RG1_UNCI.dcm from pydicom-data (window + resize to 256).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_loaders.py [--n 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medcf.data import SynthConfig, load_dicom, open_dataset, write_synthetic


def rate(ds, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        ds[i % len(ds)]
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, cpu_count={os.cpu_count()}, "
          f"torch threads={torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_synthetic(SynthConfig(resolution=64), args.n, tmp / "synth", progress=False)
        ds = open_dataset(tmp / "synth")
        print(f"synthetic folder 64px, all keys: {rate(ds, args.n):.0f} items/s")

        rng = np.random.default_rng(0)
        for i in range(args.n):
            cls = "a" if i % 2 else "b"
            (tmp / "folders" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 65536, (256, 256), dtype=np.uint16)).save(
                tmp / "folders" / cls / f"{i:05d}.png")
        ds = open_dataset(tmp / "folders", resolution=64)
        print(f"class folders, 16-bit 256px PNG -> 64px: {rate(ds, args.n):.0f} items/s")

    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        print("pydicom not installed: DICOM skipped")
        return
    path = get_testdata_file("RG1_UNCI.dcm")
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        load_dicom(path, resolution=256)
    print(f"RG1_UNCI.dcm 1955x1841 -> 256px: {(time.perf_counter() - t0) / reps * 1000:.0f} ms per image")


if __name__ == "__main__":
    main()
