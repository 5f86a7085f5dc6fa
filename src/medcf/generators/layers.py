"""Building blocks shared by the convolutional backbones (DCGAN, VA-GAN, CycleGAN, ICAM,
the autoencoders).

GroupNorm rather than BatchNorm throughout: a sample's output never depends on the
other samples of its batch, so models behave the same in train and eval mode and an
explainer can differentiate through one image at a time. ``normal_init_`` (N(0, 0.02):
DCGAN, CycleGAN), ``he_normal_init_`` (N(0, 2 / fan_in): VA-GAN, the encoders) and
``uniform_init_`` (U(+-sqrt(3 / fan_in)): the autoencoders, ICAM) are the seeded initialisations.

Example:
    >>> group_norm(12).num_groups, group_norm(7).num_groups
    (4, 1)
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), group_norm(4))
    >>> normal_init_(net, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

NORMAL_INIT_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
UNIFORM_INIT_LAYERS = (nn.Conv2d, nn.Conv3d, nn.Linear)
HE_INIT_LAYERS = (nn.Conv2d, nn.Linear)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm over ``channels`` in ``gcd(channels, 8)`` groups (8, else 4, 2 or 1)."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


@torch.no_grad()
def _init_(module: nn.Module, layers: tuple[type[nn.Module], ...], draw: Callable[[Tensor], Tensor]) -> None:
    """The one initialisation loop, in ``module.modules()`` order: weights of ``layers`` <- ``draw(weight)``,
    their biases 0; GroupNorm scale 1, shift 0."""
    for m in module.modules():
        if isinstance(m, layers):
            m.weight.copy_(draw(m.weight))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.GroupNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()


def normal_init_(module: nn.Module, generator: torch.Generator, std: float = 0.02, *,
                 layers: tuple[type[nn.Module], ...] = NORMAL_INIT_LAYERS) -> None:
    """In place: weights of ``layers`` ~ N(0, std) drawn from ``generator`` (the global RNG is
    untouched) in module order, their biases 0; GroupNorm scale 1, shift 0 (DCGAN, CycleGAN)."""
    _init_(module, layers, lambda w: torch.randn(w.shape, generator=generator) * std)


def he_normal_init_(module: nn.Module, generator: torch.Generator, *,
                    layers: tuple[type[nn.Module], ...] = HE_INIT_LAYERS) -> None:
    """In place: weights of ``layers`` ~ N(0, 2 / fan_in) (He) drawn from ``generator`` in module
    order, their biases 0; GroupNorm scale 1, shift 0 (VA-GAN's map, the GAN and StyleGAN2 encoders)."""
    _init_(module, layers, lambda w: torch.randn(w.shape, generator=generator) * math.sqrt(2.0 / w[0].numel()))


def uniform_init_(module: nn.Module, generator: torch.Generator, *,
                  layers: tuple[type[nn.Module], ...] = UNIFORM_INIT_LAYERS) -> None:
    """In place: weights of ``layers`` ~ U(-b, b), b = sqrt(3 / fan_in) (variance 1 / fan_in), drawn
    from ``generator`` in module order, their biases 0; GroupNorm scale 1, shift 0 (AE/VAE, ICAM)."""
    def draw(w: Tensor) -> Tensor:
        bound = math.sqrt(3.0 / (w[0].numel()))
        return torch.rand(w.shape, generator=generator) * 2 * bound - bound

    _init_(module, layers, draw)


__all__ = ["HE_INIT_LAYERS", "NORMAL_INIT_LAYERS", "UNIFORM_INIT_LAYERS", "group_norm", "he_normal_init_",
           "normal_init_", "uniform_init_"]
