"""ICAM attribute-swap counterfactuals (Bass et al., NeurIPS 2020).

Encode x -> (content c, attribute a_x); replace the attribute with a target-class code
a_t and decode G(c, a_t). ``attribute`` chooses a_t:

- ``"mean"``: the target domain's mean attribute over the training data (stored in the model);
- ``"reference"``: the attribute of a reference image of the target class (``explain(...,
  reference=images)``, one per query or one for all);
- ``"sample"``: a draw from the target domain's attribute distribution N(mean, std) (seeded).

The GIF frames interpolate the attribute, G(c, (1 - α) a_x + α a_t) for α = 0 .. ``max_alpha``
over ``max_steps`` + 1 frames; the counterfactual is the first frame reaching ``take_at``
(or ``threshold``), else the best (``Explainer.from_path``). With ``compose="residual"`` the
frames are x + G(c, a) - G(c, a_x) (frame 0 is x itself): what the decoder cannot render,
foreign objects included, is kept; ``compose="masked"`` keeps each residual frame's change only
where it is large (``medcf.counterfactual._common.masked_frames``: smoothed |change| >= ``mask_threshold``
of its per-image peak, dilated), the input elsewhere. The attribution map is
cf - x (``difference``); with ``variance_samples`` > 1 a variance map over that many
sampled target attributes is ``info["variance_map"]`` [B, 1, H, W]. ICAM's own decision
(its classifier on the attribute code) is in ``info["icam_prob_original"]`` (the target
probability from a_x) and ``info["icam_prob_counterfactual"]`` (from the re-encoded
counterfactual), to compare with the explained classifier's.

Example:
    >>> from medcf.generators.icam import ICAM, ICAMConfig
    >>> model = ICAM(ICAMConfig(resolution=32, width=4, attr_dim=4)).eval()
    >>> clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
    >>> cf = ICAMExplainer(icam=model, classifier=clf).explain(torch.zeros(2, 1, 32, 32), target=1)
    >>> cf.path.shape[0], cf.info["variance_map"].shape
    (9, torch.Size([2, 1, 32, 32]))
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from medcf.counterfactual._common import check_mask_settings, domain_sides, relaxed_masked_frames
from medcf.counterfactual.base import Explainer, PathConfig
from medcf.errors import MedcfError, ShapeError
from medcf.generators.icam import ICAM
from medcf.types import Counterfactual, Target, reaches

ATTRIBUTE_MODES = ("mean", "reference", "sample")


@dataclass(frozen=True)
class ICAMExplainerConfig(PathConfig):
    compose_modes: ClassVar[tuple[str, ...]] = ("generated", "residual", "masked")

    attribute: str = "mean"             # target attribute: "mean" | "reference" | "sample"
    max_steps: int = 8                  # interpolation frames after the reconstruction (frame 0)
    max_alpha: float = 1.0              # last frame's interpolation weight (> 1 extrapolates)
    variance_samples: int = 8           # sampled target attributes for the variance map (0/1: none)
    seed: int = 0                       # draws of "sample" and the variance map
    compose: str = "generated"          # frames: G(c, a) | "residual": x + G(c, a) - G(c, a_x) | "masked"
    mask_threshold: float = 0.5         # masked: smoothed |change| >= this fraction of its per-image peak
    mask_dilate: int = 2                # masked: dilation radius in pixels
    mask_smooth: int = 2                # masked: box-average radius of |change| before thresholding
    mask_relax: tuple[float, ...] = ()  # masked: looser thresholds, tried in turn for the queries whose
                                        # frames do not cross the decision threshold with the one before

    def __post_init__(self):
        super().__post_init__()
        where = "ICAMExplainerConfig"
        check_mask_settings(where, self.mask_threshold, self.mask_dilate, self.mask_smooth)
        relax = tuple(float(v) for v in self.mask_relax)  # a TOML list or a --set "0.6,0.5" tuple
        if any(not 0.0 < v < w for v, w in zip(relax, (self.mask_threshold, *relax), strict=False)):
            raise ValueError(f"{where}.mask_relax: thresholds must decrease from mask_threshold and stay > 0, "
                             f"got {self.mask_relax!r}")
        object.__setattr__(self, "mask_relax", relax)
        if self.attribute not in ATTRIBUTE_MODES:
            raise ValueError(f"{where}.attribute: expected one of {list(ATTRIBUTE_MODES)}, got {self.attribute!r}")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"{where}.max_steps: must be an integer >= 1, got {self.max_steps!r}")
        if not self.max_alpha > 0:
            raise ValueError(f"{where}.max_alpha: must be > 0, got {self.max_alpha}")
        if self.variance_samples < 0:
            raise ValueError(f"{where}.variance_samples: must be >= 0, got {self.variance_samples}")


class ICAMExplainer(Explainer):
    """Counterfactuals by swapping ICAM's class-relevant attribute code (``--method icam``).

    The target class must be one of ICAM's two domains (matched by class name when both
    the classifier and ICAM know their class names, else by index).
    """

    method = "icam"
    config_class = ICAMExplainerConfig

    def __init__(self, *, icam: ICAM, classifier, config: ICAMExplainerConfig | None = None):
        super().__init__(classifier=classifier, config=config)
        self.icam = icam

    @property
    def generator(self) -> ICAM:  # what explain_runner reads the input shape from
        return self.icam

    def _domains(self, t: Tensor) -> Tensor:
        """[B] classifier class indices -> [B] long ICAM domain rows (0: A, 1: B)."""
        sides = domain_sides(self.classifier, self.icam, t, "ICAM")
        return torch.tensor([0 if s == "a" else 1 for s in sides], dtype=torch.long, device=t.device)

    def _target_attribute(self, rows: Tensor, b: int, reference: Tensor | None,
                          generator: torch.Generator) -> Tensor:
        """[B, A] target attribute codes by ``config.attribute``."""
        m = self.icam
        mode = self.config.attribute
        if mode == "reference":
            if reference is None:
                raise MedcfError("ICAM: attribute='reference' needs reference images of the target class "
                                 "(explain(x, target, reference=images))")
            if reference.ndim != 4 or reference.shape[0] not in (1, b):
                raise ShapeError(f"ICAM reference: expected [1 or {b}, C, H, W], got {tuple(reference.shape)}")
            return m.encode(reference)[1].expand(b, -1)
        mean, std = m.attr_mean[rows], m.attr_std[rows]
        if mode == "mean":
            return mean
        noise = torch.randn(mean.shape, generator=generator).to(mean)
        return mean + std * noise

    @torch.no_grad()
    def explain(self, x: Tensor, target: Target | None = None, *, reference: Tensor | None = None
                ) -> Counterfactual:
        """x [B, C, H, W] -> Counterfactual with path [max_steps + 1, B, C, H, W]."""
        start = time.perf_counter()
        cfg, mcfg = self.config, self.icam.config
        self.check_inputs(x, channels=mcfg.channels, resolution=mcfg.resolution, modules={"icam": self.icam})
        with self.eval_mode(self.icam):
            t, _ = self.targets(x, target)
            rows = self._domains(t)                                             # [B] 0: A, 1: B
            gen = torch.Generator().manual_seed(cfg.seed)
            content, a_x = self.icam.encode(x)                                  # [B, Cc, S, S], [B, A]
            a_t = self._target_attribute(rows, x.shape[0], reference, gen)      # [B, A]
            alphas = torch.linspace(0.0, cfg.max_alpha, cfg.max_steps + 1, device=x.device)
            codes = torch.stack([(1 - al) * a_x + al * a_t for al in alphas])   # [T, B, A]
            path = torch.stack([self.icam.decode(content, z) for z in codes])   # [T, B, C, H, W]
            recon = path[0]                                                     # G(c, a_x)
            if cfg.compose != "generated":                                      # keep what G cannot render
                path = (x + (path - recon)).clamp(-1.0, 1.0)
            used, path_lo = None, None
            if cfg.compose == "masked":                                         # ... and only the large change
                scored = torch.zeros(path.shape[:2], device=x.device)          # [T, B] log-odds of the frames kept

                def reached(index: Tensor, frames: Tensor) -> Tensor:           # [b], [T, b, ...] -> [b]
                    lo = torch.stack([self.log_odds(f, t[index]) for f in frames])
                    scored[:, index] = lo.to(scored.dtype)
                    return reaches(torch.sigmoid(lo.double()), cfg.threshold).any(0)
                path, used = relaxed_masked_frames(x, path, (cfg.mask_threshold, *cfg.mask_relax),
                                                   cfg.mask_dilate, cfg.mask_smooth, reached)
                path_lo = scored if cfg.mask_relax else None                    # scored once, not again below
            info = {"attribute": cfg.attribute, "alpha": alphas.tolist(), "compose": cfg.compose,
                    "domains": [mcfg.domain_name("a"), mcfg.domain_name("b")]}
            if used is not None:
                info["mask_threshold"] = used.tolist()
            cf = self.from_path(x, t, path, path_lo, reference=x, latents=codes, reconstruction=recon,
                                info=info, start_time=start)
            # ICAM's own decision: its classifier on the attribute code, as p(target)
            sign = rows.float() * 2 - 1                                         # +1: target B
            p_x = torch.sigmoid(sign * self.icam.classify(a_x))
            _, a_cf = self.icam.encode(cf.counterfactual)
            p_cf = torch.sigmoid(sign * self.icam.classify(a_cf))
            cf.info["icam_prob_original"] = p_x.tolist()
            cf.info["icam_prob_counterfactual"] = p_cf.tolist()
            cf.info["alpha_taken"] = [float(alphas[i]) for i in cf.info["frame_index"]]
            if cfg.variance_samples > 1:
                draws = []
                for _ in range(cfg.variance_samples):
                    mean, std = self.icam.attr_mean[rows], self.icam.attr_std[rows]
                    z = mean + std * torch.randn(mean.shape, generator=gen).to(mean)
                    draws.append(self.icam.decode(content, z))
                cf.info["variance_map"] = torch.stack(draws).var(0, unbiased=False).mean(1, keepdim=True)
        return cf


def build_icam(classifier_dir: str | os.PathLike, generator_dir: str | os.PathLike, *,
               device: str | torch.device = "cpu", progress: bool = True,
               **settings) -> ICAMExplainer:
    """An ``ICAMExplainer`` from a classifier run and an ``icam`` run (``medcf train icam``).

    ``settings``: ``ICAMExplainerConfig`` fields (``attribute``, ``max_steps``, ``max_alpha``,
    ``variance_samples``, ``threshold``, ``take_at``, ``seed``, ``compose``, ``mask_*``); None keeps
    the default.

    Example:
        >>> e = build_icam("runs/classifier", "runs/icam", attribute="mean")   # doctest: +SKIP
    """
    from medcf.counterfactual.checkpoints import load_method_inputs

    config, classifier, model = load_method_inputs(
        ICAMExplainerConfig, ICAMExplainer.method, settings, classifier_dir, generator_dir,
        kinds=(ICAM.kind,), how="medcf train icam", load=ICAM.load, device=device)
    return ICAMExplainer(icam=model, classifier=classifier, config=config)


__all__ = ["ATTRIBUTE_MODES", "ICAMExplainer", "ICAMExplainerConfig", "build_icam"]
