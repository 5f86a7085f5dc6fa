"""A resumable, shardable batch sampler and seed derivation for the training engine.

The data stream is the concatenation of per-epoch permutations of ``range(n)``;
epoch ``e`` uses ``randperm(n)`` seeded from ``(seed, e)``. Global batch ``k``
covers stream positions ``[k*B, (k+1)*B)`` (it may cross an epoch boundary, so
no sample is ever dropped and datasets smaller than a batch work). With ``W``
processes, rank ``r`` takes the slice ``[r*B/W, (r+1)*B/W)`` of every global
batch, so the union over ranks is exactly the single-process batch.

Because the stream is a pure function of ``(seed, n, B)``, the position after
``k`` batches is ``(epoch, offset) = divmod(k*B, n)`` and resuming is exact.

Example:
    >>> s = ResumableBatchSampler(10, batch_size=4, seed=0)
    >>> batch = next(iter(s)); len(batch)
    4
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from medcf.errors import MedcfError


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (seed, step, rank, ...); stable across runs/platforms."""
    words = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2)
    return int((int(words[0]) << 31) ^ int(words[1])) & 0x7FFFFFFFFFFFFFFF


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """[n] int64: the sample order of ``epoch`` (same on every process)."""
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, 0x5A11))
    return torch.randperm(n, generator=g)


class ResumableBatchSampler:
    """Infinite batch sampler (for ``DataLoader(batch_sampler=...)``) yielding this rank's indices.

    Args:
        n: dataset length.
        batch_size: GLOBAL batch size (summed over processes).
        seed: run seed; the order depends only on (seed, n, batch_size).
        rank, world_size: this process and the number of processes; ``batch_size``
            must be divisible by ``world_size``.
        start_batch: number of global batches already consumed (resume position).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, *, rank: int = 0,
                 world_size: int = 1, start_batch: int = 0):
        if n < 1:
            raise MedcfError("training dataset is empty")
        if batch_size < 1 or batch_size % world_size:
            raise MedcfError(f"batch_size={batch_size} must be a positive multiple of the "
                             f"number of processes ({world_size})")
        if not 0 <= rank < world_size:
            raise MedcfError(f"rank={rank} outside world_size={world_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start_batch = start_batch
        self.local_batch = batch_size // world_size

    def position(self, batches_done: int) -> dict[str, int]:
        """The stream position after ``batches_done`` global batches (for train_state)."""
        epoch, offset = divmod(batches_done * self.batch_size, self.n)
        return {"epoch": epoch, "offset": offset, "batches": batches_done}

    def global_batch(self, k: int) -> torch.Tensor:
        """[batch_size] int64: indices of global batch ``k`` (all ranks)."""
        epoch, offset = divmod(k * self.batch_size, self.n)
        parts, need = [], self.batch_size
        while need > 0:
            perm = epoch_permutation(self.n, self.seed, epoch)
            take = perm[offset:offset + need]
            parts.append(take)
            need -= take.numel()
            epoch, offset = epoch + 1, 0
        return torch.cat(parts)

    def __iter__(self) -> Iterator[list[int]]:
        lo = self.rank * self.local_batch
        epoch, offset = divmod(self.start_batch * self.batch_size, self.n)
        perm = epoch_permutation(self.n, self.seed, epoch)
        while True:  # walk the stream, one global batch at a time
            batch: list[torch.Tensor] = []
            need = self.batch_size
            while need > 0:
                if offset == self.n:
                    epoch, offset = epoch + 1, 0
                    perm = epoch_permutation(self.n, self.seed, epoch)
                take = perm[offset:offset + need]
                batch.append(take)
                offset += take.numel()
                need -= take.numel()
            yield torch.cat(batch)[lo:lo + self.local_batch].tolist()
