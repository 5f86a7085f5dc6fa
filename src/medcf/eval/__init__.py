"""medcf.eval: counterfactual metrics (see docs/metrics.md for definitions and sources).

Per-sample metrics are pure functions of tensors and models; FID streams.
"""

from medcf.eval.attributes import attribute_changes, attribute_preservation, seconds_per_query
from medcf.eval.clinical import (
    clinical_metrics,
    cpr_change,
    cpr_per_query,
    ctr_per_query,
    predict_ctr,
    recess_score,
)
from medcf.eval.fid import FID, FIDResult, InceptionFeatures, inception_weights_path
from medcf.eval.fop import (
    FO_NAMES,
    foreign_object_preservation,
    foreign_object_preservation_gt,
)
from medcf.eval.localization import auroc, boundary_band, mean_localization, ncc
from medcf.eval.lpips import LPIPS, lpips_distance, lpips_diversity
from medcf.eval.lpips_weights import import_lpips_weights, restricted_load
from medcf.eval.proximity import l1_distance, ssim
from medcf.eval.report import evaluate_counterfactuals
from medcf.eval.validity import (
    hidden_information,
    not_found,
    not_found_rate,
    oracle_validity,
    reached_target,
    singla_validity,
    validity,
)

__all__ = [
    "FID",
    "FIDResult",
    "FO_NAMES",
    "InceptionFeatures",
    "LPIPS",
    "attribute_changes",
    "attribute_preservation",
    "auroc",
    "boundary_band",
    "clinical_metrics",
    "cpr_change",
    "cpr_per_query",
    "ctr_per_query",
    "evaluate_counterfactuals",
    "foreign_object_preservation",
    "foreign_object_preservation_gt",
    "hidden_information",
    "import_lpips_weights",
    "inception_weights_path",
    "l1_distance",
    "lpips_distance",
    "lpips_diversity",
    "mean_localization",
    "ncc",
    "not_found",
    "not_found_rate",
    "oracle_validity",
    "predict_ctr",
    "recess_score",
    "reached_target",
    "restricted_load",
    "seconds_per_query",
    "singla_validity",
    "ssim",
    "validity",
]
