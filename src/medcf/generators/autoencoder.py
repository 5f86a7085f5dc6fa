"""Convolutional autoencoder (kind ``ae``) and VAE (kind ``vae``) with residual blocks.

Both map images ``[B, C, H, W]`` in ``[-1, 1]`` (C = 1 or 3, H = W in 32..256) to a
spatial latent ``[B, latent_dim, S, S]`` (S = ``latent_size``, 8 by default) and
back. The encoder is a stem conv then one stage per entry of ``widths`` (stride-2
conv + residual blocks); the decoder mirrors it with nearest upsampling and ends in
``tanh``. GroupNorm throughout, so a sample's code never depends on its batch.

``encode`` is deterministic (the posterior mean for the VAE): it is what Latent
Shift differentiates through. The config records the resolution, channel count
and intensity range the model was trained on; an input of another shape raises
``ShapeError`` saying what is expected, and one far outside the range raises
``DataError`` (e.g. Hounsfield units or 0..255 pixels).

Example:
    >>> cfg = AutoencoderConfig(resolution=32, channels=1, widths=(8, 16))
    >>> vae = VAE(cfg, seed=0).eval()
    >>> z = vae.encode(torch.zeros(2, 1, 32, 32))          # [2, 8, 8, 8]
    >>> vae.decode(z).shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.errors import CheckpointError, DataError, ShapeError
from medcf.generators.layers import group_norm, uniform_init_
from medcf.io import SavableModule, read_header
from medcf.types import check_images

RANGE_TOLERANCE = 0.5  # inputs beyond the range by more than this are a units mistake


def default_widths(resolution: int, latent_size: int = 8, base: int = 32) -> tuple[int, ...]:
    """Stage widths for a resolution: one stride-2 stage per halving down to ``latent_size``,
    doubling from ``base`` (capped at 8 x base)."""
    stages = int(round(math.log2(resolution / latent_size)))
    return tuple(min(base * 2**i, 8 * base) for i in range(stages))


@dataclass(frozen=True)
class AutoencoderConfig:
    resolution: int = 64                      # input height = width, 32..256
    channels: int = 1                         # 1 (grayscale) or 3
    latent_dim: int = 8                       # latent channels
    latent_size: int = 8                      # latent height = width (resolution / 2**stages)
    widths: tuple[int, ...] | None = None     # channels per stage (None: default_widths)
    blocks: int = 1                           # residual blocks per stage
    value_range: tuple[float, float] = (-1.0, 1.0)  # intensity range of the training images

    def __post_init__(self):
        where = "AutoencoderConfig"
        if self.channels not in (1, 3):
            raise ValueError(f"{where}: channels must be 1 or 3, got {self.channels}")
        if not (isinstance(self.resolution, int) and 32 <= self.resolution <= 256):
            raise ValueError(f"{where}: resolution must be an integer in 32..256, got {self.resolution!r}")
        if self.latent_dim < 1 or self.latent_size < 1 or self.blocks < 0:
            raise ValueError(f"{where}: latent_dim, latent_size must be >= 1 and blocks >= 0, got "
                             f"{self.latent_dim}, {self.latent_size}, {self.blocks}")
        widths = self.widths
        if widths is None:
            if self.resolution % self.latent_size or (self.resolution // self.latent_size) & (
                    self.resolution // self.latent_size - 1):
                raise ValueError(f"{where}: resolution / latent_size must be a power of two, got "
                                 f"{self.resolution} / {self.latent_size}")
            widths = default_widths(self.resolution, self.latent_size)
            object.__setattr__(self, "widths", widths)
        widths = tuple(int(w) for w in widths)
        object.__setattr__(self, "widths", widths)
        if any(w < 1 for w in widths):
            raise ValueError(f"{where}: widths must be positive, got {widths}")
        if self.resolution != self.latent_size * 2 ** len(widths):
            raise ValueError(f"{where}: resolution {self.resolution} must equal latent_size "
                             f"{self.latent_size} * 2**len(widths) ({len(widths)} stages)")
        lo, hi = (float(v) for v in self.value_range)
        if not lo < hi:
            raise ValueError(f"{where}: value_range must be (low, high) with low < high, got {self.value_range}")
        object.__setattr__(self, "value_range", (lo, hi))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_dim, self.latent_size, self.latent_size)


@dataclass
class AutoencoderOutput:
    """What ``forward`` returns: everything the training losses need."""

    reconstruction: Tensor           # [B, C, H, W]
    latent: Tensor                   # [B, *latent] code that was decoded
    mean: Tensor                     # [B, *latent] deterministic code (posterior mean)
    logvar: Tensor | None = None     # [B, *latent] VAE posterior log-variance

    def kl(self) -> Tensor:
        """[B] KL(q(z|x) || N(0, I)) in nats per image (0 for the plain autoencoder)."""
        if self.logvar is None:
            return self.mean.new_zeros(self.mean.shape[0])
        kl = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(1)


class ResBlock(nn.Module):
    """GN-SiLU-conv3x3-GN-SiLU-conv3x3 + identity.  [B, C, H, W] -> [B, C, H, W]"""

    def __init__(self, ch: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(ch), nn.Conv2d(ch, ch, 3, 1, 1)
        self.norm2, self.conv2 = group_norm(ch), nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Encoder(nn.Module):
    """[B, C, R, R] -> [B, out_ch, S, S] with S = R / 2**len(widths)."""

    def __init__(self, config: AutoencoderConfig, out_ch: int):
        super().__init__()
        widths = config.widths
        self.stem = nn.Conv2d(config.channels, widths[0], 3, 1, 1)
        layers: list[nn.Module] = []
        prev = widths[0]
        for w in widths:
            layers.append(nn.Conv2d(prev, w, 4, 2, 1))
            layers.extend(ResBlock(w) for _ in range(config.blocks))
            prev = w
        self.stages = nn.Sequential(*layers)
        self.norm_out = group_norm(prev)
        self.conv_out = nn.Conv2d(prev, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stages(self.stem(x))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """[B, latent_dim, S, S] -> [B, C, R, R] in (-1, 1) (tanh)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        widths = config.widths[::-1]
        self.conv_in = nn.Conv2d(config.latent_dim, widths[0], 3, 1, 1)
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            nxt = widths[i + 1] if i + 1 < len(widths) else widths[-1]
            layers.extend(ResBlock(w) for _ in range(config.blocks))
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers.append(nn.Conv2d(w, nxt, 3, 1, 1))
        self.stages = nn.Sequential(*layers)
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], config.channels, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.stages(self.conv_in(z))
        return torch.tanh(self.conv_out(F.silu(self.norm_out(h))))


class _ConvAutoencoder(SavableModule):
    """Shared body of ``Autoencoder`` and ``VAE``."""

    config_class: ClassVar[type] = AutoencoderConfig
    variational: ClassVar[bool] = False

    def __init__(self, config: AutoencoderConfig, *, seed: int = 0,
                 generator: torch.Generator | None = None):
        super().__init__(config)
        out_ch = config.latent_dim * (2 if self.variational else 1)
        with torch.random.fork_rng(devices=[]):  # torch's default init must not move global RNG
            self.encoder = Encoder(config, out_ch)
            self.decoder = Decoder(config)
        self.reset_parameters(generator if generator is not None else torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """U(+-sqrt(3 / fan_in)) convs (``uniform_init_``), zero biases, unit GroupNorm, zero last
        conv of each residual branch."""
        uniform_init_(self, generator, layers=(nn.Conv2d,))
        for m in self.modules():
            if isinstance(m, ResBlock):
                m.conv2.weight.zero_()
        if self.variational:  # start with small posterior variance
            self.encoder.conv_out.bias[self.config.latent_dim:].fill_(-4.0)

    # -- checks ------------------------------------------------------------------------

    def check_input(self, x: Tensor, name: str | None = None, *, values: bool = True) -> None:
        """Raise ``ShapeError`` (or ``DataError`` with ``values``) unless ``x`` fits the config."""
        cfg = self.config
        name = name or (f"{type(self).__name__} input (expects [B, {cfg.channels}, {cfg.resolution}, "
                        f"{cfg.resolution}] in {list(cfg.value_range)})")
        check_images(x, channels=cfg.channels, resolution=cfg.resolution, name=name)
        lo, hi = cfg.value_range
        if not values or x.numel() == 0:
            return
        mn, mx = float(x.detach().amin()), float(x.detach().amax())
        if mn < lo - RANGE_TOLERANCE or mx > hi + RANGE_TOLERANCE:
            raise DataError(f"{name}: values span [{mn:.3g}, {mx:.3g}], far outside the trained "
                            f"intensity range [{lo:g}, {hi:g}]; rescale the images first")

    def check_latent(self, z: Tensor) -> None:
        shape = self.config.latent_shape
        if not isinstance(z, Tensor) or tuple(z.shape[1:]) != shape or z.ndim != 4:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ShapeError(f"{type(self).__name__} latent: expected [B, {', '.join(map(str, shape))}], got {got}")

    # -- the model ---------------------------------------------------------------------

    def _moments(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.encoder(x)
        if not self.variational:
            return h, None
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: Tensor) -> Tensor:  # [B, C, R, R] -> [B, latent_dim, S, S]
        """Deterministic code: the posterior mean for the VAE."""
        self.check_input(x)
        return self._moments(x)[0]

    def decode(self, z: Tensor) -> Tensor:  # [B, latent_dim, S, S] -> [B, C, R, R]
        self.check_latent(z)
        return self.decoder(z)

    def reconstruct(self, x: Tensor) -> Tensor:  # [B, C, R, R] -> [B, C, R, R]
        """``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None,
                sample_posterior: bool | None = None) -> AutoencoderOutput:
        """Encode, (VAE: draw z ~ q(z|x) when training or asked), decode.

        [B, C, R, R] -> AutoencoderOutput; ``generator`` drives the VAE's noise.
        """
        self.check_input(x, values=False)  # no host sync per training step
        mean, logvar = self._moments(x)
        z = mean
        if logvar is not None and (self.training if sample_posterior is None else sample_posterior):
            gen_device = generator.device if generator is not None else mean.device
            eps = torch.randn(mean.shape, generator=generator, device=gen_device).to(mean)
            z = mean + torch.exp(0.5 * logvar) * eps
        return AutoencoderOutput(self.decoder(z), z, mean, logvar)

    def checkpoint_meta(self) -> dict[str, Any]:
        cfg = self.config
        return {"input": {"channels": cfg.channels, "resolution": cfg.resolution,
                          "value_range": list(cfg.value_range)}}


class Autoencoder(_ConvAutoencoder):
    """Deterministic convolutional autoencoder (kind ``ae``); trained with L1 (+ LPIPS).

    Example:
        >>> ae = Autoencoder(AutoencoderConfig(resolution=32, widths=(8, 16)))
        >>> ae(torch.zeros(1, 1, 32, 32)).reconstruction.shape
        torch.Size([1, 1, 32, 32])
    """

    kind: ClassVar[str] = "ae"
    variational: ClassVar[bool] = False

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError("Autoencoder (kind 'ae') has no prior to sample from; train a 'vae'")


class VAE(_ConvAutoencoder):
    """Variational autoencoder (kind ``vae``): Gaussian posterior, N(0, I) prior.

    Example:
        >>> vae = VAE(AutoencoderConfig(resolution=32, widths=(8, 16)))
        >>> vae.sample(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 1, 32, 32])
    """

    kind: ClassVar[str] = "vae"
    variational: ClassVar[bool] = True

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:  # -> [n, C, R, R]
        """Decode ``n`` draws from the prior."""
        device = next(self.parameters()).device
        gen_device = generator.device if generator is not None else device
        z = torch.randn((n, *self.config.latent_shape), generator=generator, device=gen_device)
        return self.decode(z.to(device))


AUTOENCODERS: dict[str, type[_ConvAutoencoder]] = {"ae": Autoencoder, "vae": VAE}


def load_autoencoder(path, *, kind: str | None = None, device: str | torch.device = "cpu") -> _ConvAutoencoder:
    """Load an ``ae`` or ``vae`` from a model or run directory (kind read from the header).

    Example:
        >>> vae = load_autoencoder("runs/vae")        # doctest: +SKIP
    """
    header = read_header(path)
    found = header["kind"]
    if found not in AUTOENCODERS:
        raise CheckpointError(f"{header['path']}: is a '{found}' checkpoint, expected one of {sorted(AUTOENCODERS)}")
    if kind is not None and found != kind:
        raise CheckpointError(f"{header['path']}: is a '{found}' checkpoint, expected '{kind}'")
    return AUTOENCODERS[found].load(header["path"], device=device)
