"""CycleGAN translation counterfactuals (Narayanaswamy et al., MICCAI 2020).

The counterfactual of x toward class B is G_AB(x); applying the generator again,
G_AB^k(x) for k = 1..K, amplifies the change as in the paper. Every frame is scored
by the classifier, and the counterfactual is the first frame whose target probability
reaches ``take_at`` (or ``threshold``), else the best frame (``Explainer.from_path``).
Frame 0 of the path is the input itself, and the difference map is cf - x.

``compose="masked"`` keeps each translation only where its change is large: frame k is
x + m_k (G_AB^k(x) - x), with m_k where the box-averaged |G_AB^k(x) - x| (radius
``mask_smooth``) reaches ``mask_threshold`` x its per-image peak, dilated by ``mask_dilate``
pixels (``medcf.counterfactual._common.masked_frames``). Outside the mask the counterfactual
is the input, bit for bit: the organ-sized change passes, while small objects the generator
redraws imperfectly (the translation's foreign-object losses) stay as they were.

The known failure mode: a CycleGAN can hide information in the image to satisfy the
cycle loss, so a translation may flip the classifier without changing what an
independent oracle sees. The explainer has no oracle; ``hidden_information`` counts
such queries from evaluation rows (``medcf.eval.evaluate_counterfactuals`` with an oracle).

Example:
    >>> from medcf.generators.cyclegan import CycleGAN, CycleGANConfig
    >>> g = CycleGAN(CycleGANConfig(resolution=32, width=4, blocks=1)).eval()
    >>> clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
    >>> cf = CycleGANExplainer(cyclegan=g, classifier=clf).explain(torch.zeros(2, 1, 32, 32), target=1)
    >>> cf.path.shape[0]      # the input + K = 4 translations
    5
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from medcf.counterfactual._common import check_mask_settings, domain_sides, masked_frames
from medcf.counterfactual.base import Explainer, PathConfig
from medcf.eval.validity import (
    hidden_information,  # re-exported: the failure mode this page reports
)
from medcf.generators.cyclegan import CycleGAN
from medcf.types import Counterfactual, Target


@dataclass(frozen=True)
class CycleGANExplainerConfig(PathConfig):
    compose_modes: ClassVar[tuple[str, ...]] = ("generated", "masked")

    max_steps: int = 4                  # K: translations applied, G^1(x) .. G^K(x)
    compose: str = "generated"          # frames: G^k(x) | "masked": x + m_k (G^k(x) - x)
    mask_threshold: float = 0.6         # masked: smoothed |change| >= this fraction of its per-image peak
    mask_dilate: int = 2                # masked: dilation radius in pixels
    mask_smooth: int = 2                # masked: box-average radius of |change| before thresholding

    def __post_init__(self):
        where = "CycleGANExplainerConfig"
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"{where}.max_steps: must be an integer >= 1, got {self.max_steps!r}")
        check_mask_settings(where, self.mask_threshold, self.mask_dilate, self.mask_smooth)
        super().__post_init__()


class CycleGANExplainer(Explainer):
    """Counterfactuals by repeated translation with a trained ``CycleGAN`` (``--method cyclegan``).

    The target class must be one of the CycleGAN's two domains (matched by class name when
    both the classifier and the CycleGAN know their class names, else by index).
    """

    method = "cyclegan"
    config_class = CycleGANExplainerConfig

    def __init__(self, *, cyclegan: CycleGAN, classifier, config: CycleGANExplainerConfig | None = None):
        super().__init__(classifier=classifier, config=config)
        self.cyclegan = cyclegan

    @property
    def generator(self) -> CycleGAN:  # what explain_runner reads the input shape from
        return self.cyclegan

    def _domains(self, t: Tensor) -> Tensor:
        """[B] classifier class indices -> [B] bool: translate toward domain B (else toward A)."""
        sides = domain_sides(self.classifier, self.cyclegan, t, "CycleGAN")
        return torch.tensor([s == "b" for s in sides], dtype=torch.bool, device=t.device)

    @torch.no_grad()
    def explain(self, x: Tensor, target: Target | None = None) -> Counterfactual:
        """x [B, C, H, W] -> Counterfactual with path [K + 1, B, C, H, W] (frame 0: x)."""
        start = time.perf_counter()
        cfg = self.cyclegan.config
        self.check_inputs(x, channels=cfg.channels, resolution=cfg.resolution, modules={"cyclegan": self.cyclegan})
        with self.eval_mode(self.cyclegan):
            t, _ = self.targets(x, target)
            to_b = self._domains(t)                                       # [B]
            frames, cur = [x], x
            for _ in range(self.config.max_steps):
                nxt = torch.empty_like(cur)
                if to_b.any():
                    nxt[to_b] = self.cyclegan.g_ab(cur[to_b])
                if (~to_b).any():
                    nxt[~to_b] = self.cyclegan.g_ba(cur[~to_b])
                frames.append(nxt)
                cur = nxt
            path = torch.stack(frames)                                    # [K + 1, B, C, H, W]
            ec = self.config
            if ec.compose == "masked":
                path = masked_frames(x, path, ec.mask_threshold, ec.mask_dilate, ec.mask_smooth)
            info = {"direction": ["A->B" if v else "B->A" for v in to_b.tolist()],
                    "domains": [cfg.domain_name("a"), cfg.domain_name("b")], "compose": ec.compose}
            cf = self.from_path(x, t, path, reference=x, info=info, start_time=start)
        cf.info["translations"] = cf.info["frame_index"]  # k in G^k(x)
        return cf


def build_cyclegan(classifier_dir: str | os.PathLike, generator_dir: str | os.PathLike, *,
                   device: str | torch.device = "cpu", progress: bool = True,
                   **settings) -> CycleGANExplainer:
    """A ``CycleGANExplainer`` from a classifier run and a ``cyclegan`` run (``medcf train cyclegan``).

    ``settings``: ``CycleGANExplainerConfig`` fields (``max_steps`` = K translations, ``threshold``,
    ``take_at``, ``compose`` and the ``mask_*`` settings); None keeps the default. ``progress`` is accepted for the builder contract (unused).

    Example:
        >>> e = build_cyclegan("runs/classifier", "runs/cyclegan", max_steps=4, compose="masked")   # doctest: +SKIP
    """
    from medcf.counterfactual.checkpoints import load_method_inputs

    config, classifier, model = load_method_inputs(
        CycleGANExplainerConfig, CycleGANExplainer.method, settings, classifier_dir, generator_dir,
        kinds=(CycleGAN.kind,), how="medcf train cyclegan", load=CycleGAN.load, device=device)
    return CycleGANExplainer(cyclegan=model, classifier=classifier, config=config)


__all__ = ["CycleGANExplainer", "CycleGANExplainerConfig", "build_cyclegan", "hidden_information"]
