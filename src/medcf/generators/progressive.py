"""Classifier-conditioned generator for progressive exaggeration (Singla et al., ICLR 2020 /
MedIA 2023) and DISSECT (Ghandeharioun et al., ICLR 2022).

``G(x, c, k)``: an encoder-decoder whose normalisation layers are conditioned on a
discrete condition: the bin ``c`` of the desired classifier posterior (``bins`` bins
of [0, 1]) and, for DISSECT, the concept ``k`` (``concepts`` channels; progressive
exaggeration is ``concepts == 1``). Conditional batch norm: batch statistics without
affine parameters, then a per-condition scale and shift looked up in an embedding
(condition index ``k * bins + c``).

The decoder predicts a change that is added to the input (``x + Δ``, clipped to
[-1, 1]): what the generator leaves at zero stays exactly the input, which keeps
thin foreign objects intact. (Singla et al. decode the image directly; the additive
output is medcf's choice, trained with the same losses.) With ``delta_scale`` s > 1 the change
is averaged over s x s cells and upsampled bilinearly: no texture finer than s pixels, which at
64 px keeps the generator from the classifier-specific streaks it otherwise learns
(docs/progressive.md).

Also here: the projection discriminator (Miyato & Koyama 2018) conditioned on the
bin, and DISSECT's disentangler ``R(x, x') -> concept logits``. Only the generator
is a saved model; the others live in the training state.

Example:
    >>> cfg = ProgressiveGeneratorConfig(resolution=32, channels=1, bins=10, width=8)
    >>> G = ProgressiveGenerator(cfg).eval()
    >>> x = torch.zeros(2, 1, 32, 32)
    >>> G(x, torch.tensor([0, 9])).shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.io import SavableModule
from medcf.types import check_images

KIND = "progressive-generator"


@dataclass(frozen=True)
class ProgressiveGeneratorConfig:
    resolution: int = 64          # input height = width (a multiple of 2**downsamples)
    channels: int = 1             # image channels
    bins: int = 10                # posterior bins of [0, 1]
    concepts: int = 1             # K concept channels (DISSECT); 1 = progressive exaggeration
    width: int = 32               # channels after the stem (doubled per downsampling)
    downsamples: int = 2          # stride-2 stages in the encoder (and upsampling stages back)
    blocks: int = 2               # residual blocks at the bottleneck
    delta_scale: int = 1          # the change Δ is averaged over delta_scale² cells and upsampled
                                  # bilinearly: 1 = full resolution, 4 = a 16 x 16 change at 64 px

    def __post_init__(self):
        where = "ProgressiveGeneratorConfig"
        for name in ("resolution", "channels", "bins", "concepts", "width", "downsamples", "blocks", "delta_scale"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{where}.{name}: expected an integer, got {v!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"{where}.channels: must be 1 or 3, got {self.channels}")
        if not 2 <= self.bins <= 100 or not 1 <= self.concepts <= 32:
            raise ValueError(f"{where}: bins in 2..100 and concepts in 1..32, got {self.bins}, {self.concepts}")
        if self.width < 1 or self.width > 512 or not 0 <= self.downsamples <= 6 or not 0 <= self.blocks <= 16:
            raise ValueError(f"{where}: width 1..512, downsamples 0..6, blocks 0..16, got "
                             f"{self.width}, {self.downsamples}, {self.blocks}")
        if not 8 <= self.resolution <= 1024 or self.resolution % (2 ** self.downsamples):
            raise ValueError(f"{where}.resolution: must be in 8..1024 and a multiple of "
                             f"2**downsamples = {2 ** self.downsamples}, got {self.resolution}")

        if self.delta_scale not in (1, 2, 4, 8, 16) or self.resolution % self.delta_scale:
            raise ValueError(f"{where}.delta_scale: must be 1, 2, 4, 8 or 16 and divide the resolution "
                             f"{self.resolution}, got {self.delta_scale}")

    @property
    def conditions(self) -> int:
        return self.bins * self.concepts


def posterior_bin(prob: Tensor, bins: int) -> Tensor:
    """[B] probabilities in [0, 1] -> [B] bin indices in 0..bins-1 (p = 1 falls in the last bin)."""
    return (prob.clamp(0.0, 1.0) * bins).floor().long().clamp_max(bins - 1)


def bin_center(c: Tensor, bins: int) -> Tensor:
    """[B] bin indices -> [B] the posterior each bin stands for (its centre)."""
    return (c.float() + 0.5) / bins


class CondBatchNorm(nn.Module):
    """Batch norm without affine weights, then a scale and shift chosen by the condition.

    [B, C, H, W], cond [B] (index in 0..n_conditions-1) -> [B, C, H, W]. Scales start at 1
    and shifts at 0, so an untrained layer is a plain batch norm for every condition.
    """

    def __init__(self, channels: int, n_conditions: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(n_conditions, channels)
        self.shift = nn.Embedding(n_conditions, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.norm(x)
        return h * self.scale(cond)[:, :, None, None] + self.shift(cond)[:, :, None, None]


class _CondBlock(nn.Module):
    """CBN-ReLU-conv, CBN-ReLU-conv with an identity skip."""

    def __init__(self, ch: int, n: int):
        super().__init__()
        self.n1, self.c1 = CondBatchNorm(ch, n), nn.Conv2d(ch, ch, 3, padding=1)
        self.n2, self.c2 = CondBatchNorm(ch, n), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.c1(F.relu(self.n1(x, cond)))
        return x + self.c2(F.relu(self.n2(h, cond)))


class ProgressiveGenerator(SavableModule):
    """``G(x, c, k)``: [B, C, H, W], bins [B], concepts [B] (optional) -> [B, C, H, W]."""

    kind = KIND
    config_class = ProgressiveGeneratorConfig

    def __init__(self, config: ProgressiveGeneratorConfig, *, seed: int | None = None):
        super().__init__(config)
        self.classifier_hash = ""  # fingerprint of the classifier it was trained for (saved in meta)
        if seed is not None:
            torch.manual_seed(seed)
        n, w = config.conditions, config.width
        self.stem = nn.Conv2d(config.channels, w, 7, padding=3)
        self.down = nn.ModuleList()
        self.down_norm = nn.ModuleList()
        ch = w
        for _ in range(config.downsamples):
            self.down_norm.append(CondBatchNorm(ch, n))
            self.down.append(nn.Conv2d(ch, min(ch * 2, 512), 4, stride=2, padding=1))
            ch = min(ch * 2, 512)
        self.blocks = nn.ModuleList(_CondBlock(ch, n) for _ in range(config.blocks))
        self.up = nn.ModuleList()
        self.up_norm = nn.ModuleList()
        for _ in range(config.downsamples):
            self.up_norm.append(CondBatchNorm(ch, n))
            self.up.append(nn.Conv2d(ch, max(ch // 2, w), 3, padding=1))
            ch = max(ch // 2, w)
        self.out_norm = CondBatchNorm(ch, n)
        self.out = nn.Conv2d(ch, config.channels, 7, padding=3)
        nn.init.zeros_(self.out.weight)  # start as the identity map: Δ = 0
        nn.init.zeros_(self.out.bias)

    def checkpoint_meta(self) -> dict:
        return {"classifier_hash": self.classifier_hash} if self.classifier_hash else {}

    @classmethod
    def from_config(cls, config, header):
        model = cls(config)
        model.classifier_hash = str((header.get("meta") or {}).get("classifier_hash", ""))
        return model

    def condition(self, bins: Tensor, concepts: Tensor | None = None) -> Tensor:
        """[B] bins (+ [B] concepts) -> [B] condition indices, checked."""
        cfg = self.config
        bins = bins.long()
        if ((bins < 0) | (bins >= cfg.bins)).any():
            raise ValueError(f"ProgressiveGenerator: bins must lie in 0..{cfg.bins - 1}, got {bins.tolist()}")
        if concepts is None:
            concepts = torch.zeros_like(bins)
        concepts = concepts.long().to(bins.device)
        if ((concepts < 0) | (concepts >= cfg.concepts)).any():
            raise ValueError(f"ProgressiveGenerator: concepts must lie in 0..{cfg.concepts - 1}, "
                             f"got {concepts.tolist()}")
        return concepts * cfg.bins + bins

    def delta(self, x: Tensor, bins: Tensor, concepts: Tensor | None = None) -> Tensor:
        """The change Δ the generator adds to x: [B, C, H, W]."""
        cfg = self.config
        check_images(x, channels=cfg.channels, resolution=cfg.resolution, name="ProgressiveGenerator input")
        cond = self.condition(bins.to(x.device), concepts)
        h = self.stem(x)
        for norm, conv in zip(self.down_norm, self.down, strict=True):
            h = conv(F.relu(norm(h, cond)))
        for block in self.blocks:
            h = block(h, cond)
        for norm, conv in zip(self.up_norm, self.up, strict=True):
            h = conv(F.interpolate(F.relu(norm(h, cond)), scale_factor=2.0, mode="nearest"))
        d = self.out(F.relu(self.out_norm(h, cond)))                        # [B, C, H, W]
        if cfg.delta_scale > 1:  # a smooth change: no texture finer than delta_scale pixels
            d = F.interpolate(F.avg_pool2d(d, cfg.delta_scale), scale_factor=float(cfg.delta_scale),
                              mode="bilinear", align_corners=False)
        return d

    def forward(self, x: Tensor, bins: Tensor, concepts: Tensor | None = None) -> Tensor:
        return (x + self.delta(x, bins, concepts)).clamp(-1.0, 1.0)


class _DownStack(nn.Module):
    """Spectral-normalised strided convs: [B, C, H, W] -> [B, F] pooled features."""

    def __init__(self, in_ch: int, width: int, resolution: int):
        super().__init__()
        layers, ch = [], in_ch
        n = max(1, min(5, int(math.log2(resolution)) - 2))
        for i in range(n):
            out = min(width * 2 ** i, 512)
            layers += [nn.utils.spectral_norm(nn.Conv2d(ch, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            ch = out
        self.net = nn.Sequential(*layers)
        self.features = ch

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).sum(dim=(2, 3))


class ProjectionDiscriminator(nn.Module):
    """D(x, c) = ψ(φ(x)) + <embed(c), φ(x)>: [B, C, H, W], bins [B] -> [B] scores."""

    def __init__(self, channels: int, resolution: int, n_conditions: int, width: int = 32):
        super().__init__()
        self.phi = _DownStack(channels, width, resolution)
        self.psi = nn.utils.spectral_norm(nn.Linear(self.phi.features, 1))
        self.embed = nn.utils.spectral_norm(nn.Embedding(n_conditions, self.phi.features))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.phi(x)
        return self.psi(h).squeeze(1) + (self.embed(cond) * h).sum(1)


class Disentangler(nn.Module):
    """DISSECT's R: (x, x') -> [B, K] logits of which concept produced the change.

    R reads x and the change ``x' - x`` scaled to unit RMS per image: which concept acted
    is a question about the pattern of the change, not its size. (Fed the raw pair, R must
    first learn to subtract two nearly equal images; its gradient on G is then a few % of
    the classifier term's and the K concepts never separate: docs/progressive.md.)
    """

    def __init__(self, channels: int, resolution: int, concepts: int, width: int = 32):
        super().__init__()
        self.phi = _DownStack(2 * channels, width, resolution)
        self.head = nn.Linear(self.phi.features, concepts)

    def forward(self, x: Tensor, x_changed: Tensor) -> Tensor:
        d = x_changed - x                                               # [B, C, H, W] the change
        rms = d.flatten(1).pow(2).mean(1).add(1e-6).sqrt()              # [B]; >= 1e-3 (no change: d stays 0)
        return self.head(self.phi(torch.cat([x, d / rms[:, None, None, None]], dim=1)))


def load_progressive(path, *, device: str | torch.device = "cpu") -> ProgressiveGenerator:
    """A saved ``progressive-generator`` (run or model directory).

    Example:
        >>> G = load_progressive("runs/progressive")                 # doctest: +SKIP
        >>> G.classifier_hash                                          # doctest: +SKIP
    """
    return ProgressiveGenerator.load(path, device=device)
