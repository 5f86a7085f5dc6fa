"""Frozen dataclass configs of the StyleGAN2-ADA generator and discriminator.

Field names and defaults follow the official ``stylegan2-ada-pytorch``
constructor arguments (``training.networks``), so that an official
``init_kwargs`` dict maps onto them one to one (see ``official.py``).

Example:
    >>> cfg = GeneratorConfig(z_dim=64, w_dim=64, img_resolution=32, img_channels=1,
    ...                       mapping=MappingConfig(num_layers=2),
    ...                       synthesis=SynthesisConfig(channel_base=2048, channel_max=64))
    >>> cfg.synthesis.architecture
    'skip'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from medcf.errors import MedcfError

ARCHITECTURES = ("orig", "skip", "resnet")
ACTIVATION_NAMES = ("linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish")
DEFAULT_FILTER = (1.0, 3.0, 3.0, 1.0)


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise MedcfError(f"{where}: {message}")


def _check_resolution(where: str, res: int) -> None:
    _check(isinstance(res, int) and res >= 4 and 2 ** int(math.log2(res)) == res, where,
           f"must be a power of two >= 4, got {res!r}")


@dataclass(frozen=True)
class MappingConfig:
    """Mapping network z (+ label c) -> w; official ``mapping_kwargs``."""

    num_layers: int = 8  # fully-connected layers
    embed_features: int | None = None  # label embedding width (None = w_dim; unused when c_dim=0)
    layer_features: int | None = None  # hidden width (None = w_dim)
    activation: str = "lrelu"  # activation of every layer
    lr_multiplier: float = 0.01  # equalized-lr multiplier of the fc layers (not the embedding)
    w_avg_beta: float | None = 0.995  # decay of the tracked average w (None = no tracking)

    def __post_init__(self) -> None:
        _check(self.num_layers >= 1, "MappingConfig.num_layers", f"must be >= 1, got {self.num_layers}")
        _check(self.activation in ACTIVATION_NAMES, "MappingConfig.activation",
               f"unknown activation {self.activation!r}; known: {list(ACTIVATION_NAMES)}")


@dataclass(frozen=True)
class SynthesisConfig:
    """Synthesis network w -> image; official ``synthesis_kwargs`` (plus block/layer kwargs)."""

    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512  # maximum channels per layer
    num_fp16_res: int = 0  # the highest resolutions that run in fp16 (on CUDA, unless force_fp32)
    architecture: str = "skip"  # 'orig' | 'skip' | 'resnet'
    resample_filter: tuple[float, ...] = DEFAULT_FILTER  # FIR taps for up-sampling (initial value)
    conv_clamp: float | None = None  # clamp conv/ToRGB outputs to +-conv_clamp (None = off)
    kernel_size: int = 3  # kernel of the modulated convolutions
    use_noise: bool = True  # per-layer noise inputs
    activation: str = "lrelu"  # activation of the modulated convolutions
    fp16_channels_last: bool = False  # channels_last memory format in fp16 blocks

    def __post_init__(self) -> None:
        _check(self.architecture in ARCHITECTURES, "SynthesisConfig.architecture",
               f"must be one of {list(ARCHITECTURES)}, got {self.architecture!r}")
        _check(self.activation in ACTIVATION_NAMES, "SynthesisConfig.activation",
               f"unknown activation {self.activation!r}; known: {list(ACTIVATION_NAMES)}")
        _check(self.channel_base > 0 and self.channel_max > 0, "SynthesisConfig.channel_base",
               "channel_base and channel_max must be positive")
        _check(self.kernel_size % 2 == 1, "SynthesisConfig.kernel_size",
               f"must be odd, got {self.kernel_size}")
        _check(len(self.resample_filter) >= 1, "SynthesisConfig.resample_filter", "needs taps")


@dataclass(frozen=True)
class GeneratorConfig:
    """StyleGAN2-ADA generator; mirrors the official ``Generator(**init_kwargs)``."""

    z_dim: int = 512  # input latent size (0 = none)
    w_dim: int = 512  # intermediate latent size
    c_dim: int = 0  # conditioning label size (0 = unconditional)
    img_resolution: int = 256  # output resolution (power of two)
    img_channels: int = 3  # output channels
    mapping: MappingConfig = field(default_factory=MappingConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)

    def __post_init__(self) -> None:
        _check_resolution("GeneratorConfig.img_resolution", self.img_resolution)
        _check(self.w_dim >= 1, "GeneratorConfig.w_dim", f"must be >= 1, got {self.w_dim}")
        _check(self.z_dim >= 0 and self.c_dim >= 0, "GeneratorConfig.z_dim",
               "z_dim and c_dim must be >= 0")
        _check(self.z_dim + self.c_dim > 0, "GeneratorConfig.z_dim", "z_dim + c_dim must be > 0")
        _check(self.img_channels >= 1, "GeneratorConfig.img_channels",
               f"must be >= 1, got {self.img_channels}")


@dataclass(frozen=True)
class DiscriminatorConfig:
    """StyleGAN2-ADA discriminator; mirrors the official ``Discriminator(**init_kwargs)``.

    The official nested ``block_kwargs`` / ``epilogue_kwargs`` are flattened
    into fields here; ``mapping`` is only built when ``c_dim > 0``.
    """

    c_dim: int = 0  # conditioning label size (0 = unconditional)
    img_resolution: int = 256  # input resolution (power of two)
    img_channels: int = 3  # input channels
    architecture: str = "resnet"  # 'orig' | 'skip' | 'resnet'
    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512  # maximum channels per layer
    num_fp16_res: int = 0  # the highest resolutions that run in fp16 (on CUDA, unless force_fp32)
    conv_clamp: float | None = None  # clamp conv outputs to +-conv_clamp (None = off)
    cmap_dim: int | None = None  # projection size of the label (None = channels at 4x4)
    activation: str = "lrelu"  # activation of blocks and epilogue
    resample_filter: tuple[float, ...] = DEFAULT_FILTER  # FIR taps for down-sampling (initial value)
    freeze_layers: int = 0  # the first N conv layers hold their weights as (frozen) buffers
    fp16_channels_last: bool = False  # channels_last memory format in fp16 blocks
    mbstd_group_size: int | None = 4  # minibatch-stddev group size (None = whole batch)
    mbstd_num_channels: int = 1  # minibatch-stddev features (0 = off)
    mapping: MappingConfig = field(default_factory=lambda: MappingConfig(w_avg_beta=None))

    def __post_init__(self) -> None:
        _check_resolution("DiscriminatorConfig.img_resolution", self.img_resolution)
        _check(self.architecture in ARCHITECTURES, "DiscriminatorConfig.architecture",
               f"must be one of {list(ARCHITECTURES)}, got {self.architecture!r}")
        _check(self.activation in ACTIVATION_NAMES, "DiscriminatorConfig.activation",
               f"unknown activation {self.activation!r}; known: {list(ACTIVATION_NAMES)}")
        _check(self.c_dim >= 0, "DiscriminatorConfig.c_dim", f"must be >= 0, got {self.c_dim}")
        _check(self.mbstd_group_size is None or self.mbstd_group_size >= 1,
               "DiscriminatorConfig.mbstd_group_size", "must be None or >= 1")


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Official channel count at resolution ``res``."""
    return min(channel_base // res, channel_max)
