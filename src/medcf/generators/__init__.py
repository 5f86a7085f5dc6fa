"""medcf.generators: generative backbones (latent -> image).

``GENERATORS`` maps a checkpoint kind to its class (explicit; no import-time registry).

Example:
    >>> from medcf.generators import GENERATORS, load_autoencoder
    >>> vae = load_autoencoder("runs/demo/vae")          # doctest: +SKIP
    >>> G = GENERATORS["stylegan2-generator"].load("runs/sg2")   # doctest: +SKIP
"""

from medcf.generators.autoencoder import (
    AUTOENCODERS,
    VAE,
    Autoencoder,
    AutoencoderConfig,
    load_autoencoder,
)
from medcf.generators.stylegan2 import Discriminator as StyleGAN2Discriminator
from medcf.generators.stylegan2 import Generator as StyleGAN2Generator
from medcf.generators.stylegan2 import GeneratorConfig as StyleGAN2Config
from medcf.generators.stylegan2 import build_from_official

GENERATORS = {
    "ae": Autoencoder,
    "vae": VAE,
    "stylegan2-generator": StyleGAN2Generator,
}

__all__ = [
    "AUTOENCODERS",
    "GENERATORS",
    "VAE",
    "Autoencoder",
    "AutoencoderConfig",
    "StyleGAN2Config",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "build_from_official",
    "load_autoencoder",
]
