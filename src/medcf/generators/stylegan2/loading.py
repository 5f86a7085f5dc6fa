"""StyleGAN2 helpers the inversion and the latent probe use: loading a saved generator,
its latent shape, and mapping z to W+ (conditional generators included).

``load_stylegan2_generator`` accepts a model directory or a run directory (the
engine's ``RUN_DIR/model``) holding a ``stylegan2-generator`` checkpoint.

Example:
    >>> G = load_stylegan2_generator("runs/stylegan2")                          # doctest: +SKIP
    >>> ws = map_z(G, torch.randn(4, G.z_dim), truncation_psi=0.7)              # doctest: +SKIP
    >>> latent_shape(G)                                                         # doctest: +SKIP
    (10, 512)
"""

from __future__ import annotations

import os

import torch
from torch import nn

from medcf.errors import CheckpointError, MedcfError
from medcf.io import read_header

GENERATOR_KIND = "stylegan2-generator"


def load_stylegan2_generator(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """The in-house StyleGAN2 ``Generator`` saved at ``path`` (model or run directory), in eval mode."""
    from medcf.generators.stylegan2.generator import Generator

    header = read_header(path)
    if header["kind"] != GENERATOR_KIND:
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint, "
                              f"expected a StyleGAN2 generator ('{GENERATOR_KIND}')")
    return Generator.load(header["path"], device=device).eval()


def latent_shape(generator) -> tuple[int, int]:
    """(num_ws, w_dim) of a StyleGAN-like generator (attributes ``num_ws`` and ``w_dim``)."""
    try:
        return int(generator.num_ws), int(generator.w_dim)
    except AttributeError as e:
        raise MedcfError(f"generator: {type(generator).__name__} has no num_ws / w_dim "
                         "(expected a StyleGAN2 Generator)") from e


def map_z(generator, z: torch.Tensor, *, truncation_psi: float = 1.0, c: int | torch.Tensor | None = None,
          rng: torch.Generator | None = None) -> torch.Tensor:
    """ws [B, num_ws, w_dim] of z [B, z_dim]; a conditional generator gets class ``c`` (an index or
    labels [B, c_dim]) or, when ``c`` is None, classes drawn uniformly with ``rng``."""
    c_dim = int(getattr(generator, "c_dim", 0) or 0)
    labels = None
    if c_dim > 0:
        if c is None:
            dev = rng.device if rng is not None else "cpu"
            idx = torch.randint(0, c_dim, (z.shape[0],), generator=rng, device=dev).to(z.device)
            labels = torch.nn.functional.one_hot(idx, c_dim).float()
        else:
            labels = generator.labels(z.shape[0], c)
    elif c is not None:
        raise MedcfError("c: this generator is unconditional (c_dim=0); pass no class")
    return generator.mapping(z, labels, truncation_psi=truncation_psi)


__all__ = ["GENERATOR_KIND", "latent_shape", "load_stylegan2_generator", "map_z"]
