"""Loading a StyleGAN2 generator for inversion, and naming it by its weights.

``load_stylegan2_generator`` accepts a model directory or a run directory (the
engine's ``RUN_DIR/model``) holding a ``stylegan2-generator`` checkpoint.
``generator_fingerprint`` is a short hash of a generator's config and weights:
an encoder or a latent probe stores it, so that pairing one with a different
generator is a one-line error instead of silently wrong latents.

Example:
    >>> G = load_stylegan2_generator("runs/stylegan2")          # doctest: +SKIP
    >>> generator_fingerprint(G)                                # doctest: +SKIP
    '3f2a9c0d1e5b7a64'
"""

from __future__ import annotations

import hashlib
import json
import os

import torch
from torch import nn

from medcf.errors import CheckpointError, MedcfError
from medcf.io import config_to_dict, read_header

GENERATOR_KIND = "stylegan2-generator"


def load_stylegan2_generator(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """The in-house StyleGAN2 ``Generator`` saved at ``path`` (model or run directory), in eval mode."""
    from medcf.generators.stylegan2 import Generator

    header = read_header(path)
    if header["kind"] != GENERATOR_KIND:
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint, "
                              f"expected a StyleGAN2 generator ('{GENERATOR_KIND}')")
    return Generator.load(header["path"], device=device).eval()


def generator_fingerprint(generator: nn.Module) -> str:
    """16 hex digits of SHA-256 over the generator's config and its state dict (names, shapes, values)."""
    h = hashlib.sha256()
    config = getattr(generator, "config", None)
    if config is not None:
        try:
            h.update(json.dumps(config_to_dict(config), sort_keys=True).encode())
        except TypeError:
            h.update(repr(config).encode())
    if not isinstance(generator, nn.Module):
        raise MedcfError(f"generator_fingerprint: expected an nn.Module, got {type(generator).__name__}")
    for name, t in sorted(generator.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


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
