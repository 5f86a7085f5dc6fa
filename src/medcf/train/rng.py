"""Global RNG states (torch CPU/CUDA, numpy, python) as tensors and plain containers.

The engine stores these in ``train_state.pt`` so that a resumed run draws the
same random numbers (dropout, user code on the global generators) as an
uninterrupted one; everything here survives ``torch.load(weights_only=True)``.

Example:
    >>> state = capture_rng_state()
    >>> a = torch.rand(1); restore_rng_state(state); bool(torch.rand(1) == a)
    True
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from medcf.errors import CheckpointError
from medcf.train.sampler import derive_seed


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed torch (all devices), numpy and python from ``(seed, rank)``."""
    s = derive_seed(seed, rank, 0x61_0BA1)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


def capture_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()  # ('MT19937', uint32[624], pos, has_gauss, cached_gaussian)
    py_version, py_words, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": int(py_version), "words": torch.tensor(py_words, dtype=torch.int64),
                   "gauss": py_gauss},
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    try:
        torch.set_rng_state(state["torch"].to(torch.uint8))
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                             n["has_gauss"], n["gauss"]))
        p = state["python"]
        random.setstate((p["version"], tuple(int(w) for w in p["words"].tolist()), p["gauss"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"train_state.pt: malformed RNG state ({type(e).__name__})") from e
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda])
