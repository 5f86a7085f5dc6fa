"""Bilinear ``grid_sample`` that can be differentiated twice with respect to its input.

R1 regularisation differentiates the discriminator's gradient with respect to
the real images, so with ADA's geometric augmentation in front of D the
training step needs the second derivative of ``grid_sample`` with respect to
its input. PyTorch's CPU kernel provides it; the CUDA kernel does not
("derivative for aten::grid_sampler_2d_backward is not implemented"). The
official StyleGAN2-ADA code patches this with a custom op; this module is our
own version of the same idea.

For a fixed grid, bilinear sampling is linear in the input: ``y = S x``. Its
gradient is ``dx = Sᵀ dy`` (PyTorch's backward kernel), and the derivative of
``Sᵀ dy`` with respect to ``dy`` applied to ``v`` is ``S v``, the forward
sampling again. So two autograd functions, each the other's backward, give
derivatives of every order. The grid itself gets no gradient (ADA's grids are
built from random matrices, never learned); a grid that requires grad is
passed to ``F.grid_sample`` unchanged.

Example:
    >>> x = torch.randn(2, 1, 8, 8, requires_grad=True)
    >>> grid = F.affine_grid(torch.eye(2, 3).repeat(2, 1, 1), [2, 1, 8, 8], align_corners=False)
    >>> bool(torch.allclose(grid_sample_bilinear(x, grid), x, atol=1e-6))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_BILINEAR, _ZEROS, _ALIGN_CORNERS = 0, 0, False  # aten codes: interpolation, padding mode


def grid_sample_bilinear(x: Tensor, grid: Tensor) -> Tensor:
    """``F.grid_sample(x, grid, "bilinear", "zeros", align_corners=False)``, twice differentiable in x.

    x: [B, C, H, W]; grid: [B, H_out, W_out, 2] in [-1, 1] -> [B, C, H_out, W_out].
    """
    if grid.requires_grad:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=_ALIGN_CORNERS)
    return _Sample.apply(x, grid)


class _Sample(torch.autograd.Function):
    """y = S x (S: bilinear sampling at a fixed grid)."""

    @staticmethod
    def forward(ctx, x: Tensor, grid: Tensor) -> Tensor:
        ctx.save_for_backward(grid)
        ctx.input_shape = x.shape
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=_ALIGN_CORNERS)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        (grid,) = ctx.saved_tensors
        return _SampleTransposed.apply(grad_y, grid, ctx.input_shape), None


class _SampleTransposed(torch.autograd.Function):
    """dx = Sᵀ dy; its own derivative with respect to dy is S."""

    @staticmethod
    def forward(ctx, grad_y: Tensor, grid: Tensor, input_shape: torch.Size) -> Tensor:
        ctx.save_for_backward(grid)
        # the kernel reads the input only for its shape (sampling is linear in x; no grid grad)
        shape_only = grad_y.new_zeros(input_shape)
        grad_x, _ = torch.ops.aten.grid_sampler_2d_backward(
            grad_y, shape_only, grid, _BILINEAR, _ZEROS, _ALIGN_CORNERS, [True, False])
        return grad_x

    @staticmethod
    def backward(ctx, grad_grad_x: Tensor):
        (grid,) = ctx.saved_tensors
        return _Sample.apply(grad_grad_x, grid), None, None
