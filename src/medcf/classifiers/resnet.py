"""A small ResNet for 1- or 3-channel images at 32-256 px, in five checkpoint kinds.

Layout: stem conv (stride ``stem_stride``) -> stages of basic residual blocks
(the first block of every stage after the first halves the size) -> global
average pool (the ``features``) -> dropout -> linear head.

The five kinds share the network and differ in what the head predicts:

- ``classifier``     the model to explain (softmax or single sigmoid logit);
- ``oracle``         an independent judge of the same family (other seed and width);
- ``fo-detector``    multi-label presence of each foreign object (``FO_NAMES``);
- ``ctr-regressor``  the cardiothoracic ratio, one value;
- ``cpr-scorer``     the costophrenic-recess state: one logit of "blunted" (vs "sharp").

Example:
    >>> cfg = ResNetConfig(in_channels=1, resolution=64, class_names=("normal", "cardiomegaly"))
    >>> clf = ResNetClassifier(cfg, seed=0)
    >>> clf(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.classifiers.base import Classifier, check_head
from medcf.errors import CheckpointError
from medcf.io import SavableModule, read_header


@dataclass(frozen=True)
class ResNetConfig:
    in_channels: int = 1                  # 1 (grayscale) or 3
    resolution: int = 64                  # input height = width, 32..256
    class_names: tuple[str, ...] = ("normal", "cardiomegaly")  # one per output (2 for sigmoid)
    num_outputs: int = 2                  # K, the width of the output [B, K]
    head: str = "softmax"                 # softmax | sigmoid | multilabel | regression
    widths: tuple[int, ...] = (16, 32, 64)  # channels per stage
    blocks: tuple[int, ...] = (1, 1, 1)   # residual blocks per stage
    stem_stride: int = 1                  # 1, 2 or 4: downsampling in the stem (large inputs)
    dropout: float = 0.0                  # before the linear head

    def __post_init__(self):
        where = "ResNetConfig"
        if self.in_channels not in (1, 3):
            raise ValueError(f"{where}: in_channels must be 1 or 3, got {self.in_channels}")
        if not 16 <= self.resolution <= 512:
            raise ValueError(f"{where}: resolution must lie in [16, 512], got {self.resolution}")
        if len(self.widths) == 0 or len(self.widths) != len(self.blocks):
            raise ValueError(f"{where}: widths and blocks need the same non-zero length, "
                             f"got {self.widths} and {self.blocks}")
        if min(self.widths) < 1 or min(self.blocks) < 1:
            raise ValueError(f"{where}: widths and blocks must be positive, got {self.widths}, {self.blocks}")
        if self.stem_stride not in (1, 2, 4):
            raise ValueError(f"{where}: stem_stride must be 1, 2 or 4, got {self.stem_stride}")
        if self.resolution % (self.stem_stride * 2 ** (len(self.widths) - 1)) != 0:
            raise ValueError(f"{where}: resolution {self.resolution} must be divisible by "
                             f"stem_stride * 2**(stages-1) = {self.stem_stride * 2 ** (len(self.widths) - 1)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{where}: dropout must lie in [0, 1), got {self.dropout}")
        check_head(self.head, self.num_outputs, self.class_names, where=where)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU.  [B, Cin, H, W] -> [B, Cout, H/s, W/s]"""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + skip)


class ResNetClassifier(SavableModule, Classifier):
    """The medcf reference classifier (kind ``classifier``).

    ``seed`` (or ``generator``) sets the initial weights; it is not part of the config
    and global RNG state is never touched.  Input ``[B, C, H, W]`` in ``[-1, 1]``;
    ``forward`` -> ``[B, K]``; ``features`` -> ``[B, widths[-1]]``.

    Example:
        >>> clf = ResNetClassifier.load("runs/classifier")   # doctest: +SKIP
        >>> clf.probabilities(x)[:, 1]                       # doctest: +SKIP
    """

    kind: ClassVar[str] = "classifier"
    config_class: ClassVar[type] = ResNetConfig
    allowed_heads: ClassVar[tuple[str, ...]] = ("softmax", "sigmoid")

    def __init__(self, config: ResNetConfig, *, seed: int = 0,
                 generator: torch.Generator | None = None):
        super().__init__(config)
        if config.head not in self.allowed_heads:
            raise ValueError(f"{type(self).__name__}: head must be one of {self.allowed_heads}, "
                             f"got {config.head!r}")
        self.class_names = tuple(config.class_names)
        self.head = config.head
        self.in_channels = config.in_channels
        self.resolution = config.resolution
        with torch.device("meta"):  # built without touching any RNG, then initialised below
            w0 = config.widths[0]
            k = 3 if config.stem_stride == 1 else 2 * config.stem_stride - 1
            self.stem = nn.Sequential(
                nn.Conv2d(config.in_channels, w0, k, config.stem_stride, k // 2, bias=False),
                nn.BatchNorm2d(w0), nn.ReLU())
            stages, cin = [], w0
            for i, (width, n) in enumerate(zip(config.widths, config.blocks, strict=True)):
                blocks = [BasicBlock(cin, width, 1 if i == 0 else 2)]
                blocks += [BasicBlock(width, width, 1) for _ in range(n - 1)]
                stages.append(nn.Sequential(*blocks))
                cin = width
            self.stages = nn.Sequential(*stages)
            self.drop = nn.Dropout(config.dropout)
            self.fc = nn.Linear(config.feature_dim, config.num_outputs)
        self.to_empty(device="cpu")
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
        self.reset_parameters(generator)

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"channels": self.in_channels, "head": self.head}

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Kaiming-normal convs, zero-initialised last BN of every block, small linear head."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
                m.num_batches_tracked.zero_()
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=generator)
                m.bias.zero_()
        for m in self.modules():
            if isinstance(m, BasicBlock):
                m.bn2.weight.zero_()  # each block starts as the identity

    def features(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, D]
        self.check_input(x)
        h = self.stages(self.stem(x))
        return h.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, K]
        return self.fc(self.drop(self.features(x)))


class OracleClassifier(ResNetClassifier):
    """An independent judge (kind ``oracle``): same family, other seed and width."""

    kind: ClassVar[str] = "oracle"


class ForeignObjectDetector(ResNetClassifier):
    """Multi-label presence of foreign objects (kind ``fo-detector``); sigmoid outputs.

    Example:
        >>> det = ForeignObjectDetector.load("runs/fo")   # doctest: +SKIP
        >>> det.probabilities(x)                          # doctest: +SKIP  [B, 3]
    """

    kind: ClassVar[str] = "fo-detector"
    allowed_heads: ClassVar[tuple[str, ...]] = ("multilabel",)


class CTRRegressor(ResNetClassifier):
    """Predicts the cardiothoracic ratio (kind ``ctr-regressor``); one output, ``[B, 1]``.

    Example:
        >>> reg = CTRRegressor.load("runs/ctr")   # doctest: +SKIP
        >>> reg.predict_ctr(x)                    # doctest: +SKIP  [B]
    """

    kind: ClassVar[str] = "ctr-regressor"
    allowed_heads: ClassVar[tuple[str, ...]] = ("regression",)

    def predict_ctr(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B]
        return self(x)[:, 0]


class CPRScorer(ResNetClassifier):
    """Scores the costophrenic recess (kind ``cpr-scorer``): one logit ``[B, 1]`` of
    "blunted" (class names ``("sharp", "blunted")``); the recess score is its sigmoid.

    Example:
        >>> cpr = CPRScorer.load("runs/cpr")    # doctest: +SKIP
        >>> cpr.recess_score(x)                 # doctest: +SKIP  [B] P(blunted)
    """

    kind: ClassVar[str] = "cpr-scorer"
    allowed_heads: ClassVar[tuple[str, ...]] = ("sigmoid",)

    def recess_score(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B] in [0, 1]
        return torch.sigmoid(self(x)[:, 0])


CLASSIFIERS: dict[str, type[ResNetClassifier]] = {
    "classifier": ResNetClassifier,
    "oracle": OracleClassifier,
    "fo-detector": ForeignObjectDetector,
    "ctr-regressor": CTRRegressor,
    "cpr-scorer": CPRScorer,
}


def load_classifier(path, *, kind: str | None = None, device: str | torch.device = "cpu") -> Any:
    """Load any of the five kinds from a model or run directory.

    ``kind`` (optional) is the kind you expect; a checkpoint of another kind is a
    one-line ``CheckpointError``.

    Example:
        >>> oracle = load_classifier("runs/oracle", kind="oracle")   # doctest: +SKIP
    """
    if kind is not None and kind not in CLASSIFIERS:
        raise ValueError(f"kind: expected one of {sorted(CLASSIFIERS)}, got {kind!r}")
    header = read_header(path)
    found = header["kind"]
    if found not in CLASSIFIERS:
        raise CheckpointError(f"{header['path']}: is a '{found}' checkpoint, not a classifier "
                              f"(expected one of {sorted(CLASSIFIERS)})")
    if kind is not None and found != kind:
        raise CheckpointError(f"{header['path']}: is a '{found}' checkpoint, expected '{kind}'")
    return CLASSIFIERS[found].load(header["path"], device=device)
