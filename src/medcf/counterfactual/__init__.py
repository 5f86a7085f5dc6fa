"""medcf.counterfactual: one explainer per module, bound to a classifier at construction.

Example:
    >>> from medcf.counterfactual import LatentShift
    >>> cf = LatentShift(autoencoder=vae, classifier=clf).explain(x, target=1)  # doctest: +SKIP
"""

from medcf.counterfactual.gvr import GVR, GVRConfig
from medcf.counterfactual.latent_probe import (
    LatentProbe,
    LatentProbeConfig,
    ProbeFit,
    build_latent_probe,
)
from medcf.counterfactual.latent_shift import LatentShift, LatentShiftConfig
from medcf.counterfactual.vagan import VAGAN, VAGANExplainConfig

__all__ = [
    "GVR",
    "GVRConfig",
    "LatentProbe",
    "LatentProbeConfig",
    "LatentShift",
    "LatentShiftConfig",
    "ProbeFit",
    "VAGAN",
    "VAGANExplainConfig",
    "build_latent_probe",
]
