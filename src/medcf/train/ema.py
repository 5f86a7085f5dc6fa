"""Exponential moving average of a module's weights.

After each optimizer step ``ema = decay * ema + (1 - decay) * param`` for every
floating-point parameter; buffers (e.g. batch-norm statistics) are copied. The
averaged copy is what the engine exports when ``TrainConfig.ema_decay`` is set.

Example:
    >>> net = torch.nn.Linear(2, 1)
    >>> ema = EMA(net, decay=0.9)
    >>> ema.update(net)          # after optimizer.step()
    >>> ema.module(torch.zeros(1, 2)).shape
    torch.Size([1, 1])
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from medcf.errors import CheckpointError, MedcfError


class EMA:
    """Holds ``module``: a frozen deep copy of the model whose weights track the average."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise MedcfError(f"ema_decay={decay} must be in [0, 1)")
        self.decay = float(decay)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self._cache: tuple[Any, Any] | None = None  # see _pairs

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights of ``model`` (same architecture, unwrapped) into the average.

        Vectorised: one ``torch._foreach_lerp_`` over the floating-point parameters whose
        dtype matches (bit-identical to ``e.lerp_(p, 1 - decay)`` per parameter), one
        ``torch._foreach_copy_`` for the buffers; other parameters go one by one.
        """
        lerp_e, lerp_p, copies = self._pairs(model)
        if lerp_e:
            torch._foreach_lerp_(lerp_e, lerp_p, 1.0 - self.decay)
        for e, p in copies:  # non-float parameters, or a dtype that differs from the average's
            if e.dtype.is_floating_point:
                e.lerp_(p.detach().to(e.dtype), 1.0 - self.decay)
            else:
                e.copy_(p.detach())
        ema_buffers = dict(self.module.named_buffers())
        dst, src = [], []
        for name, b in model.named_buffers():
            if name in ema_buffers:
                dst.append(ema_buffers[name])
                src.append(b.detach())
        if dst:
            torch._foreach_copy_(dst, src)
        self.num_updates += 1

    def _pairs(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor], list[tuple[Tensor, Tensor]]]:
        """(average params, model params) for the foreach lerp, and the other pairs; cached per model."""
        # the model's Parameter objects: they survive .to() (it swaps .data); a model that gains or
        # replaces parameters gets new lists; EMA.to() clears the cache
        key = (id(model), *map(id, model.parameters()))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        ema_params = dict(self.module.named_parameters())
        lerp_e, lerp_p, copies = [], [], []
        for name, p in model.named_parameters():
            e = ema_params[name]
            if e.dtype.is_floating_point and p.dtype == e.dtype and p.device == e.device:
                lerp_e.append(e)
                lerp_p.append(p)  # read under no_grad
            else:
                copies.append((e, p))
        self._cache = (key, (lerp_e, lerp_p, copies))
        return self._cache[1]

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "module": {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.module.load_state_dict(state["module"])
            self.num_updates = int(state["num_updates"])
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"EMA state does not match the model ({type(e).__name__})") from e
