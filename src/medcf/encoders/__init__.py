"""medcf.encoders: image -> StyleGAN2 latent, by optimisation (``Projector``) or a learned encoder.

Example:
    >>> from medcf.encoders import Projector, ProjectorConfig, StyleGANEncoder
    >>> proj = Projector(G, config=ProjectorConfig(space="w+", steps=300))   # doctest: +SKIP
    >>> res = proj.project(x, init=StyleGANEncoder.load("runs/encoder")(x))  # doctest: +SKIP
"""

from medcf.encoders.gan_encoder import GANEncoder, GANEncoderConfig, load_gan_encoder
from medcf.encoders.projector import (
    ProjectionResult,
    Projector,
    ProjectorConfig,
    SavedLatents,
    load_latents,
    save_latents,
)
from medcf.encoders.stylegan_encoder import (
    StyleGANEncoder,
    StyleGANEncoderConfig,
    load_stylegan_encoder,
)
from medcf.generators.fingerprint import generator_fingerprint
from medcf.generators.stylegan2.loading import load_stylegan2_generator

__all__ = [
    "GANEncoder",
    "GANEncoderConfig",
    "ProjectionResult",
    "Projector",
    "ProjectorConfig",
    "SavedLatents",
    "StyleGANEncoder",
    "StyleGANEncoderConfig",
    "generator_fingerprint",
    "load_gan_encoder",
    "load_latents",
    "load_stylegan2_generator",
    "load_stylegan_encoder",
    "save_latents",
]
