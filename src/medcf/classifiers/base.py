"""The classifier interface every explainer and metric relies on.

A ``Classifier`` is an ``nn.Module`` mapping images ``[B, C, H, W]`` in ``[-1, 1]``
to raw outputs ``[B, K]`` and carrying ``class_names`` and a ``head`` that says
how to read those outputs:

==============  ===========================  =============================================
head            outputs                      class_names
==============  ===========================  =============================================
``softmax``     K >= 2 logits (one class)    K names
``sigmoid``     K == 1 logit (binary)        2 names: (negative, positive)
``multilabel``  K independent sigmoid logits K names, one per label
``regression``  K raw values                 K names, one per target
==============  ===========================  =============================================

Example:
    >>> clf = Classifier.wrap(my_net, class_names=("normal", "cardiomegaly"))  # doctest: +SKIP
    >>> clf.probabilities(x)                                                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from medcf.errors import CheckpointError, ShapeError

HEADS = ("softmax", "sigmoid", "multilabel", "regression")


def check_head(head: str, num_outputs: int, class_names: Sequence[str], *, where: str) -> None:
    """Raise ``ValueError`` unless ``head``, ``num_outputs`` and ``class_names`` agree."""
    if head not in HEADS:
        raise ValueError(f"{where}: head must be one of {HEADS}, got {head!r}")
    if num_outputs < 1:
        raise ValueError(f"{where}: num_outputs must be >= 1, got {num_outputs}")
    names = tuple(class_names)
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: class_names must be distinct, got {names}")
    if head == "softmax" and (num_outputs < 2 or len(names) != num_outputs):
        raise ValueError(f"{where}: a softmax head needs num_outputs >= 2 and as many class_names, "
                         f"got {num_outputs} outputs and {len(names)} names")
    if head == "sigmoid" and (num_outputs != 1 or len(names) != 2):
        raise ValueError(f"{where}: a sigmoid head needs num_outputs == 1 and 2 class_names, "
                         f"got {num_outputs} outputs and {len(names)} names")
    if head in ("multilabel", "regression") and len(names) != num_outputs:
        raise ValueError(f"{where}: a {head} head needs one name per output, "
                         f"got {num_outputs} outputs and {len(names)} names")


class Classifier(nn.Module):
    """Base of medcf classifiers: outputs ``[B, K]`` plus ``class_names`` and ``head``.

    Subclasses implement ``forward`` (and ``features`` when they can).
    """

    class_names: tuple[str, ...]
    head: str
    in_channels: int | None = None
    resolution: int | None = None

    # -- reading the outputs -------------------------------------------------------------

    def probabilities(self, x: Tensor) -> Tensor:
        """Class probabilities: ``[B, K]`` (softmax, multilabel) or ``[B, 2]`` (sigmoid)."""
        logits = self(x)
        if self.head == "softmax":
            return torch.softmax(logits, dim=1)
        if self.head == "sigmoid":
            p = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - p, p], dim=1)
        if self.head == "multilabel":
            return torch.sigmoid(logits)
        raise TypeError(f"{type(self).__name__}: a regression head has no probabilities")

    def predict(self, x: Tensor) -> Tensor:
        """Decisions: class indices ``[B]`` (softmax, sigmoid), bools ``[B, K]`` (multilabel),
        values ``[B, K]`` (regression)."""
        out = self(x)
        if self.head == "softmax":
            return out.argmax(dim=1)
        if self.head == "sigmoid":
            return (out[:, 0] > 0).long()
        if self.head == "multilabel":
            return out > 0
        return out

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def features(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, D]
        raise NotImplementedError(f"{type(self).__name__} does not expose penultimate features")

    def check_input(self, x: Tensor) -> None:
        """Raise ``ShapeError`` unless ``x`` is ``[B, C, H, W]`` with this model's C and size."""
        if not isinstance(x, Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"{type(self).__name__} input: expected [B, C, H, W], got {shape}")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ShapeError(f"{type(self).__name__} input: expected {self.in_channels} channel(s), "
                             f"got {x.shape[1]} (shape {tuple(x.shape)})")
        if self.resolution is not None and tuple(x.shape[2:]) != (self.resolution, self.resolution):
            raise ShapeError(f"{type(self).__name__} input: expected {self.resolution}x"
                             f"{self.resolution} pixels, got {x.shape[2]}x{x.shape[3]}")

    # -- wrapping user models ------------------------------------------------------------

    @staticmethod
    def wrap(model: nn.Module, *, class_names: Sequence[str],
             preprocess: Callable[[Tensor], Tensor] | None = None,
             head: str | None = None) -> WrappedClassifier:
        """Wrap any ``nn.Module`` returning logits so explainers and metrics can use it.

        ``preprocess`` maps medcf images (``[-1, 1]``) to what ``model`` expects; ``head``
        is inferred from the first output when not given (see ``WrappedClassifier``).

        Example:
            >>> net = torchvision.models.resnet18(num_classes=2)          # doctest: +SKIP
            >>> clf = Classifier.wrap(net, class_names=("normal", "cardiomegaly"),
            ...                       preprocess=lambda x: x.repeat(1, 3, 1, 1))  # doctest: +SKIP
        """
        return WrappedClassifier(model, class_names=class_names, preprocess=preprocess, head=head)


class WrappedClassifier(Classifier):
    """A user ``nn.Module`` behind the ``Classifier`` interface (see ``Classifier.wrap``).

    ``head`` defaults to ``"sigmoid"`` when ``class_names`` has 2 names and the model
    turns out to return a single logit, else ``"softmax"``; the output width is checked
    on every call. It cannot be saved as a medcf model directory: save ``model`` yourself.
    """

    def __init__(self, model: nn.Module, *, class_names: Sequence[str],
                 preprocess: Callable[[Tensor], Tensor] | None = None, head: str | None = None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"Classifier.wrap: model must be an nn.Module, got {type(model).__name__}")
        if preprocess is not None and not callable(preprocess):
            raise TypeError("Classifier.wrap: preprocess must be callable")
        names = tuple(str(n) for n in class_names)
        if head is not None:
            num = 1 if head == "sigmoid" else len(names)
            check_head(head, num, names, where="Classifier.wrap")
        elif len(names) < 2:
            raise ValueError(f"Classifier.wrap: need at least 2 class_names, got {names}")
        self.model = model
        self.preprocess = preprocess
        self.class_names = names
        self._head = head

    @property
    def head(self) -> str:  # type: ignore[override]
        return self._head or "softmax"

    def _inputs(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"wrapped classifier input: expected [B, C, H, W], got {shape}")
        return self.preprocess(x) if self.preprocess is not None else x

    def forward(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, K]
        out = self.model(self._inputs(x))
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ShapeError(f"wrapped classifier: model must return logits [B, K], got {shape}")
        if self._head is None:  # infer once from the first output
            two_names_one_logit = out.shape[1] == 1 and len(self.class_names) == 2
            self._head = "sigmoid" if two_names_one_logit else "softmax"
        expected = 1 if self._head == "sigmoid" else len(self.class_names)
        if out.shape[1] != expected:
            raise ShapeError(f"wrapped classifier: model returned {out.shape[1]} outputs, "
                             f"expected {expected} for {self._head} head with "
                             f"class_names {self.class_names}")
        return out

    def features(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, D]
        feats = getattr(self.model, "features", None)
        if callable(feats):
            out = feats(self._inputs(x))
            if isinstance(out, Tensor) and out.ndim == 2:
                return out
        return super().features(x)

    def save(self, path, **kwargs):
        raise CheckpointError(f"{path}: a wrapped classifier cannot be saved as a medcf model "
                              "directory; save the wrapped nn.Module yourself")
