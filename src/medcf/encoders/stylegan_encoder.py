"""A learned encoder image -> W+ for a StyleGAN2 generator (one forward pass per image).

Architecture (ResNet-style, GroupNorm so that outputs never depend on the batch)::

    x [B, C, R, R] -> 3x3 stem (base_channels) -> stages of residual blocks, each halving
    the resolution down to 4x4 (channels doubling up to max_channels)
    -> 1x1 conv to head_channels -> flatten [B, head_channels*16] -> MLP
    -> offset [B, num_ws, w_dim];   ws = w_avg + offset

``w_avg`` is the generator's average w, copied in at construction and saved
with the encoder, so an untrained encoder already returns the "average image".
The config stores the generator's identity (``generator_fingerprint``) and
where it came from; ``check_generator`` refuses a different generator.

Trained on generated pairs by ``medcf.train.encoder.train_encoder``; its
output can seed ``Projector.project(x, init=encoder(x))``.

Example:
    >>> enc = StyleGANEncoder.for_generator(G)          # doctest: +SKIP
    >>> ws = enc.encode(x)                              # [B, num_ws, w_dim]   # doctest: +SKIP
    >>> x_rec = G.decode(ws)                            # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.encoders.bound import GeneratorBoundEncoder
from medcf.errors import CheckpointError, MedcfError
from medcf.generators.fingerprint import generator_fingerprint
from medcf.generators.layers import he_normal_init_
from medcf.generators.stylegan2.loading import latent_shape
from medcf.types import check_images


@dataclass(frozen=True)
class StyleGANEncoderConfig:
    resolution: int = 64             # input size (power of two, >= 4)
    channels: int = 1                # input channels
    num_ws: int = 10                 # W+ layers of the generator
    w_dim: int = 512                 # w size of the generator
    base_channels: int = 32          # channels of the stem
    max_channels: int = 256          # channel cap of the deeper stages
    blocks: int = 1                  # residual blocks per stage (the first one down-samples)
    head_channels: int = 32          # channels of the 4x4 map that is flattened
    hidden: int = 512                # MLP hidden width
    generator_fingerprint: str = ""  # identity of the generator it inverts ("" = unknown)
    generator_path: str = ""         # where that generator was loaded from (informational)

    def __post_init__(self):
        where = "StyleGANEncoderConfig"
        if self.resolution < 4 or 2 ** int(math.log2(self.resolution)) != self.resolution:
            raise MedcfError(f"{where}.resolution: must be a power of two >= 4, got {self.resolution}")
        for name in ("channels", "num_ws", "w_dim", "base_channels", "max_channels", "blocks",
                     "head_channels", "hidden"):
            if getattr(self, name) < 1:
                raise MedcfError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class _ResBlock(nn.Module):
    """Pre-activation residual block; stride 2 halves the resolution.  [B, I, H, W] -> [B, O, H/s, W/s]."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False) if (stride != 1 or cin != cout) else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        h = self.conv2(F.leaky_relu(self.norm2(h), 0.2))
        return h + (self.skip(x) if self.skip is not None else x)


class StyleGANEncoder(GeneratorBoundEncoder):
    """images [B, C, R, R] in [-1, 1] -> W+ latents [B, num_ws, w_dim]."""

    kind = "stylegan2-encoder"
    config_class = StyleGANEncoderConfig

    def __init__(self, config: StyleGANEncoderConfig, *, seed: int = 0, w_avg: Tensor | None = None):
        super().__init__(config)
        init = torch.Generator().manual_seed(seed)
        c = config.base_channels
        self.stem = nn.Conv2d(config.channels, c, 3, 1, 1)
        stages = []
        res = config.resolution
        while res > 4:
            cout = min(c * 2, config.max_channels)
            stages += [_ResBlock(c, cout, 2)] + [_ResBlock(cout, cout, 1) for _ in range(config.blocks - 1)]
            c, res = cout, res // 2
        self.stages = nn.Sequential(*stages)
        self.norm = _norm(c)
        self.reduce = nn.Conv2d(c, config.head_channels, 1)
        self.fc1 = nn.Linear(config.head_channels * 16, config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.num_ws * config.w_dim)
        self.register_buffer("w_avg", torch.zeros(config.w_dim) if w_avg is None
                             else w_avg.detach().float().cpu().reshape(config.w_dim).clone())
        self._init_weights(init)

    def _init_weights(self, init: torch.Generator) -> None:
        he_normal_init_(self, init)
        with torch.no_grad():  # start at w_avg: a small final layer
            self.fc2.weight.mul_(0.1)

    @classmethod
    def for_generator(cls, generator: nn.Module, *, seed: int = 0, generator_path: str | os.PathLike = "",
                      **overrides) -> StyleGANEncoder:
        """An untrained encoder matching ``generator`` (resolution, channels, num_ws, w_dim, w_avg)."""
        num_ws, w_dim = latent_shape(generator)
        config = StyleGANEncoderConfig(resolution=int(generator.img_resolution),
                                       channels=int(generator.img_channels), num_ws=num_ws, w_dim=w_dim,
                                       generator_fingerprint=generator_fingerprint(generator),
                                       generator_path=str(generator_path), **overrides)
        return cls(config, seed=seed, w_avg=getattr(generator, "w_avg", None))

    def forward(self, x: Tensor) -> Tensor:  # [B, C, R, R] -> [B, num_ws, w_dim]
        cfg = self.config
        check_images(x, channels=cfg.channels, resolution=cfg.resolution, name="StyleGANEncoder input")
        h = self.stages(self.stem(x.float()))                       # [B, c, 4, 4]
        h = self.reduce(F.leaky_relu(self.norm(h), 0.2))            # [B, head_channels, 4, 4]
        h = F.leaky_relu(self.fc1(h.flatten(1)), 0.2)               # [B, hidden]
        offset = self.fc2(h).view(-1, cfg.num_ws, cfg.w_dim)
        return self.w_avg.view(1, 1, -1) + offset

    def encode(self, x: Tensor) -> Tensor:
        """Deterministic W+ latents of ``x`` (the medcf ``Encoder`` protocol)."""
        return self(x)

    def check_latent(self, generator: nn.Module, where: str) -> None:
        """Raise ``CheckpointError`` unless ``generator``'s W+ latents are [num_ws, w_dim] of this encoder."""
        num_ws, w_dim = latent_shape(generator)
        cfg = self.config
        if (num_ws, w_dim) != (cfg.num_ws, cfg.w_dim):
            raise CheckpointError(f"{where}: encodes [{cfg.num_ws}, {cfg.w_dim}] latents but the generator "
                                  f"uses [{num_ws}, {w_dim}]")


def load_stylegan_encoder(path: str | os.PathLike, *, generator: nn.Module | None = None,
                          device: str | torch.device = "cpu") -> StyleGANEncoder:
    """Load an encoder from a model or run directory; with ``generator``, check it belongs to it."""
    return StyleGANEncoder.load_for(path, generator=generator, device=device)
