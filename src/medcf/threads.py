"""CPU thread settings that adapt to the machine medcf actually gets.

PyTorch sizes its thread pool from the machine's cores, not from the CPUs this
process may use (``taskset``/``sched_setaffinity``) or the container's CPU quota
(cgroup ``cpu.max``), and OpenMP threads spin-wait between parallel regions. On a
shared machine this oversubscribes the cores and burns them in spin loops while
other jobs wait. ``configure_threads`` sets, before torch is imported (the CLI calls
it first thing), one thread per usable CPU and a passive OpenMP wait policy; a user's
own ``OMP_NUM_THREADS``/``OMP_WAIT_POLICY`` always win.

Example::

    from medcf.threads import configure_threads, usable_cpus
    configure_threads()          # before `import torch` for the wait policy to apply
    print(usable_cpus())         # e.g. 2 in a 2-CPU container on a 64-core host
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), or None."""
    try:
        fields = (root / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max" and int(fields[1]) > 0:
            return int(fields[0]) / int(fields[1])
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup quota (>= 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def configure_threads(threads: int | None = None) -> int:
    """Size torch's CPU thread pool to the usable CPUs; passive OpenMP waiting.

    ``threads`` overrides the count. Returns the count in effect. Environment
    variables the user set are kept; when torch is already imported the intra-op
    pool is resized directly (the wait policy then applies to new processes only).
    """
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    n = max(1, threads if threads is not None else usable_cpus())
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    # Idle OpenMP workers sleep instead of spinning (GNU and LLVM/Intel runtimes).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
