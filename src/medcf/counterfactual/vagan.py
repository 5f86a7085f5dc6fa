"""VA-GAN explanations (Baumgartner et al., CVPR 2018): the counterfactual x + M(x), the map M(x).

VA-GAN explains the DATA's class difference (source -> target class, learned by
``medcf train vagan``), not a given classifier: M never sees the classifier. It is
still scored with the user's classifier and the oracle so that its rows compare with
the other methods'. The path for the GIF scales the map, frames ``clamp(x + a·M(x))``
for ``a`` = 0, 1/frames, ..., 1; the counterfactual is taken on it by the shared rule
(``take_at``; the last frame is the full ``x + M(x)``). The difference map is always
the full VA-GAN map ``M(x)`` (mean over channels), whatever frame is taken.

Queries whose target is not the map's target class still get ``x + M(x)`` (the only
direction the map knows); ``info["map_target"]`` names that class and
``info["target_is_map_target"]`` flags each query.

Example:
    >>> va = VAGAN(map_generator=load_vagan_map("runs/vagan"), classifier=clf)   # doctest: +SKIP
    >>> cf = va.explain(x, target="normal")                                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import torch
from torch import nn

from medcf.counterfactual.base import Explainer, PathConfig
from medcf.errors import CheckpointError, MedcfError
from medcf.types import Counterfactual, Target


@dataclass(frozen=True)
class VAGANExplainConfig(PathConfig):
    frames: int = 8                 # frames after the input along x + a·M(x), a in (0, 1]

    def __post_init__(self):
        super().__post_init__()
        if self.frames < 1:
            raise ValueError(f"VAGANExplainConfig.frames: must be >= 1, got {self.frames}")


class VAGAN(Explainer):
    """VA-GAN's map generator bound to the classifier that scores it."""

    method = "vagan"
    config_class = VAGANExplainConfig

    def __init__(self, *, map_generator: nn.Module, classifier: nn.Module,
                 config: VAGANExplainConfig | None = None):
        super().__init__(classifier=classifier, config=config)
        self.generator = map_generator  # "generator": where explain_runner looks for the image shape

    def explain(self, x, target: Target | None = None) -> Counterfactual:
        """[B, C, H, W] -> Counterfactual with path x + a·M(x) and difference map M(x)."""
        start = time.perf_counter()
        cfg, M = self.config, self.generator
        mcfg = M.config
        self.check_inputs(x, channels=mcfg.channels, resolution=mcfg.resolution, modules={"map generator": M})
        x = x.detach()
        t, _ = self.targets(x, target)
        with self.eval_mode(M), torch.no_grad():
            m = M(x)                                                        # [B, C, H, W]
            a = torch.linspace(0.0, 1.0, cfg.frames + 1, device=x.device)
            path = (x.unsqueeze(0) + a.view(-1, 1, 1, 1, 1) * m.unsqueeze(0)).clamp(-1, 1)  # [T, B, C, H, W]
        names = getattr(self.classifier, "class_names", None)
        map_target = mcfg.target_class
        if names and map_target in list(names):
            is_map_target = (t == list(names).index(map_target)).tolist()
        else:
            is_map_target = [None] * x.shape[0]
        info = {"method": self.method, "settings": dataclasses.asdict(cfg), "map_source": mcfg.source_class,
                "map_target": map_target, "target_is_map_target": is_map_target,
                "map": "M(x): the full VA-GAN map, whatever frame is taken"}
        cf = self.from_path(x, t, path, reference=x, info=info, start_time=start)
        return dataclasses.replace(cf, difference=m.mean(1, keepdim=True))


def build_vagan(classifier_dir: str | os.PathLike, generator_dir: str | os.PathLike, *,
                device: str | torch.device = "cpu", progress: bool = True, **opts) -> VAGAN:
    """A ``VAGAN`` explainer from a classifier run and a ``vagan-map`` run (``medcf train vagan``).

    ``opts``: ``VAGANExplainConfig`` fields (``threshold``, ``take_at``, ``frames``); ``max_steps``
    is accepted as ``frames``. None keeps the default.

    Example:
        >>> va = build_vagan("runs/classifier", "runs/vagan")      # doctest: +SKIP
    """
    from medcf.explain_runner import _check_pair, load_explained_classifier
    from medcf.generators.vagan import VAGANMap
    from medcf.io import read_header

    if opts.get("max_steps") is not None:
        opts.setdefault("frames", opts["max_steps"])
    opts.pop("max_steps", None)
    fields = {f.name for f in dataclasses.fields(VAGANExplainConfig)}
    unknown = sorted(k for k in opts if k not in fields)
    if unknown:
        raise MedcfError(f"vagan: unknown option(s) {unknown}; known: {sorted(fields)}")
    header = read_header(generator_dir)
    if header["kind"] != VAGANMap.kind:
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint; vagan needs a "
                              f"'{VAGANMap.kind}' (medcf train vagan)")
    classifier = load_explained_classifier(classifier_dir, device=device)
    M = VAGANMap.load(header["path"], device=device)
    _check_pair(classifier, M, classifier_dir, generator_dir)
    try:
        config = VAGANExplainConfig(**{k: v for k, v in opts.items() if v is not None})
    except ValueError as e:
        raise MedcfError(f"vagan: {e}") from None
    return VAGAN(map_generator=M, classifier=classifier, config=config)


build = build_vagan  # the registry's name for it


__all__ = ["VAGAN", "VAGANExplainConfig", "build", "build_vagan"]
