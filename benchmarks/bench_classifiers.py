"""Benchmark: train the four classifier roles on synthetic cardiomegaly data, report test figures.

Writes a synthetic dataset (64 px by default), trains classifier, oracle,
fo-detector and ctr-regressor with the recipe defaults, and prints each role's
test figures, wall time and the machine; the same lands in OUT/results.json.

Targets (64 px synthetic cardiomegaly): classifier accuracy >= 0.97, oracle >= 0.95,
fo-detector macro F1 >= 0.95, ctr-regressor MAE <= 0.02.

Usage:
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_classifiers.py --out runs/bench_classifiers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch

from medcf.data import SynthConfig, write_synthetic
from medcf.train.classifiers import ROLES, train_classifier

TARGETS = {
    "classifier": ("accuracy", ">=", 0.97),
    "oracle": ("accuracy", ">=", 0.95),
    "fo-detector": ("macro_f1", ">=", 0.95),
    "ctr-regressor": ("mae", "<=", 0.02),
}


def machine() -> dict:
    return {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "loadavg_start": [round(v, 2) for v in os.getloadavg()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_classifiers", help="benchmark directory")
    ap.add_argument("--n", type=int, default=8000, help="synthetic samples (80/10/10 split)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--roles", default=",".join(ROLES), help="comma-separated roles to train")
    ap.add_argument("--steps", type=int, default=None, help="override every role's default steps")
    ap.add_argument("--device", default=None)
    ap.add_argument("--data", default=None, help="use this synthetic folder instead of writing one")
    ap.add_argument("--results", default=None, help="results JSON (default OUT/results.json)")
    args = ap.parse_args()

    out = Path(args.out)
    data = Path(args.data) if args.data else out / f"synth{args.resolution}"
    info = {"machine": machine(), "n": args.n, "resolution": args.resolution, "roles": {}}
    t0 = time.perf_counter()
    if not (data / "dataset.json").is_file():
        write_synthetic(SynthConfig(task="cardiomegaly", resolution=args.resolution), args.n, data,
                        seed=0, overwrite=True)
    info["data_s"] = round(time.perf_counter() - t0, 1)
    print(f"data: {data} ({args.n} samples, {info['data_s']} s)", flush=True)

    for role in args.roles.split(","):
        run = out / role
        if run.exists():
            shutil.rmtree(run)  # a fresh run every time: this directory belongs to the benchmark
        res = train_classifier(data, run, role=role, steps=args.steps, device=args.device,
                               progress=False)
        key, op, goal = TARGETS[role]
        value = res.test[key]
        met = value >= goal if op == ">=" else value <= goal
        info["roles"][role] = {"test": res.test, "wall_s": round(res.wall_s, 1),
                               "target": f"{key} {op} {goal}", "met": bool(met),
                               "run_info": json.loads((run / "run.json").read_text()).get("run_info")
                               if (run / "run.json").is_file() else None}
        print(f"{role:>14}: {key} = {value:.4f} (target {op} {goal}: {'met' if met else 'MISSED'}), "
              f"wall {res.wall_s:.0f} s", flush=True)
        print(f"{'':>14}  {json.dumps(res.test)}", flush=True)

    info["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    info["total_s"] = round(time.perf_counter() - t0, 1)
    m = info["machine"]
    print(f"machine: {m['processor']}, {m['cpu_count']} CPUs, torch threads {m['torch_threads']}, "
          f"load average {m['loadavg_start']} -> {m['loadavg_end']} (shared machine); "
          f"total {info['total_s']} s")
    results = Path(args.results) if args.results else out / "results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(info, indent=2) + "\n")
    print(f"results: {results}")


if __name__ == "__main__":
    main()
