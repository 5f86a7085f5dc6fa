"""What the two-domain translation backbones (CycleGAN, ICAM) share: which classes of the
training data the domains A and B are, their names, and the facts saved with the model.

``TwoDomainConfig`` is a mixin for a frozen dataclass config with the fields ``domain_a``,
``domain_b`` (class indices) and ``class_names`` (may be empty); ``TwoDomainModel`` is a
mixin for the ``SavableModule`` built from such a config (it has ``channels`` and
``resolution`` too), placed before ``SavableModule`` in the bases.

Example:
    >>> from medcf.generators.cyclegan import CycleGAN, CycleGANConfig
    >>> cfg = CycleGANConfig(resolution=32, width=4, blocks=1, domain_a=2, domain_b=0,
    ...                      class_names=("normal", "effusion", "cardiomegaly"))
    >>> cfg.domain_name("a"), CycleGAN(cfg).domain_of_class(0), CycleGAN(cfg).domain_of_class(1)
    ('cardiomegaly', 'b', None)
"""

from __future__ import annotations

from typing import Any


class TwoDomainConfig:
    """Mixin of a frozen dataclass config with ``domain_a``, ``domain_b`` and ``class_names``."""

    def check_domains(self, where: str) -> None:
        """For ``__post_init__``: the domains must differ; ``class_names`` becomes a tuple of str."""
        if self.domain_a == self.domain_b:
            raise ValueError(f"{where}: domain_a and domain_b must differ, both are {self.domain_a}")
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))

    def domain_name(self, which: str) -> str:
        """The class name of domain ``which`` ("a" or "b"), else its class index as text."""
        i = self.domain_a if which == "a" else self.domain_b
        return self.class_names[i] if i < len(self.class_names) else str(i)


class TwoDomainModel:
    """Mixin of a ``SavableModule`` whose ``config`` is a ``TwoDomainConfig``."""

    def domain_of_class(self, c: int) -> str | None:
        """'a' / 'b' for the class index of a domain, None for any other class."""
        return "a" if c == self.config.domain_a else "b" if c == self.config.domain_b else None

    def checkpoint_meta(self) -> dict[str, Any]:
        cfg = self.config
        return {"input": {"channels": cfg.channels, "resolution": cfg.resolution, "value_range": [-1.0, 1.0]},
                "domains": {"a": cfg.domain_name("a"), "b": cfg.domain_name("b")}}


__all__ = ["TwoDomainConfig", "TwoDomainModel"]
