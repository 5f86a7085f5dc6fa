"""Out-of-distribution warning: is a query like the images the generator was trained on?

An explainer that reconstructs or inverts its input (an autoencoder's ``D(E(x))``, a
StyleGAN2 encoder's ``G(E(x))``) reconstructs in-distribution images well and others
badly; a counterfactual built from a bad reconstruction explains the generator's
guess, not the image. At training time the recipes (``train_autoencoder``,
``train_encoder``) record the per-image reconstruction error on held-out images of
the training distribution in ``MODEL_DIR/ood.json``; at explain time
``medcf.explain_runner.explain_dataset`` compares each query's error (the model's own
reconstruction of ``cf.original``, else ``cf.reconstruction``) with it and flags queries above
``factor x`` the recorded 99th percentile (a warning on the log, ``"ood"`` in the
per-query JSON, a column in ``medcf evaluate``'s queries.csv).

The error is the mean absolute difference per image in [-1, 1] units, as
``reconstruction_figures`` reports.

Example::

    from medcf.eval.ood import load_profile, mark_ood
    profile = load_profile("runs/vae/model")          # None for models trained before this
    cf = LatentShift(autoencoder=vae, classifier=clf).explain(x)
    flagged = mark_ood(cf, profile)                   # [B] bool; also cf.info["ood"]
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medcf.errors import CheckpointError, DataError

log = logging.getLogger(__name__)

PROFILE_NAME = "ood.json"
DEFAULT_FACTOR = 1.5      # flag errors above 1.5 x the training 99th percentile
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class ReconstructionProfile:
    """Per-image reconstruction errors of held-out training-distribution images."""

    n: int                       # images measured
    mean: float
    std: float
    p50: float
    p90: float
    p99: float
    max: float
    factor: float = DEFAULT_FACTOR
    measure: str = "mean_abs"    # mean |reconstruction - image| per image, [-1, 1] units
    source: str = ""             # what was measured (e.g. "runs/data val split")

    @property
    def threshold(self) -> float:
        """Errors above this are flagged: ``factor`` x the 99th percentile."""
        return self.factor * self.p99


def reconstruction_error(original: Tensor, reconstruction: Tensor) -> Tensor:
    """[B, C, H, W] x2 -> [B] mean absolute difference per image."""
    if original.shape != reconstruction.shape or original.ndim != 4:
        raise DataError(f"reconstruction_error: expected two equal [B, C, H, W] tensors, got "
                        f"{tuple(original.shape)} and {tuple(reconstruction.shape)}")
    return (reconstruction.detach().float() - original.detach().float()).abs().mean(dim=(1, 2, 3)).cpu()


def profile_from_errors(errors: Tensor, *, source: str = "", factor: float = DEFAULT_FACTOR,
                        ) -> ReconstructionProfile:
    """Summarise [N] errors (N >= 2) into a ``ReconstructionProfile``."""
    e = torch.as_tensor(errors, dtype=torch.float64).reshape(-1)
    if e.numel() < 2 or not bool(torch.isfinite(e).all()):
        raise DataError(f"{source or 'errors'}: need >= 2 finite reconstruction errors, got {e.numel()}")
    if not (factor >= 1.0 and math.isfinite(factor)):
        raise ValueError(f"factor: must be a finite number >= 1, got {factor}")
    q = torch.quantile(e, torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    return ReconstructionProfile(n=int(e.numel()), mean=float(e.mean()), std=float(e.std()), p50=q[0],
                                 p90=q[1], p99=q[2], max=float(e.max()), factor=float(factor), source=source)


def save_profile(profile: ReconstructionProfile, model_dir: str | os.PathLike) -> Path:
    """Write ``MODEL_DIR/ood.json`` (atomically)."""
    from medcf.io import atomic_write_text

    return atomic_write_text(Path(model_dir) / PROFILE_NAME, json.dumps(asdict(profile), indent=2) + "\n")


def load_profile(model_dir: str | os.PathLike) -> ReconstructionProfile | None:
    """The profile recorded with a model, or None when it has none (older models)."""
    path = Path(model_dir) / PROFILE_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        fields = {k: data[k] for k in ("n", "mean", "std", "p50", "p90", "p99", "max")}
        profile = ReconstructionProfile(**fields, factor=float(data.get("factor", DEFAULT_FACTOR)),
                                        measure=str(data.get("measure", "mean_abs")),
                                        source=str(data.get("source", "")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not a reconstruction-error profile ({type(e).__name__}: {e})") from None
    values = (profile.p50, profile.p90, profile.p99, profile.max, profile.factor)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values):
        raise CheckpointError(f"{path}: reconstruction-error profile has non-finite or negative values")
    return profile


@torch.no_grad()
def record_profile(reconstruct: Callable[[Tensor], Tensor], images: Iterable[Tensor | dict],
                   model_dir: str | os.PathLike, *, source: str = "", limit: int = 512,
                   factor: float = DEFAULT_FACTOR, device: str | torch.device | None = None,
                   ) -> ReconstructionProfile:
    """Measure ``reconstruct`` on up to ``limit`` held-out images and write ``ood.json``.

    ``images``: batches, as [B, C, H, W] tensors or sample dicts with ``"image"``.

    Example:
        >>> record_profile(vae.reconstruct, DataLoader(val_ds, batch_size=64), "runs/vae/model")  # doctest: +SKIP
    """
    errors, n = [], 0
    for batch in images:
        x = batch["image"] if isinstance(batch, dict) else batch
        x = x[: limit - n]
        if device is not None:
            x = x.to(device)
        errors.append(reconstruction_error(x, reconstruct(x)))
        n += x.shape[0]
        if n >= limit:
            break
    profile = profile_from_errors(torch.cat(errors) if errors else torch.zeros(0), source=source,
                                  factor=factor)
    save_profile(profile, model_dir)
    log.info("reconstruction-error profile (%d images, p99 %.4g) written to %s", profile.n, profile.p99,
             Path(model_dir) / PROFILE_NAME)
    return profile


@dataclass(frozen=True)
class FoundProfile:
    """A profile, the model directory it came from, and that model's ``reconstruct`` if any."""

    profile: ReconstructionProfile
    where: Path
    reconstruct: Callable[[Tensor], Tensor] | None = None


def find_profile(explainer: Any) -> FoundProfile | None:
    """The profile of the first model an explainer holds that was loaded from a directory
    with an ``ood.json`` (``SavableModule.load`` records ``loaded_from``), or None."""
    for value in vars(explainer).values():
        where = getattr(value, "loaded_from", None) if isinstance(value, nn.Module) else None
        if where is not None:
            profile = load_profile(where)
            if profile is not None:
                return FoundProfile(profile, Path(where), getattr(value, "reconstruct", None))
    return None


def mark_ood(cf, profile: ReconstructionProfile | None, *, where: str = "the generator",
             reconstruct: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Flag queries whose reconstruction error exceeds ``profile.threshold``; -> [B] bool.

    The error is ``reconstruct(cf.original)`` against ``cf.original`` when ``reconstruct``
    (the model's own, as at training time) is given, else ``cf.reconstruction`` unless the
    frames are residual-composed (then ``cf.reconstruction`` is the input itself and
    nothing is flagged). Adds per-query lists to ``cf.info``: ``reconstruction_error``,
    ``ood_ratio`` (error / the training 99th percentile) and ``ood``; logs one warning
    when any query is flagged.
    """
    b = len(cf)
    settings = cf.info.get("settings") if isinstance(cf.info, dict) else None
    residual = isinstance(settings, dict) and settings.get("compose") == "residual"
    if profile is None or (reconstruct is None and (cf.reconstruction is None or residual)):
        return torch.zeros(b, dtype=torch.bool)
    if reconstruct is not None:
        with torch.no_grad():
            err = reconstruction_error(cf.original, reconstruct(cf.original))
    else:
        err = reconstruction_error(cf.original, cf.reconstruction)
    flagged = err > profile.threshold
    ratio = err / max(profile.p99, 1e-12)
    cf.info["reconstruction_error"] = [round(float(v), 6) for v in err]
    cf.info["ood_ratio"] = [round(float(v), 3) for v in ratio]
    cf.info["ood"] = [bool(v) for v in flagged]
    cf.info["ood_threshold"] = profile.threshold
    if flagged.any():
        log.warning("%d of %d queries look out of distribution for %s: reconstruction error up to "
                    "%.1fx the 99th percentile of its training data (flag at %.1fx); their "
                    "counterfactuals may explain the generator's guess, not the image",
                    int(flagged.sum()), b, where, float(ratio.max()), profile.factor)
    return flagged


__all__ = ["DEFAULT_FACTOR", "PROFILE_NAME", "FoundProfile", "ReconstructionProfile", "find_profile", "load_profile",
           "mark_ood", "profile_from_errors", "reconstruction_error", "record_profile", "save_profile"]
