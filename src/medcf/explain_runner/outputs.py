"""What an explanation leaves on disk: per query a GIF, a frame strip, a difference map and a JSON.

Example:
    >>> out = check_out_dir("runs/explain", overwrite=False)                 # doctest: +SKIP
    >>> write_explanation(cf, 0, out, "patient01", source="scans/p01.png")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from medcf.io import atomic_write_text, check_output, json_safe  # json_safe: re-exported
from medcf.types import Counterfactual


def _num(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _pick(info: dict, key: str, i: int):
    v = info.get(key)
    if isinstance(v, (list, tuple)) and len(v) > i:
        v = v[i]
    elif isinstance(v, Tensor):
        v = v.reshape(-1)[i].item() if v.numel() > 1 else v.item()
    return v


def query_record(cf: Counterfactual, i: int, *, name: str, source: str | None = None) -> dict:
    """The JSON-able facts of query ``i``: probabilities along the path, flip, λ, time."""
    info = cf.info if isinstance(cf.info, dict) else {}
    names = info.get("class_names")
    t = int(cf.target[i])
    rec: dict[str, Any] = {
        "name": name,
        "source": source,
        "method": info.get("method"),
        "target": t,
        "target_name": str(names[t]) if names and t < len(names) else None,
        "prob_original": _num(cf.prob_original[i]),
        "prob_counterfactual": _num(cf.prob_counterfactual[i]),
        "prob_reconstruction": _pick(info, "prob_reconstruction", i),
        "threshold": cf.threshold,
        "flipped": bool(cf.flipped[i]),
        "found": _pick(info, "found", i),
        "lambda": _pick(info, "lambda", i),
        "stop_reason": _pick(info, "stop_reason", i),
    }
    if cf.path_probs is not None:
        n = _pick(info, "n_frames", i)
        probs = cf.path_probs[:, i]
        probs = probs[: int(n)] if n is not None else probs
        rec["path_probs"] = [round(float(p), 6) for p in probs]
    for key in ("reconstruction_error", "ood_ratio", "ood"):  # medcf.eval.ood, when the model has a profile
        if key in info:
            rec[key] = _pick(info, key, i)
    for key in ("inversion", "inversion_l1", "latent_distance", "probe_accuracy"):  # latent-probe facts
        if key in info:
            rec[key] = _pick(info, key, i)
    seconds = info.get("seconds")
    if isinstance(seconds, (int, float)):
        rec["seconds"] = float(seconds) / len(cf)  # batch total split evenly
        rec["batch_seconds"] = float(seconds)
        rec["batch_size"] = len(cf)
    elif seconds is not None:
        rec["seconds"] = _pick(info, "seconds", i)
    rec["settings"] = info.get("settings")
    return rec


def write_explanation(cf: Counterfactual, i: int, out_dir: str | os.PathLike, name: str, *,
                      source: str | None = None, fps: float = 8.0, size: int | None = None) -> dict:
    """Write NAME.gif, NAME_strip.png, NAME_map.png and NAME.json for query ``i``; returns the record.

    ``size``: pixel width of the GIF and map (None: the GIF upscaled by an integer factor to at
    least ``medcf.viz.MIN_SIZE``, tens of KB for a 64 px image; the map figure at 256).

    Example:
        >>> write_explanation(cf, 0, "out", "patient01")     # doctest: +SKIP
    """
    from medcf import viz

    out = Path(out_dir)
    files = {"gif": f"{name}.gif", "strip": f"{name}_strip.png", "map": f"{name}_map.png",
             "json": f"{name}.json"}
    viz.save_gif(cf, out / files["gif"], index=i, fps=fps, size=size)
    viz.save_strip(cf, out / files["strip"], index=i, n_frames=6, size=min(size or 128, 128))
    viz.save_map(cf, out / files["map"], index=i, size=size or 256)
    rec = query_record(cf, i, name=name, source=source)
    rec["files"] = files
    atomic_write_text(out / files["json"], json.dumps(json_safe(rec), indent=2) + "\n")
    return rec


def check_out_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    """Create the output folder after the output policy's checks (``medcf.io.check_output``):
    a symlinked ``--out`` or a non-empty one without ``overwrite`` is a one-line ``OutputError``."""
    p = check_output(out, overwrite=overwrite)
    p.mkdir(parents=True, exist_ok=True)
    return p


__all__ = ["check_out_dir", "json_safe", "query_record", "write_explanation"]
