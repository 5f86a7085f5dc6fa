"""A learned encoder image -> z that inverts a DCGAN generator (kind ``gan-encoder``).

GVR (Seah et al.) starts its latent optimisation at ``z0 = E(x)``. The encoder is a
stack of stride-2 convs (LeakyReLU, GroupNorm) down to 4x4, then a linear layer to
``z_dim``. Its config stores the identity of the generator it was trained for
(``generator_fingerprint``, as the StyleGAN2 encoder does) and ``check_generator``
refuses any other generator with a one-line ``CheckpointError``.

Trained by ``medcf.train.gan.train_gan_encoder`` (``medcf train gan-encoder``).

Example:
    >>> G = DCGANGenerator(DCGANConfig(resolution=16, z_dim=8, base_channels=8))
    >>> E = GANEncoder.for_generator(G)
    >>> E.encode(torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 8])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.encoders.bound import GeneratorBoundEncoder
from medcf.errors import CheckpointError
from medcf.generators.dcgan import DCGANConfig, DCGANGenerator  # noqa: F401  (docstring example)
from medcf.generators.fingerprint import generator_fingerprint
from medcf.generators.layers import group_norm, he_normal_init_
from medcf.types import check_images


@dataclass(frozen=True)
class GANEncoderConfig:
    resolution: int = 64             # input side (power of two >= 8)
    channels: int = 1                # input channels
    z_dim: int = 128                 # latent size of the generator
    base_channels: int = 32          # channels after the stem (doubling per halving)
    max_channels: int = 256
    generator_fingerprint: str = ""  # identity of the generator it inverts ("" = unknown)
    generator_path: str = ""         # where that generator came from (informational)

    def __post_init__(self):
        r = self.resolution
        if not isinstance(r, int) or r < 8 or r & (r - 1):
            raise ValueError(f"GANEncoderConfig.resolution: must be a power of two >= 8, got {r!r}")
        for name in ("channels", "z_dim", "base_channels", "max_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"GANEncoderConfig.{name}: must be >= 1, got {getattr(self, name)}")


class GANEncoder(GeneratorBoundEncoder):
    """images [B, C, R, R] in [-1, 1] -> z [B, z_dim]."""

    kind: ClassVar[str] = "gan-encoder"
    config_class: ClassVar[type] = GANEncoderConfig

    def __init__(self, config: GANEncoderConfig, *, seed: int = 0):
        super().__init__(config)
        init = torch.Generator().manual_seed(seed)
        c = config.base_channels
        with torch.random.fork_rng(devices=[]):
            self.stem = nn.Conv2d(config.channels, c, 3, 1, 1)
            layers: list[nn.Module] = []
            res = config.resolution
            while res > 4:
                cout = min(2 * c, config.max_channels)
                layers += [nn.Conv2d(c, cout, 4, 2, 1), group_norm(cout), nn.LeakyReLU(0.2)]
                c, res = cout, res // 2
            self.body = nn.Sequential(*layers)
            self.fc = nn.Linear(c * 16, config.z_dim)
        he_normal_init_(self, init)
        with torch.no_grad():
            self.fc.weight.mul_(0.1)

    @classmethod
    def for_generator(cls, generator: nn.Module, *, seed: int = 0, generator_path: str | os.PathLike = "",
                      **overrides) -> GANEncoder:
        """An untrained encoder matching ``generator`` (resolution, channels, z_dim, fingerprint)."""
        config = GANEncoderConfig(resolution=int(generator.img_resolution), channels=int(generator.img_channels),
                                  z_dim=int(generator.z_dim), generator_fingerprint=generator_fingerprint(generator),
                                  generator_path=str(generator_path), **overrides)
        return cls(config, seed=seed)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, R, R] -> [B, z_dim]
        cfg = self.config
        check_images(x, channels=cfg.channels, resolution=cfg.resolution,
                     name=f"GANEncoder input (expects [B, {cfg.channels}, {cfg.resolution}, {cfg.resolution}])")
        h = self.body(F.leaky_relu(self.stem(x.float()), 0.2))        # [B, c, 4, 4]
        return self.fc(h.flatten(1))

    def encode(self, x: Tensor) -> Tensor:
        """Deterministic z of ``x`` (the medcf ``Encoder`` protocol)."""
        return self(x)

    def check_latent(self, generator: nn.Module, where: str) -> None:
        """Raise ``CheckpointError`` unless ``generator`` takes z of this encoder's size."""
        z_dim = getattr(generator, "z_dim", None)
        if z_dim != self.config.z_dim:
            raise CheckpointError(f"{where}: encodes z of size {self.config.z_dim} but the generator takes {z_dim}")


def load_gan_encoder(path: str | os.PathLike, *, generator: nn.Module | None = None,
                     device: str | torch.device = "cpu") -> GANEncoder:
    """Load a ``gan-encoder`` (model or run directory); with ``generator``, check it belongs to it."""
    return GANEncoder.load_for(path, generator=generator, device=device)


__all__ = ["GANEncoder", "GANEncoderConfig", "load_gan_encoder"]
