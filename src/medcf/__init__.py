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
from medcf.types import Counterfactual

__version__ = "0.1.0"

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
