"""medcf: counterfactual explanations for medical-image classifiers.

Explicit re-exports only; importing medcf has no side effects.
"""

from medcf.errors import (
    CheckpointError,
    DataError,
    MedcfError,
    NotFittedError,
    ShapeError,
    WeightsNotFoundError,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # Counterfactual needs torch; loaded on first use so that `import medcf` (and the
    # CLI's --help) stays light.
    if name == "Counterfactual":
        from medcf.types import Counterfactual

        return Counterfactual
    raise AttributeError(f"module 'medcf' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "Counterfactual",
    "DataError",
    "MedcfError",
    "NotFittedError",
    "ShapeError",
    "WeightsNotFoundError",
    "__version__",
]
