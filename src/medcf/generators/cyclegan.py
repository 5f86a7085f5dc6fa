"""CycleGAN (Zhu et al. 2017): two ResNet generators, two PatchGAN discriminators, LSGAN loss,
cycle and identity losses, image pool.

``CycleGAN`` (kind ``cyclegan``) is the saved model: the generators ``g_ab`` (domain A ->
B) and ``g_ba`` (B -> A), plus which classes of the training data the domains are. The
discriminators (``PatchDiscriminator``) are training-only and live in the run's resume
state. Images are ``[B, C, H, W]`` in ``[-1, 1]``; generators keep the shape, a
discriminator returns a patch map ``[B, 1, h, w]`` of real/fake scores.

Losses, as pure functions (the recipe is ``medcf.train.cyclegan``):
``lsgan_loss(pred, real)`` = mean((pred - 1)^2) or mean(pred^2);
``cycle_losses(...)`` = the generator objective with cycle and identity L1 terms.

Example:
    >>> cfg = CycleGANConfig(resolution=32, width=8, blocks=1)
    >>> model = CycleGAN(cfg, seed=0).eval()
    >>> model.translate(torch.zeros(2, 1, 32, 32), to_domain="b").shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medcf.generators.layers import normal_init_
from medcf.generators.two_domain import TwoDomainConfig, TwoDomainModel
from medcf.io import SavableModule
from medcf.types import check_images


@dataclass(frozen=True)
class CycleGANConfig(TwoDomainConfig):
    resolution: int = 64                  # image height = width
    channels: int = 1                     # 1 or 3
    width: int = 32                       # generator channels after the stem (ngf)
    downsample: int = 2                   # stride-2 stages in each generator
    blocks: int = 6                       # residual blocks at the bottleneck
    disc_width: int = 32                  # discriminator channels of the first layer (ndf)
    disc_layers: int = 3                  # stride-2 layers of the PatchGAN (3: 70x70 receptive field)
    domain_a: int = 0                     # class index of domain A in the training data
    domain_b: int = 1                     # class index of domain B
    class_names: tuple[str, ...] = ()     # class names of the training data (may be empty)

    def __post_init__(self):
        where = "CycleGANConfig"
        if self.channels not in (1, 3):
            raise ValueError(f"{where}: channels must be 1 or 3, got {self.channels}")
        if min(self.width, self.disc_width) < 1 or self.blocks < 0 or self.downsample < 0 or self.disc_layers < 1:
            raise ValueError(f"{where}: widths and disc_layers must be >= 1, blocks and downsample >= 0")
        if self.resolution % 2 ** self.downsample or self.resolution >> self.downsample < 4:
            raise ValueError(f"{where}: resolution {self.resolution} must be divisible by 2**downsample "
                             f"({2 ** self.downsample}) and leave at least 4 pixels")
        if self.resolution >> self.disc_layers < 4:
            raise ValueError(f"{where}: resolution {self.resolution} is too small for {self.disc_layers} "
                             "discriminator layers (needs resolution / 2**disc_layers >= 4)")
        self.check_domains(where)



def _norm(ch: int) -> nn.GroupNorm:
    """Instance normalisation with affine parameters (one group per channel)."""
    return nn.GroupNorm(ch, ch)


class _ResBlock(nn.Module):
    """reflect-pad conv3x3 - norm - ReLU - reflect-pad conv3x3 - norm, + identity.  [B, C, h, w]"""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch), nn.ReLU(True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNetGenerator(nn.Module):
    """The CycleGAN generator: c7s1-w, d2w, d4w, R x blocks, u2w, uw, c7s1-C, tanh.
    [B, C, H, W] -> [B, C, H, W] in (-1, 1)."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        w = cfg.width
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(cfg.channels, w, 7), _norm(w), nn.ReLU(True)]
        for i in range(cfg.downsample):
            a, b = w * 2 ** i, w * 2 ** (i + 1)
            layers += [nn.Conv2d(a, b, 3, 2, 1), _norm(b), nn.ReLU(True)]
        mid = w * 2 ** cfg.downsample
        layers += [_ResBlock(mid) for _ in range(cfg.blocks)]
        for i in reversed(range(cfg.downsample)):
            a, b = w * 2 ** (i + 1), w * 2 ** i
            layers += [nn.ConvTranspose2d(a, b, 3, 2, 1, output_padding=1), _norm(b), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, cfg.channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``disc_layers`` stride-2 convs, one stride-1 conv, a 1-channel conv.
    [B, C, H, W] -> [B, 1, h, w] raw scores (LSGAN: 1 real, 0 fake)."""

    def __init__(self, cfg: CycleGANConfig, *, seed: int = 0):
        super().__init__()
        d = cfg.disc_width
        with torch.random.fork_rng(devices=[]):
            layers: list[nn.Module] = [nn.Conv2d(cfg.channels, d, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            ch = d
            for i in range(1, cfg.disc_layers):
                nxt = d * min(2 ** i, 8)
                layers += [nn.Conv2d(ch, nxt, 4, 2, 1), _norm(nxt), nn.LeakyReLU(0.2, True)]
                ch = nxt
            nxt = d * min(2 ** cfg.disc_layers, 8)
            layers += [nn.Conv2d(ch, nxt, 3, 1, 1), _norm(nxt), nn.LeakyReLU(0.2, True), nn.Conv2d(nxt, 1, 3, 1, 1)]
            self.net = nn.Sequential(*layers)
        normal_init_(self, torch.Generator().manual_seed(seed))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


gaussian_init = normal_init_  # previous name of CycleGAN's init, kept importable (now also draws Linear layers)


class CycleGAN(TwoDomainModel, SavableModule):
    """The two generators of a CycleGAN (kind ``cyclegan``).

    Example:
        >>> model = CycleGAN(CycleGANConfig(resolution=32, width=8, blocks=1))
        >>> x = torch.zeros(1, 1, 32, 32)
        >>> model.translate(model.translate(x, "b"), "a").shape   # A -> B -> A
        torch.Size([1, 1, 32, 32])
    """

    kind: ClassVar[str] = "cyclegan"
    config_class: ClassVar[type] = CycleGANConfig

    def __init__(self, config: CycleGANConfig, *, seed: int = 0):
        super().__init__(config)
        with torch.random.fork_rng(devices=[]):
            self.g_ab = ResNetGenerator(config)
            self.g_ba = ResNetGenerator(config)
        normal_init_(self, torch.Generator().manual_seed(seed))

    def check_input(self, x: Tensor) -> None:
        cfg = self.config
        check_images(x, channels=cfg.channels, resolution=cfg.resolution,
                     name=f"CycleGAN input (expects [B, {cfg.channels}, {cfg.resolution}, {cfg.resolution}])")

    def translate(self, x: Tensor, to_domain: str) -> Tensor:  # [B, C, H, W] -> [B, C, H, W]
        """x of the other domain -> domain ``to_domain`` ("a" or "b")."""
        if to_domain not in ("a", "b"):
            raise ValueError(f"CycleGAN.translate: to_domain must be 'a' or 'b', got {to_domain!r}")
        self.check_input(x)
        return (self.g_ab if to_domain == "b" else self.g_ba)(x)


    def forward(self, a: Tensor, b: Tensor, *, identity: bool = True) -> CycleOutputs:
        """One training pass over real batches a, b [B, C, H, W] (DDP-friendly: one call)."""
        fake_b, fake_a = self.g_ab(a), self.g_ba(b)
        idt_a, idt_b = (self.g_ba(a), self.g_ab(b)) if identity else (None, None)
        return CycleOutputs(fake_b, fake_a, self.g_ba(fake_b), self.g_ab(fake_a), idt_a, idt_b)



# ----------------------------------------------------------------------------- losses


def lsgan_loss(pred: Tensor, real: bool) -> Tensor:
    """Least-squares GAN loss: mean((pred - 1)^2) for real targets, mean(pred^2) for fake."""
    return (pred - 1.0).pow(2).mean() if real else pred.pow(2).mean()


@dataclass
class CycleOutputs:
    """Everything one generator pass makes from real batches a (domain A) and b (domain B)."""

    fake_b: Tensor              # G_AB(a)
    fake_a: Tensor              # G_BA(b)
    rec_a: Tensor               # G_BA(G_AB(a))
    rec_b: Tensor               # G_AB(G_BA(b))
    idt_a: Tensor | None        # G_BA(a) (identity mapping; None when not computed)
    idt_b: Tensor | None        # G_AB(b)


@dataclass
class CycleLosses:
    """The generator objective's terms (scalars) for one batch."""

    adv: Tensor          # lsgan(D_B(G_AB(a)), real) + lsgan(D_A(G_BA(b)), real)
    cycle: Tensor        # |G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1 (means)
    identity: Tensor     # |G_BA(a) - a|_1 + |G_AB(b) - b|_1 (means; 0 when not computed)
    total: Tensor        # adv + lambda_cycle * (cycle + lambda_identity * identity)


def cycle_losses(out: CycleOutputs, d_a: nn.Module, d_b: nn.Module, a: Tensor, b: Tensor, *,
                 lambda_cycle: float = 10.0, lambda_identity: float = 0.5) -> CycleLosses:
    """Generator losses for real batches a [B, C, H, W] (domain A) and b (domain B) and the
    generator pass ``out = model(a, b)``. Identity terms are weighted
    ``lambda_cycle * lambda_identity`` as in the reference implementation."""
    adv = lsgan_loss(d_b(out.fake_b), True) + lsgan_loss(d_a(out.fake_a), True)
    cycle = (out.rec_a - a).abs().mean() + (out.rec_b - b).abs().mean()
    if out.idt_a is not None and out.idt_b is not None:
        identity = (out.idt_a - a).abs().mean() + (out.idt_b - b).abs().mean()
    else:
        identity = a.new_zeros(())
    total = adv + lambda_cycle * (cycle + lambda_identity * identity)
    return CycleLosses(adv, cycle, identity, total)


def discriminator_loss(d: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """0.5 * (lsgan(D(real), real) + lsgan(D(fake), fake)); ``fake`` is detached here."""
    return 0.5 * (lsgan_loss(d(real), True) + lsgan_loss(d(fake.detach()), False))


# ----------------------------------------------------------------------------- image pool


class ImagePool:
    """History of generated images (Shrivastava et al.): the discriminator sees a mix of the
    current fakes and older ones. Until ``size`` images are stored every image is stored and
    returned; afterwards each image is, with probability 1/2, swapped for a random stored one
    (which is returned) or returned as is. ``size == 0`` returns the batch unchanged.

    Randomness comes from the ``generator`` passed to ``query``; ``state_dict`` holds the
    stored images, so a resumed run continues exactly.

    Example:
        >>> pool = ImagePool(50)
        >>> out = pool.query(torch.zeros(4, 1, 8, 8), torch.Generator().manual_seed(0))
    """

    def __init__(self, size: int = 50):
        if size < 0:
            raise ValueError(f"ImagePool: size must be >= 0, got {size}")
        self.size = size
        self.images: list[Tensor] = []

    def query(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[B, C, H, W] -> [B, C, H, W] (detached)."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        device = generator.device if generator is not None else images.device
        for img in images:
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
                continue
            swap = float(torch.rand((), generator=generator, device=device)) < 0.5
            if swap:
                j = int(torch.randint(len(self.images), (), generator=generator, device=device))
                out.append(self.images[j].to(images.device))
                self.images[j] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        stored = torch.stack(self.images).cpu() if self.images else torch.empty(0)
        return {"size": self.size, "images": stored}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size = int(state["size"])
        stored = state["images"]
        self.images = [t.clone() for t in stored] if stored.numel() else []

    def to(self, device) -> ImagePool:
        self.images = [t.to(device) for t in self.images]
        return self


__all__ = ["CycleGAN", "CycleGANConfig", "CycleLosses", "CycleOutputs", "ImagePool", "PatchDiscriminator", "ResNetGenerator",
           "cycle_losses", "discriminator_loss", "gaussian_init", "lsgan_loss"]

