"""medcf.counterfactual: one explainer per module, bound to a classifier at construction."""

from medcf.counterfactual.latent_shift import LatentShift, LatentShiftConfig

__all__ = ["LatentShift", "LatentShiftConfig"]
