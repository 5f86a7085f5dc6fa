"""Moved: the StyleGAN2 helpers live in ``medcf.generators.stylegan2.loading`` and the
fingerprint in ``medcf.generators.fingerprint``; these names stay importable from here.
"""

from medcf.generators.fingerprint import generator_fingerprint
from medcf.generators.stylegan2.loading import (
    GENERATOR_KIND,
    latent_shape,
    load_stylegan2_generator,
    map_z,
)

__all__ = ["GENERATOR_KIND", "generator_fingerprint", "latent_shape", "load_stylegan2_generator", "map_z"]
