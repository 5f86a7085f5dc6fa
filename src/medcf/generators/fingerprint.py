"""A generator's name by its weights: encoders, latent probes and recipes store it, so that
pairing one with a different generator is a one-line error instead of silently wrong latents.

Example:
    >>> generator_fingerprint(G)                                # doctest: +SKIP
    '3f2a9c0d1e5b7a64'
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from medcf.errors import MedcfError
from medcf.io import config_to_dict


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


__all__ = ["generator_fingerprint"]
