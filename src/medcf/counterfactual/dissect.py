"""DISSECT (Ghandeharioun et al., "Disentangled simultaneous explanations via concept
traversals", ICLR 2022): progressive exaggeration with K concept channels.

For each concept k the generator ``G(x, c, k)`` gives its own trajectory over the
posterior bins (as in ``Progressive``); a disentangler trained with the generator pushes
the K trajectories to differ. ``explain`` returns all K: ``cf.concept_paths``
[K, T, B, C, H, W] and ``cf.concept_probs`` [K, T, B], with per-concept crossing and
monotonicity (along the generated frames G(x, c, k), as ``Progressive``) in
``info["concepts"]``. The main counterfactual (``cf.counterfactual``, ``cf.path``) follows ``config.concept`` or, when it is None, per query the concept that
reaches ``take_at`` in the fewest bins (ties: the higher final probability).

Example:
    >>> from medcf.generators.progressive import load_progressive
    >>> ex = Dissect(generator=load_progressive("runs/dissect"), classifier=clf)   # doctest: +SKIP
    >>> cf = ex.explain(x, target=1); cf.concept_paths.shape                       # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from medcf.counterfactual.base import gather_frames, monotone_fraction, take_along_path
from medcf.counterfactual.progressive import Progressive, ProgressiveConfig, _build
from medcf.errors import MedcfError
from medcf.types import Counterfactual, Target


@dataclass(frozen=True)
class DissectConfig(ProgressiveConfig):
    concept: int | None = None            # follow this concept; None: per query the earliest to cross


class Dissect(Progressive):
    """DISSECT explainer: one trajectory per concept of a ``ProgressiveGenerator`` with K > 1."""

    method = "dissect"
    config_class = DissectConfig

    def __init__(self, *, generator, classifier, config: DissectConfig | None = None, force: bool = False):
        config = config if config is not None else DissectConfig()
        concept = config.concept
        # Progressive checks config.concept; give it a valid one and keep ours
        super().__init__(generator=generator, classifier=classifier, force=force,
                         config=config if concept is not None else _with_concept0(config))
        self.config = config

    def explain(self, x: Tensor, target: Target | None = None) -> Counterfactual:
        """K trajectories for ``x`` [B, C, H, W] toward ``target``; see the module docstring."""
        start = time.perf_counter()
        gcfg = self.generator.config
        self.check_inputs(x, channels=gcfg.channels, resolution=gcfg.resolution,
                          modules={"generator": self.generator})
        with self.eval_mode(self.generator):
            t, _ = self.targets(x, target)
            paths, logs = zip(*(self._path(x, t, k) for k in range(gcfg.concepts)), strict=True)
        paths_t, logs_t = torch.stack(paths), torch.stack(logs)         # [K, T, B, ...], [K, T, B]
        per = []
        for k in range(gcfg.concepts):
            choice = take_along_path(logs_t[k], self.config.threshold, self.config.take_at)
            per.append({"found": choice.found.tolist(), "frame_index": choice.index.tolist(),
                        "prob": torch.sigmoid(gather_frames(logs_t[k], choice.index)).tolist(),
                        "monotone": monotone_fraction(torch.sigmoid(logs_t[k, 1:gcfg.bins + 1])).tolist()})
        if self.config.concept is not None:
            chosen = torch.full((x.shape[0],), self.config.concept, dtype=torch.long)
        else:
            found = torch.tensor([p["found"] for p in per])              # [K, B]
            index = torch.tensor([p["frame_index"] for p in per]).float()
            final = torch.sigmoid(logs_t[:, -1]).cpu()                   # [K, B]
            cost = torch.where(found, index, float("inf")) - 1e-3 * final
            cost = torch.where(found.any(0, keepdim=True), cost, -final)  # none crossed: highest final prob
            chosen = cost.argmin(0)                                      # [B]
        b_idx = torch.arange(x.shape[0])
        path = paths_t[chosen.to(paths_t.device), :, b_idx].transpose(0, 1)  # [T, B, ...]
        s = logs_t[chosen.to(logs_t.device), :, b_idx].transpose(0, 1)       # [T, B]
        cf = self.from_path(x, t, path, s, info={"concept": chosen.tolist(), "concepts": per},
                            start_time=start)
        p = torch.sigmoid(s[:gcfg.bins + 1])                             # [bins + 1, B]: frame 0 is x
        cf.info["monotone"] = monotone_fraction(p[1:]).tolist()          # along G(x, c, k), as Progressive
        cf.info["monotone_from_query"] = monotone_fraction(p).tolist()
        keep = self.config.keep_path
        return _with_concepts(cf, paths_t if keep else None, torch.sigmoid(logs_t) if keep else None)


def _with_concept0(config: DissectConfig) -> DissectConfig:
    import dataclasses

    return dataclasses.replace(config, concept=0)


def _with_concepts(cf: Counterfactual, paths: Tensor | None, probs: Tensor | None) -> Counterfactual:
    import dataclasses

    return dataclasses.replace(cf, concept_paths=paths, concept_probs=probs)


def build(classifier_dir: str | os.PathLike, generator_dir: str | os.PathLike, *, device="cpu",
          progress: bool = True, force: bool = False, **options) -> Dissect:
    """A ``Dissect`` explainer from a classifier run and a ``medcf train dissect`` run.

    Example:
        >>> ex = build("runs/demo/classifier", "runs/dissect")   # doctest: +SKIP
    """
    from medcf.io import read_header

    concepts = (read_header(generator_dir).get("config") or {}).get("concepts", 1)
    if concepts < 2:
        raise MedcfError(f"{generator_dir}: a generator with {concepts} concept; --method dissect needs one "
                         "trained with --concepts K >= 2 (use --method progressive for this one)")
    return _build(Dissect, classifier_dir, generator_dir, device=device, force=force, **options)
