"""StyleGAN2-ADA generator: mapping (z, c -> ws) + synthesis (ws -> image).

State-dict keys, shapes and order equal the official ``training.networks.Generator``
(``synthesis.*`` first, then ``mapping.*``), so official weights load with
``load_state_dict(official_state, strict=True)``.

Example:
    >>> import torch
    >>> from medcf.generators.stylegan2 import Generator, GeneratorConfig
    >>> G = Generator(GeneratorConfig(z_dim=32, w_dim=32, img_resolution=16, img_channels=1)).eval()
    >>> x = G.sample(2, generator=torch.Generator().manual_seed(0))    # [2, 1, 16, 16]
    >>> ws = G.mapping(torch.randn(2, 32), None, truncation_psi=0.7)   # [2, num_ws, 32]
    >>> G.decode(ws).shape
    torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medcf.errors import ShapeError
from medcf.generators.stylegan2.config import GeneratorConfig
from medcf.generators.stylegan2.layers import randn
from medcf.generators.stylegan2.mapping import MappingNetwork
from medcf.generators.stylegan2.synthesis import SynthesisNetwork
from medcf.io import SavableModule


class Generator(SavableModule):
    """z [B, z_dim], c [B, c_dim] -> image [B, img_channels, R, R] (roughly in [-1, 1] once trained).

    ``seed`` drives the initialisation only (a private ``torch.Generator``).
    """

    kind = "stylegan2-generator"
    config_class = GeneratorConfig

    def __init__(self, config: GeneratorConfig, *, seed: int = 0):
        super().__init__(config)
        init = torch.Generator().manual_seed(seed)
        self.z_dim, self.c_dim, self.w_dim = config.z_dim, config.c_dim, config.w_dim
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels
        # official order: synthesis is created (and stored) before mapping
        self.synthesis = SynthesisNetwork(config.w_dim, config.img_resolution, config.img_channels,
                                          config.synthesis, init=init)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(config.z_dim, config.c_dim, config.w_dim, self.num_ws,
                                      config.mapping, init=init)

    def forward(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, *, noise_mode: str = "random",
                force_fp32: bool = False, fused_modconv: bool | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """Official-style call: ``G(z, c, truncation_psi, truncation_cutoff, noise_mode=...)``."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32,
                              fused_modconv=fused_modconv, generator=generator)

    # ------------------------------------------------------------------ medcf Generator protocol

    def decode(self, w: Tensor, *, noise_mode: str = "const", force_fp32: bool = False) -> Tensor:
        """w [B, w_dim] (broadcast to every layer) or ws [B, num_ws, w_dim] -> image [B, C, R, R]."""
        if w.ndim == 2 and w.shape[1] == self.w_dim:
            w = w.unsqueeze(1).expand(-1, self.num_ws, -1)
        elif w.ndim != 3 or w.shape[1:] != (self.num_ws, self.w_dim):
            raise ShapeError(f"w: expected [B, {self.w_dim}] or [B, {self.num_ws}, {self.w_dim}], "
                             f"got {tuple(w.shape)}")
        return self.synthesis(w, noise_mode=noise_mode, force_fp32=force_fp32)

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               c: Tensor | int | None = None, truncation_psi: float = 1.0,
               noise_mode: str = "const") -> Tensor:
        """n images from z ~ N(0, I) drawn with ``generator``.  c: labels [n, c_dim] or a class index."""
        device = self.mapping.fc0.weight.device
        z = randn((n, self.z_dim), generator, device)
        return self(z, self.labels(n, c), truncation_psi, noise_mode=noise_mode, generator=generator)

    def labels(self, n: int, c: Tensor | int | None) -> Tensor | None:
        """Turn ``c`` (None, a class index, or [n, c_dim]) into labels [n, c_dim] (None if c_dim=0)."""
        device = self.mapping.fc0.weight.device
        if self.c_dim == 0:
            if c is not None and not (isinstance(c, Tensor) and c.numel() == 0):
                raise ShapeError("c: this generator is unconditional (c_dim=0); pass c=None")
            return None
        if c is None:
            raise ShapeError(f"c: this generator is conditional (c_dim={self.c_dim}); "
                             f"pass labels [n, {self.c_dim}] or a class index")
        if isinstance(c, int):
            if not 0 <= c < self.c_dim:
                raise ShapeError(f"c: class index must lie in [0, {self.c_dim}), got {c}")
            return F.one_hot(torch.full((n,), c, device=device), self.c_dim).float()
        if c.shape != (n, self.c_dim):
            raise ShapeError(f"c: expected [{n}, {self.c_dim}], got {tuple(c.shape)}")
        return c.to(device=device, dtype=torch.float32)

    @property
    def w_avg(self) -> Tensor:
        """The tracked average w [w_dim] (the truncation centre)."""
        return self.mapping.w_avg

    def checkpoint_meta(self) -> dict:
        return {"num_ws": self.num_ws}
