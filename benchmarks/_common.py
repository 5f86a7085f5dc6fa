"""Helpers shared by the explainer benchmarks (run as scripts: ``benchmarks/`` is on sys.path)."""

from __future__ import annotations

import os
import platform
import time

import torch

from medcf.explain_runner import opposite_targets


def machine() -> dict:
    """What the figures were measured on (printed and stored with them)."""
    return {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "loadavg": [round(v, 2) for v in os.getloadavg()]}


def latency(explainer, dataset, n: int) -> list[float]:
    """Wall seconds of explain() for single images (targets: opposite of the decision)."""
    times = []
    for i in range(min(n, len(dataset))):
        x = dataset[i]["image"][None]
        t = opposite_targets(explainer.classifier, x)
        t0 = time.perf_counter()
        explainer.explain(x, t)
        times.append(time.perf_counter() - t0)
    return times
