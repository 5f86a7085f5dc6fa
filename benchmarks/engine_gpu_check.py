"""GPU check of the training engine: tests, fp16/bf16 runs, SIGKILL + resume on CUDA.

    PYTHONPATH=src python benchmarks/engine_gpu_check.py OUT_DIR [no|fp16|bf16 ...]

Prints one line per check and the machine; exits non-zero if a check fails.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "_resume_worker.py")


def worker(run: Path, *args: str) -> subprocess.CompletedProcess:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, WORKER, str(run), *args], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    print(f"  worker {run.name} {' '.join(args)}: rc={p.returncode} {time.perf_counter() - t:.1f}s",
          flush=True)
    if p.returncode not in (0, -9):
        print(p.stderr[-3000:])
    return p


def max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def main() -> int:
    out = Path(sys.argv[1])
    print(f"machine: {platform.processor() or platform.machine()}, cpus={os.cpu_count()}, "
          f"torch={torch.__version__}, cuda={torch.cuda.is_available()}, "
          f"gpu={torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}", flush=True)
    ok = True
    for mp in sys.argv[2:] or ("no", "fp16", "bf16"):
        base, killed = out / f"base_{mp}", out / f"kill_{mp}"
        ok &= worker(base, "--mixed-precision", mp).returncode == 0
        p = worker(killed, "--mixed-precision", mp, "--kill-at", "13", "--kill-mode", "mid")
        ok &= p.returncode == -9
        ok &= worker(killed, "--mixed-precision", mp, "--resume").returncode == 0
        state = torch.load(killed / "train_state.pt", weights_only=True)
        d = max_diff(base, killed)
        finite = all(torch.isfinite(v).all() for v in state["models"]["model"].values())
        print(f"{mp}: resume max|diff| exported weights = {d:.3g}, finite={finite}, "
              f"scaler saved={state['scaler'] is not None}, cuda rng saved={len(state['rng'][0]['cuda'])}",
              flush=True)
        ok &= finite and d < 1e-4
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
