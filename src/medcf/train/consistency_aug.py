"""Robust classifier consistency for progressive exaggeration / DISSECT (issue 13).

The generator is trained to move the explained classifier ``f``; left alone it finds edits that
``f`` accepts but that are not a heart change (f's fragile, pixel-exact sensitivities; an
independent oracle disagrees). ``ConsistencyAug`` perturbs the generator's output *only where it
enters the consistency term* -- a random integer translation (replicated border), Gaussian noise and
a slight blur per image, and optionally a weakening of the change itself (``x + a (x_c - x)``, a random
``a`` in [edit, 1]: the edit must overshoot, a margin in image space rather than in f's output) --
so an edit satisfies ``f`` only if it survives those perturbations. Shift and noise are the judges'
own training augmentation (``medcf.train.classifiers.augment``, which also clamps to [-1, 1]). The
adversarial, reconstruction, cycle and object terms see the unperturbed output. Off by default
(``ConsistencyAug()``: the training step is bit-identical to the recipe without it).

Spec strings (CLI ``--consistency-aug``, profile key ``consistency_aug``): comma-separated
``key=value`` with keys ``shift`` (max |translation| in pixels per axis, integer >= 0), ``noise``
(Gaussian std, images in [-1, 1]), ``blur`` (probability per image of a 3 x 3 binomial blur),
``edit`` (lower bound of the per-image factor on the change, in (0, 1]; 1 = off);
``"none"`` or ``""`` is off.

Example:
    >>> aug = ConsistencyAug.parse("shift=2,noise=0.02")
    >>> aug.spec()
    'shift=2,noise=0.02,blur=0,edit=1'
    >>> y = aug(torch.zeros(4, 1, 16, 16), torch.Generator().manual_seed(0))
    >>> tuple(y.shape)
    (4, 1, 16, 16)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medcf.errors import MedcfError
from medcf.train.classifiers import augment


@dataclass(frozen=True)
class ConsistencyAug:
    """Random perturbation of the consistency term's input (all zero: off)."""

    shift: int = 0          # max |translation| in pixels per axis (replicated border)
    noise: float = 0.0      # Gaussian noise std
    blur: float = 0.0       # probability per image of a 3 x 3 binomial ([1, 2, 1] / 4 squared) blur
    edit: float = 1.0       # f judges x + a (x_c - x), a ~ U[edit, 1] per image (1: the change as is)

    def __post_init__(self):
        if not (isinstance(self.shift, int) and 0 <= self.shift <= 16) or not 0 <= self.noise <= 1 \
                or not 0 <= self.blur <= 1 or not 0 < self.edit <= 1:
            raise MedcfError(f"consistency_aug: shift in 0..16 (int), noise in [0, 1], blur in [0, 1], edit in (0, 1] "
                             f"needed, got shift={self.shift!r}, noise={self.noise!r}, blur={self.blur!r}, "
                             f"edit={self.edit!r}")

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.noise > 0 or self.blur > 0 or self.edit < 1

    @classmethod
    def parse(cls, spec) -> ConsistencyAug:
        """A ``ConsistencyAug`` from a spec string ("shift=2,noise=0.02"), a dict, None or itself."""
        if isinstance(spec, cls):
            return spec
        if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none", "off")):
            return cls()
        if isinstance(spec, dict):
            items = list(spec.items())
        elif isinstance(spec, str):
            items = []
            for part in spec.split(","):
                key, eq, value = part.partition("=")
                if not eq:
                    raise MedcfError(f"consistency_aug: expected key=value, got {part.strip()!r} in {spec!r}")
                items.append((key.strip(), value.strip()))
        else:
            raise MedcfError(f"consistency_aug: expected a spec string like 'shift=2,noise=0.02', got {spec!r}")
        kwargs = {}
        for key, value in items:
            if key not in ("shift", "noise", "blur", "edit"):
                raise MedcfError(f"consistency_aug: unknown key {key!r} (shift, noise, blur, edit)")
            try:
                kwargs[key] = int(value) if key == "shift" else float(value)
            except (TypeError, ValueError):
                raise MedcfError(f"consistency_aug: {key}={value!r} is not a number") from None
        return cls(**kwargs)

    def spec(self) -> str:
        """The canonical spec string (``"none"`` when off); ``parse(spec())`` returns an equal object."""
        if not self.active:
            return "none"
        return f"shift={self.shift},noise={self.noise:g},blur={self.blur:g},edit={self.edit:g}"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 source: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, H, W] (G's output) -> perturbed x [B, C, H, W], differentiable in x; ``source``
        [B, C, H, W] is G's input (needed for ``edit`` < 1). Draws from ``generator`` (on x's device)
        only for the parts that are on, so ``ConsistencyAug()`` returns x itself."""
        b, ch = x.shape[:2]
        if self.edit < 1:
            if source is None:
                raise MedcfError("consistency_aug: edit < 1 needs the generator's input (source)")
            a = self.edit + (1 - self.edit) * torch.rand(b, generator=generator, device=x.device)   # [B]
            x = source + a.view(b, 1, 1, 1).to(x.dtype) * (x - source)
        if self.shift > 0:        # the judges' training augmentation (border padding), shift only here
            x = augment(x, generator or torch.default_generator, max_shift=self.shift, noise=0.0)
        if self.blur > 0:
            k1 = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype) / 4
            kernel = (k1[:, None] * k1[None, :]).expand(ch, 1, 3, 3)                          # [C, 1, 3, 3]
            blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=ch)
            pick = torch.rand(b, generator=generator, device=x.device) < self.blur            # [B]
            x = torch.where(pick.view(b, 1, 1, 1), blurred, x)
        if self.noise > 0:        # ... and its noise, after the blur
            x = augment(x, generator or torch.default_generator, max_shift=0, noise=self.noise)
        return x
