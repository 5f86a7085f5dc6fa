"""VA-GAN's map generator (kind ``vagan-map``): a U-Net giving an additive map M(x).

Baumgartner et al., "Visual feature attribution using Wasserstein GANs", CVPR 2018:
for an image x of the source class, ``y = x + M(x)`` should look like the target
class (a WGAN-GP critic judges it, ``medcf.train.vagan``); M(x) is the attribution
map. The U-Net has ``depth`` levels (two 3x3 conv + GroupNorm + LeakyReLU per level,
stride-2 conv down, nearest upsampling + skip concatenation up) and a final 3x3
conv initialised to zero, so an untrained map is 0 and ``y = x``. ``counterfactual``
clamps ``y`` to the image range [-1, 1]. The critic is ``medcf.generators.dcgan.DCGANCritic``.

The config records the classes (``source_class`` -> ``target_class``, and the data's
``class_names``) the map was trained for.

Example:
    >>> M = VAGANMap(VAGANConfig(resolution=16, channels=1, base_channels=8, depth=2))
    >>> x = torch.zeros(2, 1, 16, 16)
    >>> M(x).abs().max().item(), M.counterfactual(x).shape
    (0.0, torch.Size([2, 1, 16, 16]))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.generators.layers import group_norm, he_normal_init_
from medcf.io import SavableModule, load_of_kind
from medcf.types import check_images


@dataclass(frozen=True)
class VAGANConfig:
    resolution: int = 64                    # image side (divisible by 2**depth)
    channels: int = 1
    base_channels: int = 16                 # channels of the first level (doubling per level)
    max_channels: int = 128
    depth: int = 3                          # down-sampling levels
    source_class: str = ""                  # class whose images are mapped
    target_class: str = ""                  # class y = x + M(x) should look like
    class_names: tuple[str, ...] = ()       # classes of the training data

    def __post_init__(self):
        where = "VAGANConfig"
        if self.channels not in (1, 3):
            raise ValueError(f"{where}.channels: must be 1 or 3, got {self.channels}")
        if self.depth < 1 or self.base_channels < 1 or self.max_channels < 1:
            raise ValueError(f"{where}: depth, base_channels, max_channels must be >= 1")
        if not isinstance(self.resolution, int) or self.resolution % (2 ** self.depth) or self.resolution < 8:
            raise ValueError(f"{where}.resolution: must be >= 8 and divisible by 2**depth={2 ** self.depth}, "
                             f"got {self.resolution!r}")
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), group_norm(cout), nn.LeakyReLU(0.2),
                         nn.Conv2d(cout, cout, 3, 1, 1), group_norm(cout), nn.LeakyReLU(0.2))


class VAGANMap(SavableModule):
    """x [B, C, R, R] -> additive map M(x) [B, C, R, R]."""

    kind: ClassVar[str] = "vagan-map"
    config_class: ClassVar[type] = VAGANConfig

    def __init__(self, config: VAGANConfig, *, seed: int = 0):
        super().__init__(config)
        w = [min(config.base_channels * 2 ** i, config.max_channels) for i in range(config.depth + 1)]
        with torch.random.fork_rng(devices=[]):
            self.inc = _block(config.channels, w[0])
            self.downs = nn.ModuleList(nn.Conv2d(w[i], w[i], 4, 2, 1) for i in range(config.depth))
            self.enc = nn.ModuleList(_block(w[i], w[i + 1]) for i in range(config.depth))
            self.dec = nn.ModuleList(_block(w[i + 1] + w[i], w[i]) for i in reversed(range(config.depth)))
            self.out = nn.Conv2d(w[0], config.channels, 3, 1, 1)
        he_normal_init_(self, torch.Generator().manual_seed(seed), layers=(nn.Conv2d,))
        with torch.no_grad():
            self.out.weight.zero_()                       # M(x) = 0 at the start: y = x

    def forward(self, x: Tensor) -> Tensor:  # [B, C, R, R] -> [B, C, R, R]
        cfg = self.config
        check_images(x, channels=cfg.channels, resolution=cfg.resolution,
                     name=f"VAGANMap input (expects [B, {cfg.channels}, {cfg.resolution}, {cfg.resolution}])")
        h = self.inc(x)
        skips = [h]
        for down, enc in zip(self.downs, self.enc, strict=True):
            h = enc(down(h))                              # half the side, next width
            skips.append(h)
        skips.pop()
        for dec in self.dec:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = dec(torch.cat([h, skips.pop()], 1))
        return self.out(h)

    def counterfactual(self, x: Tensor) -> Tensor:
        """``clamp(x + M(x), -1, 1)`` [B, C, R, R]."""
        return (x + self(x)).clamp(-1.0, 1.0)

    def checkpoint_meta(self) -> dict:
        cfg = self.config
        return {"input": {"channels": cfg.channels, "resolution": cfg.resolution},
                "source_class": cfg.source_class, "target_class": cfg.target_class}


def load_vagan_map(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> VAGANMap:
    """The VA-GAN map generator at ``path`` (model or run directory), in eval mode.

    Example:
        >>> M = load_vagan_map("runs/vagan")        # doctest: +SKIP
    """
    return load_of_kind(VAGANMap, path, made_by="medcf train vagan", device=device)


__all__ = ["VAGANConfig", "VAGANMap", "load_vagan_map"]
