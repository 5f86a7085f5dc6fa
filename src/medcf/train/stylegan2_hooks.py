"""Sample-grid and FID hooks of the StyleGAN2-ADA recipe (``medcf.train.stylegan2``), and the
collate function that keeps only what GAN training reads.

Example:
    >>> hook = Hook(every=500, fn=grid_hook((8, 8), c_dim=0, seed=0))   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from medcf.generators.stylegan2 import Generator
from medcf.train.recipe_common import write_step_grid


def collate_gan(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Only what GAN training reads: image [B, C, R, R] and label [B]."""
    return {"image": torch.stack([it["image"] for it in items]),
            "label": torch.stack([torch.as_tensor(it["label"]) for it in items])}


def fixed_inputs(G: Generator, n: int, c_dim: int, seed: int, labels: Tensor | None = None
                  ) -> tuple[Tensor, Tensor | None]:
    """Fixed-seed z [n, z_dim] on CPU, and labels c [n, K] (given, or cycling through the classes)."""
    z = torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))
    if not c_dim:
        return z, None
    if labels is None:
        labels = torch.arange(n) % c_dim
    return z, F.one_hot(labels.long(), c_dim).float()


@torch.no_grad()
def generate(G: Generator, z: Tensor, c: Tensor | None, batch: int = 64) -> Tensor:
    """G(z, c) with constant noise, in chunks. -> [n, C, R, R] on CPU."""
    dev = G.mapping.fc0.weight.device
    out = []
    for i in range(0, z.shape[0], batch):
        ci = c[i:i + batch].to(dev) if c is not None else None
        out.append(G(z[i:i + batch].to(dev), ci, noise_mode="const").cpu())
    return torch.cat(out)


def grid_hook(grid: tuple[int, int], c_dim: int, seed: int):
    rows, cols = grid

    def sample_grid(tr) -> dict[str, Any]:
        G = tr.ema_model()
        # one class per row for a conditional G (row r shows class r mod K)
        labels = (torch.arange(rows * cols) // cols) % c_dim if c_dim else None
        z, c = fixed_inputs(G, rows * cols, c_dim, seed + 1000, labels)
        images = generate(G, z, c)                              # [rows*cols, C, R, R]
        return write_step_grid(tr, images, rows)

    return sample_grid


def fid_hook(oracle: nn.Module, dataset: Dataset, n: int, c_dim: int, seed: int,
              holder: dict[str, Any]):
    from medcf.eval.fid import FID

    n = min(n, len(dataset))
    idx = np.linspace(0, len(dataset) - 1, n).round().astype(int).tolist()
    cache: dict[str, Tensor] = {}

    def fid_snapshot(tr) -> dict[str, Any]:
        if not cache:  # real images (and their labels) once, evenly spread over the data
            loader = DataLoader(Subset(dataset, idx), batch_size=64, collate_fn=collate_gan)
            batches = list(loader)
            cache["real"] = torch.cat([b["image"] for b in batches])
            cache["labels"] = torch.cat([b["label"] for b in batches])
        oracle.to(tr.device)
        G = tr.ema_model()
        z, c = fixed_inputs(G, n, c_dim, seed + 2000, cache["labels"] if c_dim else None)
        fid = FID(oracle)
        for i in range(0, n, 64):
            fid.update(cache["real"][i:i + 64], real=True)
        fake = generate(G, z, c)
        for i in range(0, n, 64):
            fid.update(fake[i:i + 64], real=False)
        result = fid.compute()
        holder["last"] = {**result.as_dict(), "step": tr.step}
        return {"fid": result.fid, "fid_extractor": result.extractor}

    return fid_snapshot


__all__ = ["collate_gan", "fid_hook", "fixed_inputs", "generate", "grid_hook"]
