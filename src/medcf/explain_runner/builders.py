"""Method name + checkpoint paths -> a ready explainer, through the one method table.

Example:
    >>> ex = build_explainer("latent-shift", "runs/demo/classifier", "runs/demo/vae", take_at=0.99)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

from medcf.counterfactual.checkpoints import NONE, generator_shape, setting_error
from medcf.counterfactual.latent_probe import build as build_latent_probe_method
from medcf.counterfactual.latent_shift import build as build_latent_shift
from medcf.types import Explainer

log = logging.getLogger(__name__)


def build_explainer(method: str, classifier_dir, generator_dir, **opts) -> Explainer:
    """``METHODS[method].build(classifier_dir, generator_dir, **opts)`` with one-line errors.

    Options the method does not take are dropped (a warning names those that were set);
    None values are dropped (the method's defaults apply).
    """
    from medcf.counterfactual.registry import METHODS

    if method not in METHODS:
        raise setting_error("method", f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    spec = METHODS[method]
    accepts = set(spec.accepts()) if hasattr(spec, "accepts") else set(spec.options)
    if opts.get("direction") is not None and "direction" not in accepts:
        raise setting_error("direction", f"not supported by method {method}")
    ignored = sorted(k for k, v in opts.items()
                     if k not in accepts and k not in ("progress", "device") and v not in (None, False))
    if ignored:
        log.warning("%s ignores option(s) %s", method, ignored)
    config_fields = set(accepts) - set(spec.options)
    passed = {k: v for k, v in opts.items() if (k in accepts or k in ("progress", "device")) and v is not None
              and not (v is NONE and k not in config_fields)}  # NONE: a config field set to None
    return spec.build(classifier_dir, generator_dir, **passed)


def explainer_input_shape(explainer: Any) -> tuple[int | None, int | None]:
    """(channels, resolution) the explainer's generator works at (None when unknown)."""
    for owner in ("autoencoder", "generator", "encoder"):
        ch, res = generator_shape(getattr(explainer, owner, None))
        if ch is not None:
            return ch, res
    clf = getattr(explainer, "classifier", None)
    return getattr(clf, "in_channels", None), getattr(clf, "resolution", None)


__all__ = ["build_explainer", "build_latent_probe_method", "build_latent_shift", "explainer_input_shape"]
