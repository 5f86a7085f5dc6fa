"""grid_sample_bilinear: the same values and derivatives as F.grid_sample, twice differentiable in x.

On CPU PyTorch's own kernel has a second derivative, so it is the reference here;
the point of the function is CUDA, where that derivative is missing (R1 through
ADA's geometric augmentation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medcf.generators.stylegan2.grid_sample import grid_sample_bilinear


def rotated_grid(b: int, size: int, out: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    """[b, out, out, 2] grids of random rotations/scales/shifts, partly outside [-1, 1] (zeros padding)."""
    g = torch.Generator().manual_seed(seed)
    ang = torch.rand(b, generator=g) * 2 * math.pi
    scale = 0.7 + 0.6 * torch.rand(b, generator=g)
    shift = 0.3 * torch.randn(b, 2, generator=g)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = scale * ang.cos(), -scale * ang.sin()
    theta[:, 1, 0], theta[:, 1, 1] = scale * ang.sin(), scale * ang.cos()
    theta[:, :, 2] = shift
    return F.affine_grid(theta, [b, 1, out, out], align_corners=False).to(dtype)


def native(x, grid):
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def test_forward_and_first_derivative_match_grid_sample():
    x = torch.randn(3, 2, 9, 9, generator=torch.Generator().manual_seed(1))
    grid = rotated_grid(3, 9, 12)
    assert torch.equal(grid_sample_bilinear(x, grid), native(x, grid))
    xd, gd = x.double().requires_grad_(), grid.double()
    assert torch.autograd.gradcheck(lambda t: grid_sample_bilinear(t, gd), (xd,))
    assert torch.autograd.gradgradcheck(lambda t: grid_sample_bilinear(t, gd), (xd,))


def test_r1_style_second_derivative_matches_the_native_cpu_kernel():
    """Gradient penalty on the input, then backward into the weights (what R1 does through ADA)."""
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(4, 1, 8, 8, generator=gen)
    w0 = torch.randn(3, 1, 3, 3, generator=gen)
    grid = rotated_grid(4, 8, 16, seed=3)

    def penalty_grads(sample):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        score = F.conv2d(sample(x, grid), w).tanh().sum()
        (gx,) = torch.autograd.grad(score, x, create_graph=True)
        gx.square().sum().backward()
        return w.grad

    ours, ref = penalty_grads(grid_sample_bilinear), penalty_grads(native)
    assert ref.abs().max() > 1e-3  # a real signal to compare
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_a_grid_that_needs_grad_falls_back_to_grid_sample():
    x = torch.randn(1, 1, 6, 6)
    grid = rotated_grid(1, 6, 6).requires_grad_()
    grid_sample_bilinear(x, grid).sum().backward()
    assert grid.grad is not None and grid.grad.abs().sum() > 0
