"""Fréchet distance between feature distributions (FID), streamed.

FID = ||mu_r - mu_f||^2 + Tr(C_r + C_f - 2 (C_r C_f)^(1/2)) (Heusel et al. 2017),
computed by pytorch-fid's ``calculate_frechet_distance`` from the means and
unbiased covariances of the features of the real and the fake (counterfactual)
images. Two feature extractors:

- ``"inception"``: pytorch-fid's FID InceptionV3 (2048-d pool features). Its
  weights ``pt_inception-2015-12-05-6726825d.pth`` must be a local file
  (``inception_weights=PATH``) or sit in the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``); otherwise ``WeightsNotFoundError``.
  Nothing is downloaded. Comparable to published FIDs. Grayscale images are
  repeated to three channels; [-1, 1] is mapped to pytorch-fid's [0, 1].
- ``"domain"``: any module with ``features(x) -> [B, D]`` (e.g. the oracle's
  penultimate layer), or a plain callable ``x -> [B, D]``. Not comparable to
  published FIDs; the result always names the extractor used.

Example:
    >>> fid = FID(oracle)                               # domain features  # doctest: +SKIP
    >>> fid.update(real_batch, real=True); fid.update(cf.counterfactual, real=False)  # doctest: +SKIP
    >>> fid.compute().fid                                                  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import Tensor, nn

from medcf.errors import DataError, ShapeError, WeightsNotFoundError
from medcf.eval._common import evaluating, model_device

log = logging.getLogger(__name__)

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


@dataclass(frozen=True)
class FIDResult:
    fid: float
    extractor: str  # "inception" or "domain:<ClassName>"
    n_real: int
    n_fake: int

    def __float__(self) -> float:
        return self.fid

    def as_dict(self) -> dict:
        return asdict(self)


def inception_weights_path(path: str | os.PathLike | None = None) -> Path:
    """The FID Inception weights file: ``path`` if given, else the torch hub cache's copy."""
    candidate = Path(path) if path is not None else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not candidate.is_file():
        raise WeightsNotFoundError(
            f"FID Inception weights not found: expected {INCEPTION_FILE} at {candidate} "
            "(copy it there from pytorch-fid's release page, or use domain features)"
        )
    return candidate


class InceptionFeatures(nn.Module):
    """pytorch-fid's InceptionV3 pool3 features [B, 2048] from a local weights file."""

    def __init__(self, weights: str | os.PathLike | None = None):
        super().__init__()
        from pytorch_fid import inception

        path = inception_weights_path(weights)

        def local_state(url, *args, **kwargs):  # replaces the download inside fid_inception_v3
            return torch.load(path, map_location="cpu", weights_only=True)

        with mock.patch.object(inception, "load_state_dict_from_url", local_state):
            self.net = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        self.net.eval()

    def features(self, x: Tensor) -> Tensor:  # [B, C, H, W] in [-1, 1] -> [B, 2048]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x01 = ((x + 1) / 2).clamp(0, 1)  # pytorch-fid takes [0, 1] and rescales itself
        return self.net(x01)[0].flatten(1)


class FID:
    """Streaming FID: ``update(x, real=...)`` any number of times, then ``compute()``.

    Args:
        extractor: "inception", or a module with ``features(x) -> [B, D]`` / a callable.
        inception_weights: local path of the FID Inception weights (for "inception").
        name: how the result names a domain extractor (default ``domain:<ClassName>``).
    """

    def __init__(self, extractor: str | nn.Module | Callable[[Tensor], Tensor],
                 *, inception_weights: str | os.PathLike | None = None, name: str | None = None):
        if isinstance(extractor, str):
            if extractor != "inception":
                raise ValueError(f"extractor: expected 'inception' or a module, got {extractor!r}")
            self.module: nn.Module | None = InceptionFeatures(inception_weights)
            self.fn = self.module.features
            self.name = "inception"
        else:
            self.module = extractor if isinstance(extractor, nn.Module) else None
            feats = getattr(extractor, "features", None)
            self.fn = feats if inspect.ismethod(feats) else extractor  # a features() method, else call
            self.name = name or f"domain:{type(extractor).__name__}"
        self.reset()

    def reset(self) -> None:
        self._stats = {True: [0, None, None], False: [0, None, None]}  # n, sum [D], sum x x^T [D, D]

    def _features(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, D] float64
        if x.ndim != 4:
            raise ShapeError(f"FID.update: expected images [B, C, H, W], got {tuple(x.shape)}")
        if self.module is not None:
            with evaluating(self.module):
                f = self.fn(x.to(model_device(self.module)))
        else:
            with torch.no_grad():
                f = self.fn(x)
        if f.ndim != 2 or f.shape[0] != x.shape[0]:
            raise ShapeError(f"FID extractor {self.name}: expected features [B, D], got {tuple(f.shape)}")
        return f.detach().double().cpu()

    @property
    def n_real(self) -> int:
        return self._stats[True][0]

    @property
    def n_fake(self) -> int:
        return self._stats[False][0]

    def update(self, x: Tensor, *, real: bool) -> None:
        """Add a batch of images to the real or the fake set."""
        f = self._features(x)
        st = self._stats[bool(real)]
        if st[1] is not None and st[1].shape[0] != f.shape[1]:
            raise ShapeError(f"FID extractor {self.name}: feature size changed from {st[1].shape[0]} to {f.shape[1]}")
        st[0] += f.shape[0]
        st[1] = f.sum(0) if st[1] is None else st[1] + f.sum(0)
        st[2] = f.T @ f if st[2] is None else st[2] + f.T @ f

    def statistics(self, real: bool) -> tuple[np.ndarray, np.ndarray]:
        """(mean [D], unbiased covariance [D, D]) of one set, as pytorch-fid computes them."""
        n, s, ss = self._stats[bool(real)]
        if n < 2:
            which = "real" if real else "fake"
            raise DataError(f"FID: need at least 2 {which} images, got {n}")
        mu = s / n
        cov = (ss - n * torch.outer(mu, mu)) / (n - 1)
        return mu.numpy(), cov.numpy()

    def compute(self) -> FIDResult:
        """The Fréchet distance between the real and fake feature Gaussians."""
        from pytorch_fid.fid_score import calculate_frechet_distance

        mu_r, cov_r = self.statistics(True)
        mu_f, cov_f = self.statistics(False)
        value = float(calculate_frechet_distance(mu_f, cov_f, mu_r, cov_r))
        return FIDResult(fid=value, extractor=self.name, n_real=self.n_real, n_fake=self.n_fake)
