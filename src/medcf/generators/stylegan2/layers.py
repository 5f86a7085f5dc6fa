"""Building blocks shared by the StyleGAN2-ADA generator and discriminator.

* activations with their default gains and ``bias_act`` (bias, activation,
  gain, clamp -- in that order);
* FIR resampling ("upfirdn": zero-insertion up-sampling, FIR filter,
  sub-sampling) driven by the ``resample_filter`` buffer each layer stores
  under its official name;
* equalized-learning-rate fully-connected and convolution layers: raw
  parameters are stored N(0, 1) and scaled by a constant gain at run time.

All layers take an explicit ``torch.Generator`` for initialisation (``init``)
and never touch the global RNG.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> fc = FullyConnectedLayer(8, 4, activation="lrelu", init=g)
    >>> fc(torch.zeros(2, 8)).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.errors import MedcfError

SQRT2 = math.sqrt(2.0)


def _swish(x: Tensor) -> Tensor:
    return torch.sigmoid(x) * x


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


# name -> (function, default gain); the gains keep the signal variance ~1 (official values)
ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor] | None, float]] = {
    "linear": (None, 1.0),
    "relu": (F.relu, SQRT2),
    "lrelu": (_lrelu, SQRT2),
    "tanh": (torch.tanh, 1.0),
    "sigmoid": (torch.sigmoid, 1.0),
    "elu": (F.elu, 1.0),
    "selu": (F.selu, 1.0),
    "softplus": (F.softplus, 1.0),
    "swish": (_swish, SQRT2),
}


def activation_gain(name: str) -> float:
    if name not in ACTIVATIONS:
        raise MedcfError(f"activation: unknown {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name][1]


def bias_act(x: Tensor, b: Tensor | None, act: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> Tensor:
    """x + b (broadcast along dim 1), activation, * gain, clamp to +-clamp.  x: [B, C, ...]."""
    if b is not None:
        x = x + b.reshape((1, -1) + (1,) * (x.ndim - 2))
    fn = ACTIVATIONS[act][0]
    if fn is not None:
        x = fn(x)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale each row of [B, F] to unit mean square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """N(0, 1) drawn from ``generator`` (on its own device), returned on ``device``."""
    if generator is None:
        return torch.randn(list(shape), device=device, dtype=dtype)
    out = torch.randn(list(shape), generator=generator, device=generator.device, dtype=dtype)
    return out.to(device)


def use_fp16(enabled: bool, force_fp32: bool, device: torch.device) -> bool:
    """fp16 blocks run in half precision on CUDA only (CPU always computes in fp32)."""
    return enabled and not force_fp32 and device.type == "cuda"


# ----------------------------------------------------------------------------- FIR resampling


def setup_filter(taps: Sequence[float] | Tensor) -> Tensor:
    """Official filter setup: taps normalised to sum 1; < 8 taps become their 2D outer product."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    return f / f.sum()


def filter_size(f: Tensor) -> int:
    """Width of a (square) resample filter buffer: [n] (separable) or [n, n]."""
    if f.ndim not in (1, 2) or (f.ndim == 2 and f.shape[0] != f.shape[1]):
        raise MedcfError(f"resample_filter: expected [n] or [n, n], got {tuple(f.shape)}")
    return int(f.shape[-1])


def fir_filter(x: Tensor, kernel: Tensor, pad: tuple[int, int, int, int], down: int = 1) -> Tensor:
    """Pad [x0, x1, y0, y1] (negative = crop), correlate each channel with ``kernel``, stride ``down``.

    x: [B, C, H, W]; kernel: [1, 1, kh, kw] ready for conv2d (already flipped and gained).
    """
    c = x.shape[1]
    k = kernel.to(x.dtype).expand(c, 1, -1, -1)  # depthwise: a view, no copy of the filter
    x0, x1, y0, y1 = pad
    if x0 == x1 and y0 == y1 and x0 >= 0 and y0 >= 0:
        return F.conv2d(x, k, stride=down, padding=(y0, x0), groups=c)
    return F.conv2d(F.pad(x, [x0, x1, y0, y1]), k, stride=down, groups=c)


def fir_upsample(x: Tensor, kernel: Tensor, up: int, pad: tuple[int, int, int, int]) -> Tensor:
    """Insert up-1 zeros after every pixel, then ``fir_filter``.  [B, C, H, W] -> [B, C, H', W']."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    x = x.reshape(b, c, h * up, w * up)
    return fir_filter(x, kernel, pad)


def up_pad(fw: int, up: int, extra: int = 0) -> tuple[int, int, int, int]:
    """Padding of an up-sampling FIR so that [H, W] -> [up*H, up*W] stays centred."""
    p0, p1 = extra + (fw + up - 1) // 2, extra + (fw - up) // 2
    return (p0, p1, p0, p1)


def down_pad(fw: int, down: int, extra: int = 0) -> tuple[int, int, int, int]:
    """Padding of a down-sampling FIR (before sub-sampling by ``down``)."""
    p0, p1 = extra + (fw - down + 1) // 2, extra + (fw - down) // 2
    return (p0, p1, p0, p1)


class FilteredModule(nn.Module):
    """A layer that stores an official ``resample_filter`` buffer.

    The buffer is the source of truth (it is what official weights load into);
    ``fir_kernel`` (not saved) is its conv-ready form -- flipped, because the
    official FIR is a true convolution, and multiplied by the layer's gain. It
    is derived once at construction and again whenever a state dict is loaded,
    so no filter is recomputed per call. Call ``refresh_filter()`` after
    editing ``resample_filter`` in place.
    """

    def _set_filter(self, taps: Sequence[float], gain: float | None) -> None:
        self.register_buffer("resample_filter", setup_filter(taps))
        self._fir_gain = gain  # None: this layer never resamples
        self.register_buffer("fir_kernel", None, persistent=False)
        self.refresh_filter()

    @torch.no_grad()
    def refresh_filter(self) -> None:
        if self._fir_gain is None:
            return
        f = self.resample_filter.detach()
        if f.ndim == 1:  # separable taps: the 2D kernel is their outer product
            f = torch.outer(f, f)
        self.fir_kernel = (f.flip([0, 1]) * self._fir_gain)[None, None].contiguous()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh_filter()


# ----------------------------------------------------------------------------- equalized-lr layers


class FullyConnectedLayer(nn.Module):
    """y = act(x @ (W * lr_mul / sqrt(in)).T + b * lr_mul) * gain.  [B, in] -> [B, out].

    Official names: ``weight`` [out, in] (stored / lr_mul), ``bias`` [out].
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 activation: str = "linear", lr_multiplier: float = 1.0, bias_init: float = 0.0,
                 init: torch.Generator | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.act_gain = activation_gain(activation)
        w = torch.randn([out_features, in_features], generator=init) / lr_multiplier
        self.weight = nn.Parameter(w)
        if bias:
            self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        else:
            self.register_parameter("bias", None)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)  # constant, applied at run time
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, self.activation, gain=self.act_gain)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


class Conv2dLayer(FilteredModule):
    """Equalized-lr convolution with optional FIR up/down-sampling.  [B, in, H, W] -> [B, out, H', W'].

    Official names: ``weight`` [out, in, k, k], ``bias`` [out], ``resample_filter``.
    With ``trainable=False`` (frozen layers) weight and bias are buffers, as officially.
    Down-sampling: FIR filter, then a strided convolution. Up-sampling (1x1 kernels
    only, as used officially): convolution, then FIR up-sampling.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1,
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None,
                 trainable: bool = True, init: torch.Generator | None = None):
        super().__init__()
        if up > 1 and kernel_size != 1:
            raise MedcfError(f"Conv2dLayer: up-sampling supports 1x1 kernels only, got {kernel_size}")
        if up > 1 and down > 1:
            raise MedcfError("Conv2dLayer: up and down cannot both be > 1")
        self.activation, self.up, self.down = activation, up, down
        self.conv_clamp = conv_clamp
        self._set_filter(resample_filter, gain=float(up * up) if up > 1 else
                         (1.0 if down > 1 else None))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = activation_gain(activation)
        w = torch.randn([out_channels, in_channels, kernel_size, kernel_size], generator=init)
        b = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(w)
            self.bias = nn.Parameter(b) if b is not None else None
        else:
            self.register_buffer("weight", w)
            self.register_buffer("bias", b)
        fw = filter_size(self.resample_filter)
        if up > 1:
            self.fir_pad = up_pad(fw, up)
        elif down > 1:
            self.fir_pad = down_pad(fw, down, extra=self.padding)

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        if self.up > 1:  # 1x1 conv at low resolution, then FIR up-sampling
            x = F.conv2d(x, w)
            x = fir_upsample(x, self.fir_kernel, self.up, self.fir_pad)
        elif self.down > 1 and w.shape[-1] == 1:  # FIR down-sampling, then 1x1 conv
            x = fir_filter(x, self.fir_kernel, self.fir_pad, down=self.down)
            x = F.conv2d(x, w)
        elif self.down > 1:  # FIR at full resolution, then strided conv
            x = fir_filter(x, self.fir_kernel, self.fir_pad)
            x = F.conv2d(x, w, stride=self.down)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, self.activation, gain=self.act_gain * gain, clamp=clamp)
