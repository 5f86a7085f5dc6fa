"""StyleGAN2 synthesis network: ws [B, num_ws, w_dim] -> image [B, C, R, R].

Each resolution block (4x4 const input, then 8, 16, ... R) holds two modulated
3x3 convolutions (the first up-samples 2x with a FIR filter), per-pixel noise
inputs and, depending on the architecture, a ToRGB layer:

* ``skip`` (official default): every block's ToRGB output is added to the
  FIR-up-sampled image of the previous block;
* ``orig``: only the last block has a ToRGB;
* ``resnet``: a 1x1 up-sampling skip connection around the two convs, gain sqrt(1/2).

Modulation scales the conv weight per sample by the style ``affine(w)``;
demodulation rescales each output channel to unit norm. The "fused" path folds
the batch into the channel axis and runs one grouped convolution.

Official names (per block ``b{res}``): ``const``, ``resample_filter``,
``conv0``/``conv1`` (``weight``, ``noise_strength``, ``bias``,
``resample_filter``, ``noise_const``, ``affine.{weight,bias}``), ``torgb``
(``weight``, ``bias``, ``affine``) and, for resnet, ``skip.{weight,resample_filter}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.errors import MedcfError
from medcf.generators.stylegan2.config import SynthesisConfig, channels_at
from medcf.generators.stylegan2.layers import (
    Conv2dLayer,
    FilteredModule,
    FullyConnectedLayer,
    activation_gain,
    bias_act,
    filter_size,
    fir_filter,
    fir_upsample,
    randn,
    up_pad,
    use_fp16,
)

NOISE_MODES = ("random", "const", "none")


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, *, demodulate: bool = True,
                     padding: int = 0, up: int = 1, up_padding: int = 0,
                     fir_kernel: Tensor | None = None,
                     fir_pad: tuple[int, int, int, int] = (0, 0, 0, 0),
                     noise: Tensor | None = None, fused: bool = True) -> Tensor:
    """Modulated (and demodulated) convolution.  x [B, I, H, W], weight [O, I, k, k], styles [B, I].

    ``up`` > 1: transposed conv with stride ``up`` (weight used as a true convolution)
    followed by the FIR ``fir_kernel`` with padding ``fir_pad``. Returns [B, O, H', W'].
    """
    b, i_ch, h, w_ = x.shape
    o_ch, _, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # pre-scale to keep fp16 in range (undone by demod)
        weight = weight * (1 / math.sqrt(i_ch * kh * kw)
                           / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.abs().amax(dim=1, keepdim=True)
    dcoefs = None
    if demodulate:  # 1 / ||W * s||_2 per (sample, output channel), without forming W * s
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [B, O]

    if fused:
        if up > 1:  # conv_transpose2d wants [groups * in, out, k, k]
            w = weight.transpose(0, 1).unsqueeze(0) * styles.reshape(b, i_ch, 1, 1, 1)
            if dcoefs is not None:
                w = w * dcoefs.reshape(b, 1, o_ch, 1, 1)
            w = w.reshape(b * i_ch, o_ch, kh, kw)
        else:
            w = weight.unsqueeze(0) * styles.reshape(b, 1, i_ch, 1, 1)  # [B, O, I, k, k]
            if dcoefs is not None:
                w = w * dcoefs.reshape(b, o_ch, 1, 1, 1)
            w = w.reshape(b * o_ch, i_ch, kh, kw)
        x = _conv(x.reshape(1, b * i_ch, h, w_), w.to(x.dtype), groups=b, padding=padding, up=up,
                  up_padding=up_padding, fir_kernel=fir_kernel, fir_pad=fir_pad)
        x = x.reshape(b, o_ch, x.shape[2], x.shape[3])
        return x + noise.to(x.dtype) if noise is not None else x

    x = x * styles.to(x.dtype).reshape(b, i_ch, 1, 1)
    wt = weight.transpose(0, 1) if up > 1 else weight
    x = _conv(x, wt.to(x.dtype), groups=1, padding=padding, up=up, up_padding=up_padding,
              fir_kernel=fir_kernel, fir_pad=fir_pad)
    if dcoefs is not None:
        x = x * dcoefs.to(x.dtype).reshape(b, o_ch, 1, 1)
    return x + noise.to(x.dtype) if noise is not None else x


def _conv(x: Tensor, w: Tensor, *, groups: int, padding: int, up: int, up_padding: int,
          fir_kernel: Tensor | None, fir_pad: tuple[int, int, int, int]) -> Tensor:
    if up == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    x = F.conv_transpose2d(x, w, stride=up, padding=up_padding, groups=groups)
    return fir_filter(x, fir_kernel, fir_pad)


def _up_conv_padding(k: int, fw: int, up: int) -> tuple[int, tuple[int, int, int, int]]:
    """Crop of the transposed conv and pad of the FIR that follows (k x k kernel, fw-tap filter)."""
    p = k // 2
    p0 = p + (fw + up - 1) // 2 - (k - 1)
    p1 = p + (fw - up) // 2 - (k - up)
    crop = max(min(-p0, -p1), 0)
    return crop, (p0 + crop, p1 + crop, p0 + crop, p1 + crop)


class SynthesisLayer(FilteredModule):
    """Modulated conv + noise + bias + activation.  x [B, I, R/up, R/up], w [B, w_dim] -> [B, O, R, R]."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *,
                 kernel_size: int = 3, up: int = 1, use_noise: bool = True,
                 activation: str = "lrelu", resample_filter: Sequence[float] = (1, 3, 3, 1),
                 conv_clamp: float | None = None, channels_last: bool = False,
                 init: torch.Generator | None = None):
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.channels_last = channels_last
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, init=init)
        self._set_filter(resample_filter, gain=float(up * up) if up > 1 else None)
        self.padding = kernel_size // 2
        self.act_gain = activation_gain(activation)
        self.up_padding, self.fir_pad = 0, (0, 0, 0, 0)
        if up > 1:
            self.up_padding, self.fir_pad = _up_conv_padding(
                kernel_size, filter_size(self.resample_filter), up)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size], generator=init))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution], generator=init))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def noise_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, 1, self.resolution, self.resolution)

    def forward(self, x: Tensor, w: Tensor, *, noise_mode: str = "random", fused_modconv: bool = True,
                gain: float = 1.0, generator: torch.Generator | None = None,
                random_noise: Tensor | None = None) -> Tensor:
        # random_noise: N(0, 1) [B, 1, R, R] drawn by the caller (else drawn here from generator)
        styles = self.affine(w)  # [B, I]
        noise = None
        if self.use_noise and noise_mode == "random":
            if random_noise is None:
                random_noise = randn(self.noise_shape(x.shape[0]), generator, x.device)
            noise = random_noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, padding=self.padding, up=self.up,
                             up_padding=self.up_padding, fir_kernel=self.fir_kernel,
                             fir_pad=self.fir_pad, noise=noise, fused=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), self.activation, gain=self.act_gain * gain,
                        clamp=clamp)


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation + bias.  x [B, I, R, R], w [B, w_dim] -> [B, C, R, R]."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *,
                 conv_clamp: float | None = None, init: torch.Generator | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, init=init)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1], generator=init))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor, *, fused_modconv: bool = True) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(FilteredModule):
    """One resolution: (x [B, I, R/2, R/2] | const), img [B, C, R/2, R/2] | None -> x, img at R."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 img_channels: int, is_last: bool, config: SynthesisConfig, *,
                 use_fp16: bool = False, init: torch.Generator | None = None):
        super().__init__()
        arch = config.architecture
        self.in_channels, self.resolution, self.architecture = in_channels, resolution, arch
        self.is_last, self.use_fp16 = is_last, use_fp16
        self.channels_last = use_fp16 and config.fp16_channels_last
        # this block's own filter up-samples the skip-architecture image
        self._set_filter(config.resample_filter,
                         gain=4.0 if arch == "skip" and in_channels != 0 else None)
        self.img_pad = up_pad(filter_size(self.resample_filter), 2)
        self.num_conv = self.num_torgb = 0
        layer_kwargs = dict(kernel_size=config.kernel_size, use_noise=config.use_noise,
                            activation=config.activation, conv_clamp=config.conv_clamp,
                            channels_last=self.channels_last, init=init)
        if in_channels == 0:
            self.const = nn.Parameter(
                torch.randn([out_channels, resolution, resolution], generator=init))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=config.resample_filter, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    resample_filter=config.resample_filter, **layer_kwargs)
        self.num_conv += 1
        if is_last or arch == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim,
                                    conv_clamp=config.conv_clamp, init=init)
            self.num_torgb += 1
        if in_channels != 0 and arch == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, up=2,
                                    resample_filter=config.resample_filter, init=init)

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, *, force_fp32: bool = False,
                fused_modconv: bool | None = None, noise_mode: str = "random",
                generator: torch.Generator | None = None,
                random_noise: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        # ws: [B, num_conv + num_torgb, w_dim]; random_noise: {"conv0"/"conv1": [B, 1, R, R]} or None
        fp16 = use_fp16(self.use_fp16, force_fp32, ws.device)
        dtype = torch.float16 if fp16 else torch.float32
        fmt = torch.channels_last if self.channels_last and fp16 else torch.contiguous_format
        if fused_modconv is None:
            # The official rule fuses whenever evaluating in fp32. Measured here, the grouped
            # conv was ~2x slower than the non-fused path at batch 16 on CPU and on an H100
            # (docs/stylegan2.md), so auto fuses only for a single sample (groups=1).
            fused_modconv = not self.training and ws.shape[0] == 1
        kw = dict(fused_modconv=fused_modconv, noise_mode=noise_mode, generator=generator)
        given = random_noise or {}
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x.contiguous(memory_format=fmt), ws[:, 0], random_noise=given.get("conv1"), **kw)
        elif self.architecture == "resnet":
            x = x.to(dtype=dtype, memory_format=fmt)
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, ws[:, 0], random_noise=given.get("conv0"), **kw)
            x = self.conv1(x, ws[:, 1], gain=math.sqrt(0.5), random_noise=given.get("conv1"), **kw)
            x = y + x
        else:
            x = x.to(dtype=dtype, memory_format=fmt)
            x = self.conv0(x, ws[:, 0], random_noise=given.get("conv0"), **kw)
            x = self.conv1(x, ws[:, 1], random_noise=given.get("conv1"), **kw)

        if img is not None:
            img = fir_upsample(img, self.fir_kernel, 2, self.img_pad)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, ws[:, self.num_conv], fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> img [B, img_channels, R, R]; children ``b4`` ... ``b{R}``."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int,
                 config: SynthesisConfig, *, init: torch.Generator | None = None):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        fp16_resolution = max(2 ** (log2 + 1 - config.num_fp16_res), 8)
        self.num_ws = 0
        self._slices: list[tuple[str, int, int]] = []  # (block name, first w, number of ws)
        for res in self.block_resolutions:
            in_ch = channels_at(res // 2, config.channel_base, config.channel_max) if res > 4 else 0
            out_ch = channels_at(res, config.channel_base, config.channel_max)
            block = SynthesisBlock(in_ch, out_ch, w_dim, res, img_channels,
                                   is_last=(res == img_resolution), config=config,
                                   use_fp16=(res >= fp16_resolution), init=init)
            setattr(self, f"b{res}", block)
            # a block's ToRGB shares its w with the next block's first conv
            self._slices.append((f"b{res}", self.num_ws, block.num_conv + block.num_torgb))
            self.num_ws += block.num_conv + (block.num_torgb if res == img_resolution else 0)

    def forward(self, ws: Tensor, *, noise_mode: str = "random", force_fp32: bool = False,
                fused_modconv: bool | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        if noise_mode not in NOISE_MODES:
            raise MedcfError(f"noise_mode: expected one of {list(NOISE_MODES)}, got {noise_mode!r}")
        ws = ws.to(torch.float32)
        noise = None
        if noise_mode == "random" and generator is not None:
            noise = self._draw_noise(ws.shape[0], generator, ws.device)
        x = img = None
        for name, start, count in self._slices:
            x, img = getattr(self, name)(x, img, ws[:, start:start + count], force_fp32=force_fp32,
                                         fused_modconv=fused_modconv, noise_mode=noise_mode,
                                         generator=generator,
                                         random_noise=noise.get(name) if noise is not None else None)
        return img

    @torch.compiler.disable
    def _draw_noise(self, batch: int, generator: torch.Generator,
                    device: torch.device) -> dict[str, dict[str, Tensor]]:
        """Every layer's random noise from ``generator``, in the order the layers would draw it.

        Drawn up front so that ``torch.compile`` breaks the graph once here (a
        ``torch.Generator`` cannot be traced) instead of once per layer.
        """
        noise: dict[str, dict[str, Tensor]] = {}
        for name, _, _ in self._slices:
            block = getattr(self, name)
            noise[name] = {n: randn(getattr(block, n).noise_shape(batch), generator, device)
                           for n in ("conv0", "conv1")
                           if hasattr(block, n) and getattr(block, n).use_noise}
        return noise
