"""StyleGAN2-ADA discriminator: image [B, C, R, R] (+ label c) -> logit [B, 1].

Blocks ``b{R}`` ... ``b8`` halve the resolution (FIR filter, then a strided
conv); ``resnet`` (official default) adds a 1x1 down-sampling skip path with
gain sqrt(1/2), ``skip`` feeds a FIR-down-sampled image into every block
(``fromrgb``), ``orig`` reads the image once. The 4x4 epilogue ``b4`` appends
the minibatch standard deviation, then conv, fc and out. A conditional
discriminator maps c to ``cmap`` [B, cmap_dim] with a mapping network and
returns the projection <out, cmap> / sqrt(cmap_dim).

State-dict keys, shapes and order equal the official ``training.networks.Discriminator``.

Example:
    >>> import torch
    >>> from medcf.generators.stylegan2 import Discriminator, DiscriminatorConfig
    >>> D = Discriminator(DiscriminatorConfig(img_resolution=16, img_channels=1, channel_max=32))
    >>> D(torch.zeros(4, 1, 16, 16)).shape
    torch.Size([4, 1])
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from medcf.errors import ShapeError
from medcf.generators.stylegan2.config import DiscriminatorConfig, channels_at
from medcf.generators.stylegan2.layers import (
    Conv2dLayer,
    FilteredModule,
    FullyConnectedLayer,
    down_pad,
    filter_size,
    fir_filter,
    use_fp16,
)
from medcf.generators.stylegan2.mapping import MappingNetwork
from medcf.io import SavableModule
from medcf.types import check_images


class DiscriminatorBlock(FilteredModule):
    """x [B, tmp, R, R] | None, img [B, C, R, R] | None -> x [B, out, R/2, R/2], img at R/2 | None."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int,
                 img_channels: int, first_layer_idx: int, config: DiscriminatorConfig, *,
                 use_fp16: bool = False, init: torch.Generator | None = None):
        super().__init__()
        arch = config.architecture
        self.in_channels, self.resolution, self.architecture = in_channels, resolution, arch
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and config.fp16_channels_last
        # this block's own filter down-samples the skip-architecture image
        self._set_filter(config.resample_filter, gain=1.0 if arch == "skip" else None)
        self.img_pad = down_pad(filter_size(self.resample_filter), 2)
        self.num_layers = 0

        def trainable() -> bool:  # layers before `freeze_layers` keep their weights as buffers
            frozen = first_layer_idx + self.num_layers < config.freeze_layers
            self.num_layers += 1
            return not frozen

        common = dict(activation=config.activation, conv_clamp=config.conv_clamp, init=init)
        if in_channels == 0 or arch == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, trainable=trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, trainable=trainable(), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, down=2, trainable=trainable(),
                                 resample_filter=config.resample_filter, **common)
        if arch == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2,
                                    trainable=trainable(), resample_filter=config.resample_filter,
                                    init=init)

    def forward(self, x: Tensor | None, img: Tensor | None,
                force_fp32: bool = False) -> tuple[Tensor, Tensor | None]:
        device = (x if x is not None else img).device
        fp16 = use_fp16(self.use_fp16, force_fp32, device)
        dtype = torch.float16 if fp16 else torch.float32
        fmt = torch.channels_last if self.channels_last and fp16 else torch.contiguous_format
        if x is not None:
            x = x.to(dtype=dtype, memory_format=fmt)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype=dtype, memory_format=fmt)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = (fir_filter(img, self.fir_kernel, self.img_pad, down=2)
                   if self.architecture == "skip" else None)
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class MinibatchStdLayer(nn.Module):
    """Append the mean std over groups of G samples.  [N, C, H, W] -> [N, C + F, H, W].

    Official layout: ``x.reshape(G, N // G, ...)``, so sample i is grouped with
    samples i + N/G, i + 2N/G, ... (not with its neighbours).
    """

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        if n % g != 0:
            raise ShapeError(f"discriminator batch: {n} is not divisible by mbstd_group_size {g}")
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n, F, c, H, W]
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [n, F, c, H, W]
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)  # [n, F, 1, 1]
        y = y.repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """x [B, C, 4, 4] (+ img, cmap) -> logits [B, 1]."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 config: DiscriminatorConfig, *, init: torch.Generator | None = None):
        super().__init__()
        self.architecture, self.cmap_dim = config.architecture, cmap_dim
        act = config.activation
        if config.architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation=act, init=init)
        f = config.mbstd_num_channels
        self.mbstd = MinibatchStdLayer(config.mbstd_group_size, f) if f > 0 else None
        self.conv = Conv2dLayer(in_channels + f, in_channels, 3, activation=act,
                                conv_clamp=config.conv_clamp, init=init)
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=act,
                                      init=init)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim, init=init)

    def forward(self, x: Tensor, img: Tensor | None, cmap: Tensor | None) -> Tensor:
        x = x.to(torch.float32)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)  # [B, cmap_dim or 1]
        if cmap is not None:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(SavableModule):
    """img [B, C, R, R], c [B, c_dim] | None -> logits [B, 1].

    ``seed`` drives the initialisation only (a private ``torch.Generator``).
    """

    kind = "stylegan2-discriminator"
    config_class = DiscriminatorConfig

    def __init__(self, config: DiscriminatorConfig, *, seed: int = 0):
        super().__init__(config)
        init = torch.Generator().manual_seed(seed)
        self.c_dim, self.img_resolution = config.c_dim, config.img_resolution
        self.img_channels = config.img_channels
        log2 = int(math.log2(config.img_resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]

        def ch(res: int) -> int:
            return channels_at(res, config.channel_base, config.channel_max)

        fp16_resolution = max(2 ** (log2 + 1 - config.num_fp16_res), 8)
        cmap_dim = config.cmap_dim if config.cmap_dim is not None else ch(4)
        if config.c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim
        layer_idx = 0
        for res in self.block_resolutions:
            in_ch = ch(res) if res < config.img_resolution else 0
            block = DiscriminatorBlock(in_ch, ch(res), ch(res // 2), res, config.img_channels,
                                       layer_idx, config, use_fp16=(res >= fp16_resolution),
                                       init=init)
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if config.c_dim > 0:
            mapping = dataclasses.replace(config.mapping, w_avg_beta=None)
            self.mapping = MappingNetwork(0, config.c_dim, cmap_dim, None, mapping, init=init)
        self.b4 = DiscriminatorEpilogue(ch(4), cmap_dim, 4, config.img_channels, config, init=init)

    def forward(self, img: Tensor, c: Tensor | None = None, *, force_fp32: bool = False) -> Tensor:
        check_images(img, channels=self.img_channels, resolution=self.img_resolution, name="img")
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        cmap = None
        if self.c_dim > 0:
            if c is None:
                raise ShapeError(f"c: this discriminator is conditional (c_dim={self.c_dim}); "
                                 f"pass labels [B, {self.c_dim}]")
            cmap = self.mapping(None, c)
        return self.b4(x, img, cmap)
