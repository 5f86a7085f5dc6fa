"""ICAM (Bass et al., NeurIPS 2020): a VAE-GAN whose latent is split into a class-irrelevant
spatial *content* code and a low-dimensional, KL-regularised, class-relevant *attribute* code.

Parts (``dims`` = 2 for images [B, C, H, W], 3 for volumes [B, C, D, H, W]; 2D is tested):

- ``ContentEncoder``: x -> content [B, Cc, S, S] (S = resolution / 2**downsample);
- ``AttributeEncoder``: x -> (mean, log-variance) [B, attr_dim];
- ``Decoder``: (content, attribute) -> image in (-1, 1); the attribute is concatenated at
  the input and modulates every normalisation (AdaGN, saved-format version 2);
- ``attr_classifier``: ICAM's own classifier, one logit for domain B from the attribute mean;
- ``ImageDiscriminator`` (training only): patch real/fake map + a whole-image classification
  branch (the class signal for the attribute-swapped images);
- ``ContentDiscriminator`` (training only): predicts the domain from the content code,
  which the encoders learn to defeat.

``ICAM`` (kind ``icam``) saves the encoders, decoder, classifier and the per-domain mean
and standard deviation of the attribute code over the training data (``attr_mean``,
``attr_std`` [2, attr_dim], row 0: domain A) used by the explainer. ``icam_losses``
computes the generator objective (adversarial, self- and cross-cycle L1, KL, attribute
classification, content adversarial, latent regression); the recipe is ``medcf.train.icam``.

Example:
    >>> model = ICAM(ICAMConfig(resolution=32, width=8, attr_dim=4)).eval()
    >>> c, a = model.encode(torch.zeros(2, 1, 32, 32))
    >>> c.shape, a.shape, model.decode(c, a).shape
    (torch.Size([2, 32, 8, 8]), torch.Size([2, 4]), torch.Size([2, 1, 32, 32]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.generators.cyclegan import lsgan_loss
from medcf.generators.layers import group_norm, uniform_init_
from medcf.generators.two_domain import TwoDomainConfig, TwoDomainModel
from medcf.io import SavableModule
from medcf.types import check_images

# saved-format version: 2 modulates every decoder normalisation by the attribute code (AdaGN);
# 3 adds ``attr_map`` (a spatial attribute code; 0 is version 2's vector model, so version 2
# checkpoints still load); version 1 checkpoints (no ``version`` field: the attribute only
# concatenated) are refused
VERSION = 3
READS = (2, 3)


@dataclass(frozen=True)
class ICAMConfig(TwoDomainConfig):
    resolution: int = 64                  # image side (height = width [= depth])
    channels: int = 1                     # 1 or 3
    dims: int = 2                         # 2: images, 3: volumes
    width: int = 32                       # content encoder / decoder channels at full resolution
    downsample: int = 2                   # stride-2 stages: content code is resolution / 2**downsample
    blocks: int = 2                       # residual blocks on the content code
    attr_dim: int = 8                     # attribute code size (low-dimensional); with attr_map: channels
    attr_map: int = 0                     # 0: vector code [attr_dim]; k: spatial code attr_dim x k x k (ICAM)
    attr_width: int = 32                  # attribute encoder channels of the first layer
    disc_width: int = 32                  # image discriminator channels of the first layer
    disc_layers: int = 3                  # stride-2 layers of the image discriminator
    domain_a: int = 0                     # class index of domain A in the training data
    domain_b: int = 1                     # class index of domain B
    class_names: tuple[str, ...] = ()     # class names of the training data (may be empty)
    content_noise: float = 0.0            # std of Gaussian noise on the content code in training (ICAM: 1)
    version: int = VERSION                # saved-format version (1: attribute only concatenated, no field)

    def __post_init__(self):
        where = "ICAMConfig"
        if self.version not in READS:
            raise ValueError(f"{where}: version {self.version} is not supported (this medcf reads versions "
                             f"{list(READS)}); retrain with `medcf train icam`")
        if self.attr_map and self.version < 3:
            raise ValueError(f"{where}: attr_map needs saved-format version 3, got version {self.version}")
        k = self.attr_map
        if k < 0 or (k and (k & (k - 1) or self.resolution % k or self.resolution // k < 2)):
            raise ValueError(f"{where}: attr_map must be 0 or a power of two dividing resolution "
                             f"{self.resolution} at most half of it, got {k}")
        if not self.content_noise >= 0:
            raise ValueError(f"{where}: content_noise must be >= 0, got {self.content_noise}")
        if self.channels not in (1, 3):
            raise ValueError(f"{where}: channels must be 1 or 3, got {self.channels}")
        if self.dims not in (2, 3):
            raise ValueError(f"{where}: dims must be 2 or 3, got {self.dims}")
        if min(self.width, self.attr_dim, self.attr_width, self.disc_width, self.disc_layers) < 1 or \
                self.blocks < 0 or self.downsample < 1:
            raise ValueError(f"{where}: widths, attr_dim, disc_layers and downsample must be >= 1, blocks >= 0")
        if self.resolution % 2 ** self.downsample or self.resolution >> self.downsample < 2:
            raise ValueError(f"{where}: resolution {self.resolution} must be divisible by 2**downsample "
                             f"({2 ** self.downsample}) and leave at least 2 pixels")
        if self.resolution >> self.disc_layers < 2:
            raise ValueError(f"{where}: resolution {self.resolution} is too small for {self.disc_layers} "
                             "discriminator layers")
        self.check_domains(where)

    @property
    def content_channels(self) -> int:
        return self.width * 2 ** self.downsample

    @property
    def code_size(self) -> int:
        """Numbers in one attribute code (flat outside the decoder): attr_dim [* attr_map**dims]."""
        return self.attr_dim * self.attr_map ** self.dims if self.attr_map else self.attr_dim



# ----------------------------------------------------------------------------- building blocks


def _conv(dims: int, *args, **kwargs) -> nn.Module:
    return (nn.Conv2d if dims == 2 else nn.Conv3d)(*args, **kwargs)


def _spatial_mean(h: Tensor) -> Tensor:  # [B, C, *spatial] -> [B, C]
    return h.flatten(2).mean(2)


def _tile(a: Tensor, like: Tensor) -> Tensor:  # [B, A] -> [B, A, *like.spatial]
    return a.view(*a.shape, *([1] * (like.ndim - 2))).expand(*a.shape, *like.shape[2:])


class _ResBlock(nn.Module):
    """GN-SiLU-conv3-GN-SiLU-conv3 + identity (2D or 3D)."""

    def __init__(self, dims: int, ch: int):
        super().__init__()
        self.body = nn.Sequential(group_norm(ch), nn.SiLU(), _conv(dims, ch, ch, 3, 1, 1),
                                  group_norm(ch), nn.SiLU(), _conv(dims, ch, ch, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ContentEncoder(nn.Module):
    """[B, C, R, R] -> [B, width * 2**downsample, S, S] (class-irrelevant spatial code)."""

    def __init__(self, cfg: ICAMConfig):
        super().__init__()
        d, w = cfg.dims, cfg.width
        layers: list[nn.Module] = [_conv(d, cfg.channels, w, 3, 1, 1)]
        for i in range(cfg.downsample):
            layers += [group_norm(w * 2 ** i), nn.SiLU(), _conv(d, w * 2 ** i, w * 2 ** (i + 1), 4, 2, 1)]
        layers += [_ResBlock(d, cfg.content_channels) for _ in range(cfg.blocks)]
        layers += [group_norm(cfg.content_channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _global_features(cfg: ICAMConfig, w: int, size: int = 4) -> tuple[nn.Sequential, int]:
    """conv3 then LeakyReLU-conv4/2 stages down to ``size`` pixels: [B, C, R, R] -> ([B, ch, size, size], ch)."""
    d = cfg.dims
    stages = max(1, int(math.log2(cfg.resolution // size)))    # down to `size` pixels
    layers: list[nn.Module] = [_conv(d, cfg.channels, w, 3, 1, 1)]
    ch = w
    for _ in range(stages):
        nxt = min(ch * 2, 8 * w)
        layers += [nn.LeakyReLU(0.2), _conv(d, ch, nxt, 4, 2, 1)]
        ch = nxt
    return nn.Sequential(*layers, nn.LeakyReLU(0.2)), ch


class AttributeEncoder(nn.Module):
    """[B, C, R, R] -> (mean [B, code_size], log-variance [B, code_size]); with ``attr_map`` k the
    code is an attr_dim x k x k map (features down to k pixels, a 1x1 head), flattened."""

    def __init__(self, cfg: ICAMConfig):
        super().__init__()
        self.spatial = bool(cfg.attr_map)
        self.net, ch = _global_features(cfg, cfg.attr_width, cfg.attr_map or 4)
        self.head = _conv(cfg.dims, ch, 2 * cfg.attr_dim, 1) if self.spatial else nn.Linear(ch, 2 * cfg.attr_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(x)                                          # [B, ch, k, k]
        if self.spatial:
            mean, logvar = (t.flatten(1) for t in self.head(h).chunk(2, dim=1))   # [B, attr_dim * k * k]
        else:
            mean, logvar = self.head(_spatial_mean(h)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class _AdaGN(nn.Module):
    """GroupNorm modulated by the attribute code: GN(h) * (1 + scale(a)) + shift(a) (AdaIN-style,
    as DRIT++/MUNIT inject the attribute), so no later normalisation can wash the code out.
    With ``dims`` (a spatial code [B, A, k, k]) scale and shift are maps: a 1x1 conv of the code,
    upsampled (bilinear) to h's size (SPADE-style), so the code acts where it lies."""

    def __init__(self, ch: int, attr_dim: int, dims: int = 0):
        super().__init__()
        self.norm = group_norm(ch)
        self.film = _conv(dims, attr_dim, 2 * ch, 1) if dims else nn.Linear(attr_dim, 2 * ch)
        self.mode = "bilinear" if dims == 2 else "trilinear"

    def forward(self, h: Tensor, a: Tensor) -> Tensor:  # h [B, ch, *S], a [B, A] or [B, A, k, k]
        if a.ndim > 2:
            st = F.interpolate(self.film(a), size=h.shape[2:], mode=self.mode, align_corners=False)
        else:
            st = self.film(a).view(*a.shape[:1], -1, *([1] * (h.ndim - 2)))
        scale, shift = st.chunk(2, dim=1)
        return self.norm(h) * (1 + scale) + shift


class _AdaResBlock(nn.Module):
    """AdaGN-SiLU-conv3-AdaGN-SiLU-conv3 + identity: a residual block modulated by the attribute."""

    def __init__(self, dims: int, ch: int, attr_dim: int, spatial: bool = False):
        super().__init__()
        self.n1, self.n2 = (_AdaGN(ch, attr_dim, dims if spatial else 0) for _ in range(2))
        self.c1, self.c2 = _conv(dims, ch, ch, 3, 1, 1), _conv(dims, ch, ch, 3, 1, 1)

    def forward(self, x: Tensor, a: Tensor) -> Tensor:
        return x + self.c2(F.silu(self.n2(self.c1(F.silu(self.n1(x, a))), a)))


class Decoder(nn.Module):
    """(content [B, Cc, S, S], attribute [B, code_size]) -> [B, C, R, R] in (-1, 1).

    The attribute is tiled (a vector) or upsampled (a spatial code, ``attr_map``: bilinear to
    S x S) and concatenated to the content at the input, and modulates every normalisation
    after it (``_AdaGN``; spatially for a spatial code)."""

    def __init__(self, cfg: ICAMConfig):
        super().__init__()
        d, a = cfg.dims, cfg.attr_dim
        sd = d if cfg.attr_map else 0
        self.map_shape = (a, *[cfg.attr_map] * d) if cfg.attr_map else None
        self.conv_in = _conv(d, cfg.content_channels + a, cfg.content_channels, 3, 1, 1)
        self.blocks = nn.ModuleList([_AdaResBlock(d, cfg.content_channels, a, bool(sd)) for _ in range(cfg.blocks)])
        self.ups = nn.ModuleList()
        ch = cfg.content_channels
        for _ in range(cfg.downsample):
            nxt = ch // 2
            self.ups.append(nn.ModuleList([_AdaGN(ch, a, sd), _conv(d, ch, nxt, 3, 1, 1)]))
            ch = nxt
        self.norm_out = _AdaGN(ch, a, sd)
        self.conv_out = _conv(d, ch, cfg.channels, 3, 1, 1)

    def forward(self, content: Tensor, attribute: Tensor) -> Tensor:
        if self.map_shape is not None:                           # [B, A*k*k] -> [B, A, k, k]
            attribute = attribute.view(attribute.shape[0], *self.map_shape)
            mode = "bilinear" if attribute.ndim == 4 else "trilinear"
            tiled = F.interpolate(attribute, size=content.shape[2:], mode=mode, align_corners=False)
        else:
            tiled = _tile(attribute, content)
        h = self.conv_in(torch.cat([content, tiled], 1))
        for block in self.blocks:
            h = block(h, attribute)
        for norm, conv in self.ups:
            h = conv(F.interpolate(F.silu(norm(h, attribute)), scale_factor=2, mode="nearest"))
        return torch.tanh(self.conv_out(F.silu(self.norm_out(h, attribute))))


class ImageDiscriminator(nn.Module):
    """[B, C, R, R] -> (patch scores [B, 1, h, w] (LSGAN), class logit [B] for domain B from a
    separate whole-image branch)."""

    def __init__(self, cfg: ICAMConfig, *, seed: int = 0):
        super().__init__()
        d, w = cfg.dims, cfg.disc_width
        with torch.random.fork_rng(devices=[]):
            layers: list[nn.Module] = [_conv(d, cfg.channels, w, 4, 2, 1), nn.LeakyReLU(0.2)]
            ch = w
            for _ in range(1, cfg.disc_layers):
                nxt = min(ch * 2, 8 * w)
                layers += [_conv(d, ch, nxt, 4, 2, 1), group_norm(nxt), nn.LeakyReLU(0.2)]
                ch = nxt
            self.trunk = nn.Sequential(*layers)
            self.patch = _conv(d, ch, 1, 3, 1, 1)
            # the class head sees the whole image: its own branch down to 4 pixels (on the patch
            # trunk's ~10-pixel receptive field it stayed at chance on 64 px cardiomegaly, so the
            # swapped images got no class signal)
            self.cls_net, cls_ch = _global_features(cfg, w)
            self.cls = nn.Linear(cls_ch, 1)
        _init(self, seed)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.patch(self.trunk(x)), self.cls(_spatial_mean(self.cls_net(x))).squeeze(1)


class ContentDiscriminator(nn.Module):
    """content [B, Cc, S, S] -> [B] logit for domain B (the encoders learn to make it useless)."""

    def __init__(self, cfg: ICAMConfig, *, seed: int = 0):
        super().__init__()
        d, ch = cfg.dims, cfg.content_channels
        with torch.random.fork_rng(devices=[]):
            self.net = nn.Sequential(_conv(d, ch, ch, 3, 1, 1), nn.LeakyReLU(0.2),
                                     _conv(d, ch, ch, 3, 1, 1), nn.LeakyReLU(0.2))
            self.out = nn.Linear(ch, 1)
        _init(self, seed)

    def forward(self, content: Tensor) -> Tensor:
        return self.out(_spatial_mean(self.net(content))).squeeze(1)


def _init(module: nn.Module, seed: int) -> None:
    """Uniform(+-sqrt(3 / fan_in)) weights from a seeded generator, zero biases, unit norms."""
    uniform_init_(module, torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the model


@dataclass
class ICAMOutputs:
    """One generator pass over real batches a (domain A) and b (domain B)."""

    content_a: Tensor       # [B, Cc, S, S]
    content_b: Tensor
    mean_a: Tensor          # [B, A] attribute posterior of a
    logvar_a: Tensor
    mean_b: Tensor
    logvar_b: Tensor
    self_a: Tensor          # G(c_a, z_a) ~ a
    self_b: Tensor          # G(c_b, z_b) ~ b
    cross_b: Tensor         # G(c_a, z_b): a's content, b's attribute (should look like domain B)
    cross_a: Tensor         # G(c_b, z_a)
    cycle_a: Tensor         # G(Ec(cross_b), Ea(cross_a)) ~ a (cross-cycle)
    cycle_b: Tensor         # G(Ec(cross_a), Ea(cross_b)) ~ b
    mean_cross_b: Tensor    # attribute mean of cross_b (~ b's attribute)
    mean_cross_a: Tensor
    z_a: Tensor | None = None   # [B, A] the sampled attribute codes decoded into the images above
    z_b: Tensor | None = None


class ICAM(TwoDomainModel, SavableModule):
    """ICAM's encoders, decoder and attribute classifier (kind ``icam``).

    Example:
        >>> model = ICAM(ICAMConfig(resolution=32, width=8, attr_dim=4)).eval()
        >>> x = torch.zeros(1, 1, 32, 32)
        >>> c, a = model.encode(x)
        >>> model.classify(a).shape      # ICAM's own logit for domain B
        torch.Size([1])
    """

    kind: ClassVar[str] = "icam"
    config_class: ClassVar[type] = ICAMConfig

    def __init__(self, config: ICAMConfig, *, seed: int = 0):
        super().__init__(config)
        with torch.random.fork_rng(devices=[]):
            self.content_encoder = ContentEncoder(config)
            self.attribute_encoder = AttributeEncoder(config)
            self.decoder = Decoder(config)
            self.attr_classifier = nn.Linear(config.code_size, 1)
        self.register_buffer("attr_mean", torch.zeros(2, config.code_size))
        self.register_buffer("attr_std", torch.ones(2, config.code_size))
        _init(self, seed)

    def check_input(self, x: Tensor) -> None:
        cfg = self.config
        if cfg.dims == 2:
            check_images(x, channels=cfg.channels, resolution=cfg.resolution,
                         name=f"ICAM input (expects [B, {cfg.channels}, {cfg.resolution}, {cfg.resolution}])")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x -> (content [B, Cc, S, S], attribute mean [B, A]) (deterministic)."""
        self.check_input(x)
        return self.content_encoder(x), self.attribute_encoder(x)[0]

    def decode(self, content: Tensor, attribute: Tensor) -> Tensor:  # -> [B, C, R, R]
        return self.decoder(content, attribute)

    def classify(self, attribute: Tensor) -> Tensor:
        """ICAM's own classifier: attribute [B, A] -> [B] logit of domain B."""
        return self.attr_classifier(attribute).squeeze(1)


    def forward(self, a: Tensor, b: Tensor, *, generator: torch.Generator | None = None) -> ICAMOutputs:
        """The training pass (one call, so DDP sees every parameter): encode, swap, re-encode, swap back.

        In training mode every content code entering the decoder gets Gaussian noise of std
        ``config.content_noise`` (as ICAM's content encoder ends with a noise layer): the content
        can then carry only coarse information, and the decoder must read the rest, the class
        included, from the attribute code."""
        def draw(like):
            dev = generator.device if generator is not None else like.device
            return torch.randn(like.shape, generator=generator, device=dev).to(like)

        def sample(mean, logvar):
            return mean + torch.exp(0.5 * logvar) * draw(mean)

        def noisy(c):  # [B, Cc, S, S]
            return c + self.config.content_noise * draw(c) if self.training and self.config.content_noise else c

        c_a, c_b = self.content_encoder(a), self.content_encoder(b)
        m_a, lv_a = self.attribute_encoder(a)
        m_b, lv_b = self.attribute_encoder(b)
        z_a, z_b = sample(m_a, lv_a), sample(m_b, lv_b)
        n_a, n_b = noisy(c_a), noisy(c_b)
        self_a, self_b = self.decoder(n_a, z_a), self.decoder(n_b, z_b)
        cross_b, cross_a = self.decoder(n_a, z_b), self.decoder(n_b, z_a)
        c_cb, c_ca = self.content_encoder(cross_b), self.content_encoder(cross_a)   # ~ c_a, c_b
        m_cb, lv_cb = self.attribute_encoder(cross_b)                                 # ~ z_b
        m_ca, lv_ca = self.attribute_encoder(cross_a)                                 # ~ z_a
        cycle_a = self.decoder(noisy(c_cb), sample(m_ca, lv_ca))
        cycle_b = self.decoder(noisy(c_ca), sample(m_cb, lv_cb))
        return ICAMOutputs(c_a, c_b, m_a, lv_a, m_b, lv_b, self_a, self_b, cross_b, cross_a, cycle_a, cycle_b,
                           m_cb, m_ca, z_a, z_b)

    @classmethod
    def load(cls, path, *, device="cpu") -> ICAM:
        """``SavableModule.load``; a checkpoint of an older saved format is a one-line error."""
        from medcf.errors import CheckpointError
        from medcf.io import read_header

        header = read_header(path)
        cfg = header.get("config")
        version = cfg.get("version", 1) if header.get("kind") == cls.kind and isinstance(cfg, dict) else VERSION
        if version not in READS:
            why = " (its decoder concatenates the attribute only)" if version == 1 else ""
            raise CheckpointError(f"{header['path']}: an ICAM of saved-format version {version}{why}; this medcf "
                                  f"reads versions {list(READS)}: retrain it with `medcf train icam`")
        return super().load(path, device=device)


# ----------------------------------------------------------------------------- losses


@dataclass(frozen=True)
class ICAMWeights:
    """Loss weights (the reconstruction terms dominate, as in the paper)."""

    adv: float = 1.0            # image adversarial (LSGAN) on the cross images
    adv_cls: float = 1.0        # discriminator's class head on the cross images
    self_rec: float = 10.0      # L1 self reconstruction
    cycle: float = 10.0         # L1 cross-cycle reconstruction
    kl: float = 0.01            # KL of the attribute code (per attribute dimension)
    cls: float = 10.0           # attribute classification (ICAM's classifier on the real images' codes; 10 as in ICAM)
    content_adv: float = 1.0    # make the content code useless to the content discriminator
    latent: float = 1.0         # latent regression: the swapped image's attribute code is the one put in (L1)
    fam: float = 0.0            # feature-attribution-map L1 (ICAM): |G(c_a, z_b) - G(c_a, z_a)|, keeps the change small

    def __post_init__(self):
        bad = [f"{k} {v}" for k, v in vars(self).items() if not v >= 0]
        if bad:
            raise ValueError(f"ICAMWeights: weights must be >= 0, got {', '.join(bad)}")


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """Mean over batch and dimensions of KL(N(mean, exp(logvar)) || N(0, 1))."""
    return (0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)).mean()


def icam_losses(out: ICAMOutputs, model: nn.Module, d_img: nn.Module, d_content: nn.Module, a: Tensor, b: Tensor,
                w: ICAMWeights = ICAMWeights()) -> dict[str, Tensor]:
    """The encoder/decoder objective for one batch: a dict of terms and ``total``.

    ``model`` is the (unwrapped) ICAM, used for its attribute classifier.
    """
    ones, zeros = a.new_ones(a.shape[0]), a.new_zeros(a.shape[0])
    bce = F.binary_cross_entropy_with_logits
    put_a = out.z_a if out.z_a is not None else out.mean_a      # [B, A] the codes decoded into cross_a/_b
    put_b = out.z_b if out.z_b is not None else out.mean_b
    patch_b, cls_b = d_img(out.cross_b)
    patch_a, cls_a = d_img(out.cross_a)
    t = {
        "adv": lsgan_loss(patch_b, True) + lsgan_loss(patch_a, True),
        "adv_cls": bce(cls_b, ones) + bce(cls_a, zeros),
        "self_rec": (out.self_a - a).abs().mean() + (out.self_b - b).abs().mean(),
        "cycle": (out.cycle_a - a).abs().mean() + (out.cycle_b - b).abs().mean(),
        "kl": kl_divergence(out.mean_a, out.logvar_a) + kl_divergence(out.mean_b, out.logvar_b),
        # ICAM's classifier on the real images' attribute codes only: the swapped images' codes
        # would contradict it while the decoder still ignores the attribute (early training)
        "cls": bce(model.classify(out.mean_a), zeros) + bce(model.classify(out.mean_b), ones),
        "content_adv": bce(d_content(out.content_a), 0.5 * ones) + bce(d_content(out.content_b), 0.5 * ones),
        # latent regression (DRIT, ICAM): encoding G(c_a, z_b) must give back z_b, which a decoder
        # ignoring the attribute cannot do
        "latent": ((out.mean_cross_b - put_b.detach()).abs().mean()
                   + (out.mean_cross_a - put_a.detach()).abs().mean()),
        # ICAM's feature-attribution-map term: the swap's change of the image (the map) stays small
        "fam": (out.cross_b - out.self_a).abs().mean() + (out.cross_a - out.self_b).abs().mean(),
    }
    t["total"] = sum(getattr(w, k) * v for k, v in t.items())
    return t


def discriminator_losses(out: ICAMOutputs, d_img: nn.Module, d_content: nn.Module, a: Tensor, b: Tensor
                         ) -> dict[str, Tensor]:
    """Image discriminator (LSGAN real/fake + class head on real images) and content
    discriminator (domain of the content code) losses; generated inputs are detached."""
    ones, zeros = a.new_ones(a.shape[0]), a.new_zeros(a.shape[0])
    bce = F.binary_cross_entropy_with_logits
    p_ra, c_ra = d_img(a)
    p_rb, c_rb = d_img(b)
    p_fb, _ = d_img(out.cross_b.detach())
    p_fa, _ = d_img(out.cross_a.detach())
    t = {
        "d_adv": 0.5 * (lsgan_loss(p_ra, True) + lsgan_loss(p_rb, True) + lsgan_loss(p_fa, False)
                        + lsgan_loss(p_fb, False)),
        "d_cls": bce(c_ra, zeros) + bce(c_rb, ones),
        "d_content": bce(d_content(out.content_a.detach()), zeros) + bce(d_content(out.content_b.detach()), ones),
    }
    t["d_total"] = t["d_adv"] + t["d_cls"] + t["d_content"]
    return t


__all__ = ["ICAM", "AttributeEncoder", "ContentDiscriminator", "ContentEncoder", "Decoder", "ICAMConfig",
           "ICAMOutputs", "ICAMWeights", "ImageDiscriminator", "discriminator_losses", "icam_losses",
           "kl_divergence"]
