"""Thread settings on a busy CPU machine: the demo's classifier step under each setting.

Each setting runs in a fresh process (OpenMP reads its environment once, at torch's
import): ``default`` is torch as it starts (one thread per core, OpenMP's spin-wait
default), ``configured`` is ``medcf.threads.configure_threads()`` (one thread per
usable CPU, passive waiting; what the ``medcf`` CLI applies), ``one`` is a single
thread. The workload is the demo classifier's training step (ResNet widths
8-16-32-64 at 64 px, batch 32; src/medcf/demo.py DemoPlan.classifier). Settings
run interleaved, ``--rounds`` times, and the median step time is reported, with the
machine's load average, since the point is what happens while other jobs run.

Example:
    python benchmarks/bench_threads.py --steps 30 --rounds 3 --out benchmarks/bench_threads_results.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKER = r"""
import os, sys, time, json
if os.environ.get("MEDCF_BENCH_CONFIGURE") == "1":
    from medcf.threads import configure_threads
    configure_threads()
import torch
from medcf.classifiers import ResNetClassifier, ResNetConfig
steps = int(sys.argv[1])
torch.manual_seed(0)
cfg = ResNetConfig(in_channels=1, resolution=64, class_names=("normal", "cardiomegaly"), num_outputs=2,
                   head="softmax", widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1))
model = ResNetClassifier(cfg, seed=0)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = torch.randn(32, 1, 64, 64), torch.randint(0, 2, (32,))
def step():
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"s_per_step": (time.perf_counter() - t) / steps, "threads": torch.get_num_threads(),
                  "wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
"""

SETTINGS = {
    "default": {},
    "configured": {"MEDCF_BENCH_CONFIGURE": "1"},
    "one": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}


def run(setting: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    env.update(SETTINGS[setting])
    out = subprocess.run([sys.executable, "-c", WORKER, str(steps)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from medcf.threads import usable_cpus

    results: dict[str, list] = {k: [] for k in SETTINGS}
    loads, info = [], {}
    t0 = time.time()
    for _ in range(args.rounds):
        for name in SETTINGS:
            loads.append(os.getloadavg()[0])
            r = run(name, args.steps)
            results[name].append(r["s_per_step"])
            info[name] = {"threads": r["threads"], "wait_policy": r["wait_policy"]}
    summary = {
        "usable_cpus": usable_cpus(), "cores": os.cpu_count(), "steps": args.steps, "rounds": args.rounds,
        "load_average_1min": {"min": min(loads), "max": max(loads)}, "wall_s": round(time.time() - t0, 1),
        "median_s_per_step": {k: round(statistics.median(v), 4) for k, v in results.items()},
        "all_s_per_step": {k: [round(x, 4) for x in v] for k, v in results.items()}, "settings": info,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
