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
from medcf.generators.dcgan import DCGANConfig, DCGANCritic, DCGANGenerator, load_dcgan_generator
from medcf.generators.stylegan2 import Discriminator as StyleGAN2Discriminator
from medcf.generators.stylegan2 import Generator as StyleGAN2Generator
from medcf.generators.stylegan2 import GeneratorConfig as StyleGAN2Config
from medcf.generators.stylegan2 import build_from_official
from medcf.generators.vagan import VAGANConfig, VAGANMap, load_vagan_map

GENERATORS = {
    "ae": Autoencoder,
    "vae": VAE,
    "stylegan2-generator": StyleGAN2Generator,
    "dcgan-generator": DCGANGenerator,
    "vagan-map": VAGANMap,
}

__all__ = [
    "AUTOENCODERS",
    "GENERATORS",
    "VAE",
    "Autoencoder",
    "AutoencoderConfig",
    "DCGANConfig",
    "DCGANCritic",
    "DCGANGenerator",
    "StyleGAN2Config",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "VAGANConfig",
    "VAGANMap",
    "build_from_official",
    "load_autoencoder",
    "load_dcgan_generator",
    "load_vagan_map",
]
