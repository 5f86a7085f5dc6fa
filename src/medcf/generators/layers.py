"""Building blocks shared by the convolutional backbones (DCGAN, VA-GAN, CycleGAN, ICAM,
the autoencoders).

GroupNorm rather than BatchNorm throughout: a sample's output never depends on the
other samples of its batch, so models behave the same in train and eval mode and an
explainer can differentiate through one image at a time. ``normal_init_`` is the
seeded N(0, 0.02) initialisation of DCGAN and CycleGAN.

Example:
    >>> group_norm(12).num_groups, group_norm(7).num_groups
    (4, 1)
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), group_norm(4))
    >>> normal_init_(net, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math

import torch
from torch import nn

NORMAL_INIT_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm over ``channels`` in ``gcd(channels, 8)`` groups (8, else 4, 2 or 1)."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


@torch.no_grad()
def normal_init_(module: nn.Module, generator: torch.Generator, std: float = 0.02, *,
                 layers: tuple[type[nn.Module], ...] = NORMAL_INIT_LAYERS) -> None:
    """In place, in ``module.modules()`` order: weights of ``layers`` ~ N(0, std) drawn from
    ``generator`` (the global RNG is untouched), their biases 0; GroupNorm scale 1, shift 0."""
    for m in module.modules():
        if isinstance(m, layers):
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.GroupNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()


__all__ = ["NORMAL_INIT_LAYERS", "group_norm", "normal_init_"]
