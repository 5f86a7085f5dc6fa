"""DCGAN-style generator (kind ``dcgan-generator``) and critic (kind ``dcgan-critic``).

The backbone of Generative Visual Rationales (Seah et al., Radiology 2019): a GAN
trained on unlabelled images. The generator maps ``z [B, z_dim]`` (N(0, I)) through
a linear layer to a ``[B, C0, 4, 4]`` map, then doubles the resolution per stage
(nearest upsampling + 3x3 conv + GroupNorm + ReLU) and ends in a 3x3 conv and
``tanh``. GroupNorm, not BatchNorm: an image never depends on its batch, so
``decode`` is the same in train and eval mode and GVR can differentiate through it.
The critic mirrors it with stride-2 convs and LeakyReLU and no normalisation (the
WGAN-GP gradient penalty is per sample), ending in a linear layer to one score;
``medcf.generators.vagan`` reuses it as VA-GAN's critic.

Example:
    >>> cfg = DCGANConfig(resolution=16, channels=1, z_dim=8, base_channels=8)
    >>> G, D = DCGANGenerator(cfg, seed=0), DCGANCritic(cfg, seed=1)
    >>> x = G.sample(2, generator=torch.Generator().manual_seed(0))   # [2, 1, 16, 16]
    >>> D(x).shape
    torch.Size([2])
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.errors import ShapeError
from medcf.generators.layers import group_norm, normal_init_
from medcf.io import SavableModule, load_of_kind
from medcf.types import check_images


@dataclass(frozen=True)
class DCGANConfig:
    resolution: int = 64            # image side, a power of two in 8..256
    channels: int = 1               # image channels (1 or 3)
    z_dim: int = 128                # latent size
    base_channels: int = 32         # channels at full resolution (doubling per halving)
    max_channels: int = 256         # channel cap of the low-resolution stages

    def __post_init__(self):
        where = "DCGANConfig"
        r = self.resolution
        if not isinstance(r, int) or r < 8 or r > 256 or r & (r - 1):
            raise ValueError(f"{where}.resolution: must be a power of two in 8..256, got {r!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"{where}.channels: must be 1 or 3, got {self.channels}")
        for name in ("z_dim", "base_channels", "max_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")

    def widths(self) -> list[int]:
        """Channels at 4x4, 8x8, ..., resolution (one entry per stage)."""
        n = int(math.log2(self.resolution)) - 2
        return [min(self.base_channels * 2 ** (n - i), self.max_channels) for i in range(n + 1)]


class DCGANGenerator(SavableModule):
    """z [B, z_dim] -> image [B, C, R, R] in (-1, 1)."""

    kind: ClassVar[str] = "dcgan-generator"
    config_class: ClassVar[type] = DCGANConfig

    def __init__(self, config: DCGANConfig, *, seed: int = 0):
        super().__init__(config)
        w = config.widths()
        self.z_dim, self.img_resolution, self.img_channels = config.z_dim, config.resolution, config.channels
        with torch.random.fork_rng(devices=[]):  # default init must not move the global RNG
            self.fc = nn.Linear(config.z_dim, w[0] * 16)
            self.norm0 = group_norm(w[0])
            self.ups = nn.ModuleList()
            for cin, cout in zip(w[:-1], w[1:], strict=True):
                self.ups.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(cin, cout, 3, 1, 1), group_norm(cout), nn.ReLU()))
            self.out = nn.Conv2d(w[-1], config.channels, 3, 1, 1)
        normal_init_(self, torch.Generator().manual_seed(seed))  # N(0, 0.02), the DCGAN init

    def forward(self, z: Tensor) -> Tensor:  # [B, z_dim] -> [B, C, R, R]
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ShapeError(f"DCGANGenerator latent: expected [B, {self.z_dim}], got {tuple(z.shape)}")
        h = self.fc(z).view(z.shape[0], -1, 4, 4)                   # [B, C0, 4, 4]
        h = F.relu(self.norm0(h))
        for up in self.ups:
            h = up(h)                                                # doubles the side
        return torch.tanh(self.out(h))

    def decode(self, z: Tensor) -> Tensor:
        """The medcf ``Generator`` protocol: ``G(z)``."""
        return self(z)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:  # -> [n, C, R, R]
        """Decode ``n`` draws of z ~ N(0, I) made with ``generator``."""
        device = self.fc.weight.device
        gen_device = generator.device if generator is not None else device
        z = torch.randn((n, self.z_dim), generator=generator, device=gen_device).to(device)
        return self(z)

    def checkpoint_meta(self) -> dict:
        cfg = self.config
        return {"input": {"channels": cfg.channels, "resolution": cfg.resolution}, "z_dim": cfg.z_dim}


class DCGANCritic(SavableModule):
    """image [B, C, R, R] -> score [B] (a WGAN critic or a non-saturating GAN's logit)."""

    kind: ClassVar[str] = "dcgan-critic"
    config_class: ClassVar[type] = DCGANConfig

    def __init__(self, config: DCGANConfig, *, seed: int = 0, in_channels: int | None = None):
        super().__init__(config)
        w = config.widths()[::-1]                                    # full resolution first
        cin = in_channels or config.channels
        with torch.random.fork_rng(devices=[]):
            self.stem = nn.Conv2d(cin, w[0], 3, 1, 1)
            self.downs = nn.ModuleList(nn.Conv2d(a, b, 4, 2, 1) for a, b in zip(w[:-1], w[1:], strict=True))
            self.fc = nn.Linear(w[-1] * 16, 1)
        normal_init_(self, torch.Generator().manual_seed(seed))  # N(0, 0.02), the DCGAN init

    def forward(self, x: Tensor) -> Tensor:  # [B, C, R, R] -> [B]
        cfg = self.config
        check_images(x, resolution=cfg.resolution, name=f"DCGANCritic input (expects {cfg.resolution}px)")
        h = F.leaky_relu(self.stem(x), 0.2)
        for down in self.downs:
            h = F.leaky_relu(down(h), 0.2)                           # halves the side
        return self.fc(h.flatten(1)).squeeze(1)


def load_dcgan_generator(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> DCGANGenerator:
    """The DCGAN generator at ``path`` (model or run directory), in eval mode.

    Example:
        >>> G = load_dcgan_generator("runs/gan")        # doctest: +SKIP
    """
    return load_of_kind(DCGANGenerator, path, made_by="medcf train gan", device=device)


__all__ = ["DCGANConfig", "DCGANCritic", "DCGANGenerator", "load_dcgan_generator"]
