"""Building blocks shared by the convolutional backbones (DCGAN, VA-GAN, the autoencoders).

GroupNorm rather than BatchNorm throughout: a sample's output never depends on the
other samples of its batch, so models behave the same in train and eval mode and an
explainer can differentiate through one image at a time.

Example:
    >>> group_norm(12)
    GroupNorm(4, 12, eps=1e-05, affine=True)
"""

from __future__ import annotations

import math

from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm over ``channels`` in ``gcd(channels, 8)`` groups (8, else 4, 2 or 1)."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


__all__ = ["group_norm"]
