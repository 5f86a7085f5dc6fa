"""Speed and memory of the synthetic benchmark on one core.

Prints (1) rendering speed in images/s at --resolution (numpy samples, and torch
dataset items), (2) wall time and resident memory while ``write_synthetic``
writes --n images to disk: RSS sampled every 0.2 s during the write, and the
process's peak RSS (``ru_maxrss``, includes importing torch).

    python benchmarks/bench_synthetic.py                 # quick: 2,000 images written
    python benchmarks/bench_synthetic.py --n 100000      # the full streaming check
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: set before numpy/torch load their BLAS

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from medcf.data.synthetic import SynthConfig, SyntheticDataset, render_sample  # noqa: E402
from medcf.data.synthetic_writer import write_synthetic  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rate(fn, n: int) -> tuple[float, float]:
    """Items per wall-clock second and per CPU second of this process (robust to a busy machine)."""
    fn(0)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="images to write")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--task", default="cardiomegaly")
    ap.add_argument("--render-n", type=int, default=3000, help="images for the rendering-speed figure")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=None, help="output folder (default: a temporary one, deleted after)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}, "
          f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    cfg = SynthConfig(task=args.task, resolution=args.resolution)
    r_np = rate(lambda i: render_sample(cfg, 0, i), args.render_n)
    ds = SyntheticDataset(cfg, n=args.render_n)
    r_ds = rate(lambda i: ds[i], args.render_n)
    print(f"render {args.task} {args.resolution}px: {r_np[0]:.0f} images/s wall, {r_np[1]:.0f} per CPU-second "
          f"(numpy samples); {r_ds[0]:.0f} wall, {r_ds[1]:.0f} per CPU-second (SyntheticDataset items)")

    out = args.out or tempfile.mkdtemp(prefix="bench_synth_")
    samples, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            samples.append(rss_mb())
            time.sleep(0.2)

    before, c0 = rss_mb(), time.process_time()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        summary = write_synthetic(cfg, args.n, out, overwrite=True, workers=args.workers, progress=False)
    except BaseException:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        stop.set()
        thread.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q = len(samples) // 10 or 1
    cpu = time.process_time() - c0
    print(f"write {args.n} images ({args.workers} worker(s)): {summary.seconds:.1f} s wall, "
          f"{args.n / summary.seconds:.0f} images/s; {cpu:.1f} CPU-s in this process")
    print(f"RSS before write {before:.0f} MB; during write: first 10% max {max(samples[:q]):.0f} MB, "
          f"last 10% max {max(samples[-q:]):.0f} MB, overall max {max(samples):.0f} MB; "
          f"peak RSS (ru_maxrss) {peak:.0f} MB")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
