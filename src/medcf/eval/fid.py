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

import numpy as np
import torch
import torch.nn.functional as F
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


def fid_inception_network(weights: str | os.PathLike | None = None) -> nn.Module:
    """pytorch-fid's FID Inception (torchvision's InceptionV3 with pytorch-fid's FID blocks, 1008
    classes, no aux head) with the weights of a local file; nothing downloads."""
    import torchvision
    from pytorch_fid import inception as pf

    path = inception_weights_path(weights)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    net.Mixed_5b, net.Mixed_5c = pf.FIDInceptionA(192, pool_features=32), pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b, net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=128), pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d, net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=160), pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b, net.Mixed_7c = pf.FIDInceptionE_1(1280), pf.FIDInceptionE_2(2048)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


# pool3 of the FID Inception: the layers pytorch-fid's InceptionV3 runs for its 2048-d block
_POOL3 = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "maxpool", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


class InceptionFeatures(nn.Module):
    """pytorch-fid's InceptionV3 pool3 features [B, 2048] from a local weights file.

    The same computation as ``pytorch_fid.inception.InceptionV3([3])``: bilinear resize to 299,
    [0, 1] -> [-1, 1], the FID Inception up to its global average pool (checked against it in
    tests/test_metrics.py).
    """

    def __init__(self, weights: str | os.PathLike | None = None):
        super().__init__()
        self.net = fid_inception_network(weights)

    def features(self, x: Tensor) -> Tensor:  # [B, C, H, W] in [-1, 1] -> [B, 2048]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x01 = ((x + 1) / 2).clamp(0, 1)  # the [0, 1] images pytorch-fid takes
        h = F.interpolate(x01, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        for name in _POOL3:
            h = F.max_pool2d(h, kernel_size=3, stride=2) if name == "maxpool" else getattr(self.net, name)(h)
        return F.adaptive_avg_pool2d(h, 1).flatten(1)


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
