"""StyleGAN2-ADA mapping network: z (+ label c) -> w, with w_avg tracking and truncation.

    z [B, z_dim] --2nd-moment norm--+
                                     cat -> fc0 .. fc{L-1} (lrelu, lr_mul 0.01) -> w [B, w_dim]
    c [B, c_dim] -> embed -> norm --+
    w -> broadcast to ws [B, num_ws, w_dim] -> truncation toward w_avg (first ``cutoff`` ws)

Official names: ``w_avg`` [w_dim] (buffer), ``embed.{weight,bias}``, ``fc{i}.{weight,bias}``.
The discriminator reuses this class (z_dim=0, num_ws=None, w_avg_beta=None) to map labels.

Example:
    >>> import torch
    >>> m = MappingNetwork(8, 0, 8, 3, MappingConfig(num_layers=2), init=torch.Generator())
    >>> m(torch.randn(2, 8), None).shape
    torch.Size([2, 3, 8])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medcf.errors import MedcfError, ShapeError
from medcf.generators.stylegan2.config import MappingConfig
from medcf.generators.stylegan2.layers import FullyConnectedLayer, normalize_2nd_moment


class MappingNetwork(nn.Module):
    """z [B, z_dim], c [B, c_dim] -> ws [B, num_ws, w_dim] (or w [B, w_dim] when num_ws is None)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None,
                 config: MappingConfig, *, init: torch.Generator | None = None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = config.num_layers
        self.w_avg_beta = config.w_avg_beta
        embed = config.embed_features if config.embed_features is not None else w_dim
        if c_dim == 0:
            embed = 0
        hidden = config.layer_features if config.layer_features is not None else w_dim
        features = [z_dim + embed] + [hidden] * (config.num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed, init=init)
        for i in range(config.num_layers):
            layer = FullyConnectedLayer(features[i], features[i + 1], activation=config.activation,
                                        lr_multiplier=config.lr_multiplier, init=init)
            setattr(self, f"fc{i}", layer)
        self._fcs = [f"fc{i}" for i in range(config.num_layers)]
        if num_ws is not None and config.w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: Tensor | None, c: Tensor | None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, skip_w_avg_update: bool = False) -> Tensor:
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                got = None if z is None else tuple(z.shape)
                raise ShapeError(f"z: expected [B, {self.z_dim}], got {got}")
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                got = None if c is None else tuple(c.shape)
                raise ShapeError(f"c: expected labels [B, {self.c_dim}], got {got}")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for name in self._fcs:
            x = getattr(self, name)(x)  # [B, w_dim]

        # track the average w (training mode only)
        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is None:
            if truncation_psi != 1:
                raise MedcfError("truncation_psi: this mapping network has no w_avg to truncate toward")
            return x
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # [B, num_ws, w_dim]
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise MedcfError("truncation_psi: needs w_avg tracking, but w_avg_beta is None")
            if truncation_cutoff is None or truncation_cutoff >= self.num_ws:
                ws = self.w_avg.lerp(ws, truncation_psi)
            else:
                head = self.w_avg.lerp(ws[:, :truncation_cutoff], truncation_psi)
                ws = torch.cat([head, ws[:, truncation_cutoff:]], dim=1)
        return ws
