"""StyleGAN2-ADA generator and discriminator in plain PyTorch, loading official weights.

Example:
    >>> import torch
    >>> from medcf.generators.stylegan2 import Generator, GeneratorConfig
    >>> G = Generator(GeneratorConfig(z_dim=32, w_dim=32, img_resolution=16, img_channels=1))
    >>> G.eval().sample(2, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 16, 16])
"""

from medcf.generators.stylegan2.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    MappingConfig,
    SynthesisConfig,
)
from medcf.generators.stylegan2.discriminator import Discriminator
from medcf.generators.stylegan2.generator import Generator
from medcf.generators.stylegan2.mapping import MappingNetwork
from medcf.generators.stylegan2.official import build_from_official, config_from_official_kwargs
from medcf.generators.stylegan2.synthesis import SynthesisNetwork

__all__ = [
    "Discriminator",
    "DiscriminatorConfig",
    "Generator",
    "GeneratorConfig",
    "MappingConfig",
    "MappingNetwork",
    "SynthesisConfig",
    "SynthesisNetwork",
    "build_from_official",
    "config_from_official_kwargs",
]
