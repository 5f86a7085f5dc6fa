"""What learned encoders share: each is made for one generator, recorded by fingerprint.

An encoder's config carries ``generator_fingerprint`` (``medcf.generators.fingerprint``;
"" when unknown) and ``generator_path`` (informational). ``check_generator`` refuses a
generator whose latents have another shape (the subclass's ``check_latent``) or, when
the fingerprint is known, another generator; ``load_for`` loads and checks in one call.

Example:
    >>> enc = GANEncoder.load_for("runs/gan-encoder", generator=G)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch
from torch import nn

from medcf.errors import CheckpointError
from medcf.generators.fingerprint import generator_fingerprint
from medcf.io import SavableModule

E = TypeVar("E", bound="GeneratorBoundEncoder")


class GeneratorBoundEncoder(SavableModule):
    """A ``SavableModule`` encoder whose config names the generator it inverts."""

    def check_latent(self, generator: nn.Module, where: str) -> None:
        """Raise ``CheckpointError`` when ``generator``'s latents are not the shape this encoder gives."""
        raise NotImplementedError

    def check_generator(self, generator: nn.Module, *, where: str = "encoder") -> None:
        """Raise ``CheckpointError`` unless ``generator`` is the one this encoder was made for."""
        self.check_latent(generator, where)
        cfg = self.config
        if cfg.generator_fingerprint:
            found = generator_fingerprint(generator)
            if found != cfg.generator_fingerprint:
                raise CheckpointError(f"{where}: was trained for generator {cfg.generator_fingerprint} "
                                      f"({cfg.generator_path or 'unknown path'}), not this one ({found})")

    def checkpoint_meta(self) -> dict:
        return {"generator_fingerprint": self.config.generator_fingerprint}

    @classmethod
    def load_for(cls: type[E], path: str | os.PathLike, *, generator: nn.Module | None = None,
                 device: str | torch.device = "cpu") -> E:
        """Load from a model or run directory; with ``generator``, check it belongs to it."""
        enc = cls.load(path, device=device)
        if generator is not None:
            enc.check_generator(generator, where=str(path))
        return enc


__all__ = ["GeneratorBoundEncoder"]
