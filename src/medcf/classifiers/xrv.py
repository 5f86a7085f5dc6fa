"""TorchXRayVision models behind the medcf ``Classifier`` interface.

TorchXRayVision (``pip install medcf[torchxrayvision]``) classifiers take one
channel scaled to ``[-1024, 1024]`` at 224 px and return one output per entry
of ``model.targets`` (18 pathologies for the DenseNet); with published weights
they return probabilities re-scaled so that each operating point maps to 0.5.
``XRVClassifier`` turns medcf images (``[B, 1 or 3, H, W]`` in ``[-1, 1]``)
into that input (grey = channel mean, ``x * 1024``, centre crop to a square,
bilinear resize with antialiasing) and returns logits of the selected
pathologies: ``[B, 1]`` (head ``sigmoid``, class names ``("no P", "P")``) for
one pathology, ``[B, K]`` (head ``multilabel``) for several. Probability outputs
(``op_threshs`` or ``apply_sigmoid``) are mapped back to logits, so logit 0 is
the model's operating point.

Weights cannot be downloaded in medcf's tests; ``xrv_densenet(weights=None)``
builds the architecture with random weights, and a name such as
``"densenet121-res224-all"`` loads published weights from TorchXRayVision's
cache (``~/.torchxrayvision``; it downloads them when it can).

Example:
    >>> from medcf.classifiers.xrv import xrv_densenet
    >>> clf = xrv_densenet("Effusion", weights=None)               # doctest: +SKIP
    >>> clf(torch.zeros(2, 1, 64, 64)).shape, clf.class_names      # doctest: +SKIP
    (torch.Size([2, 1]), ('no Effusion', 'Effusion'))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.classifiers.base import Classifier
from medcf.errors import MedcfError, ShapeError

XRV_RANGE = 1024.0  # TorchXRayVision's intensity scale: [-1024, 1024]
XRV_SIZE = 224      # input size of the published DenseNet/ResNet weights
_EPS = 1e-6         # clamp before turning probabilities back into logits


def _import_xrv():
    try:
        import torchxrayvision
    except ImportError as e:
        raise MedcfError("torchxrayvision is not installed (pip install 'medcf[torchxrayvision]')") from e
    return torchxrayvision


def model_targets(model: nn.Module) -> tuple[str, ...]:
    """The output names of a TorchXRayVision model (``targets``, or older ``pathologies``)."""
    names = getattr(model, "targets", None) or getattr(model, "pathologies", None)
    if not names:
        raise MedcfError(f"{type(model).__name__}: no 'targets' or 'pathologies' attribute; "
                         "not a TorchXRayVision classifier")
    return tuple(str(n) for n in names)


class XRVClassifier(Classifier):
    """A TorchXRayVision classifier restricted to ``pathologies`` (see module doc).

    Args:
        model: a TorchXRayVision classifier (``xrv.models.DenseNet(...)``, ...) or any module
            with ``targets`` returning ``[B, len(targets)]``.
        pathologies: one name (-> ``[B, 1]``, sigmoid head) or several (-> ``[B, K]``,
            multilabel head); names as in ``model.targets`` (case-insensitive).
        size: the side the model is fed (224 for the published weights).

    Example:
        >>> import torchxrayvision as xrv                                              # doctest: +SKIP
        >>> clf = XRVClassifier(xrv.models.DenseNet(weights=None), "Cardiomegaly")     # doctest: +SKIP
        >>> clf.probabilities(x)[:, 1]                                                 # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, pathologies: str | Sequence[str], *, size: int = XRV_SIZE):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"XRVClassifier: model must be an nn.Module, got {type(model).__name__}")
        targets = model_targets(model)
        wanted = [pathologies] if isinstance(pathologies, str) else list(pathologies)
        if not wanted:
            raise MedcfError("XRVClassifier: pathologies is empty")
        lower = {t.lower(): i for i, t in enumerate(targets) if t}
        missing = [p for p in wanted if str(p).lower() not in lower]
        if missing:
            known = ", ".join(t for t in targets if t)
            raise MedcfError(f"XRVClassifier: unknown pathology {missing[0]!r} (this model predicts: {known})")
        if not 16 <= int(size) <= 1024:
            raise MedcfError(f"XRVClassifier: size must be in 16..1024, got {size}")
        self.model = model
        self.size = int(size)
        names = tuple(targets[lower[str(p).lower()]] for p in wanted)
        self.pathologies = names
        self.register_buffer("index", torch.tensor([lower[str(p).lower()] for p in wanted]), persistent=False)
        if len(names) == 1:
            self.head = "sigmoid"
            self.class_names = (f"no {names[0]}", names[0])
        else:
            self.head = "multilabel"
            self.class_names = names

    @property
    def returns_probabilities(self) -> bool:
        """True when the wrapped model applies a sigmoid (operating-point weights or apply_sigmoid)."""
        return (getattr(self.model, "op_threshs", None) is not None
                or bool(getattr(self.model, "apply_sigmoid", False)))

    def to_xrv(self, x: Tensor) -> Tensor:  # [B, 1|3, H, W] in [-1, 1] -> [B, 1, size, size] in [-1024, 1024]
        """The input TorchXRayVision expects: grey, ``x * 1024``, square, ``size`` px."""
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"XRVClassifier input: expected [B, 1 or 3, H, W] in [-1, 1], got {shape}")
        grey = x.mean(dim=1, keepdim=True) if x.shape[1] == 3 else x
        h, w = grey.shape[-2:]
        if h != w:  # centre crop to a square, as TorchXRayVision's XRayCenterCrop
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            grey = grey[..., top:top + s, left:left + s]
        if grey.shape[-1] != self.size:
            grey = F.interpolate(grey, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                 antialias=grey.shape[-1] > self.size)
        return grey.clamp(-1.0, 1.0) * XRV_RANGE

    def forward(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, K] logits of the selected pathologies
        out = self.model(self.to_xrv(x))
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[1] <= int(self.index.max()):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ShapeError(f"XRVClassifier: model returned {shape}, expected [B, {len(model_targets(self.model))}]")
        out = out.index_select(1, self.index.to(out.device))
        if self.returns_probabilities:
            out = torch.logit(out.clamp(_EPS, 1.0 - _EPS))
        return out

    def features(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, D]
        feats = getattr(self.model, "features2", None)
        if callable(feats):
            return feats(self.to_xrv(x))
        return super().features(x)


def xrv_densenet(pathologies: str | Sequence[str] = "Effusion", *, weights: str | None = None,
                 **densenet_kwargs) -> XRVClassifier:
    """An ``XRVClassifier`` around ``torchxrayvision.models.DenseNet(weights=weights, ...)``.

    ``weights=None`` (the default) builds random weights without any download; extra keyword
    arguments go to the DenseNet (e.g. ``block_config=(2, 2)`` for a small test network).

    Example:
        >>> clf = xrv_densenet(["Effusion", "Cardiomegaly"])     # doctest: +SKIP
        >>> clf.head, clf.class_names                            # doctest: +SKIP
        ('multilabel', ('Effusion', 'Cardiomegaly'))
    """
    xrv = _import_xrv()
    model = xrv.models.DenseNet(weights=weights, **densenet_kwargs)
    return XRVClassifier(model.eval(), pathologies)
