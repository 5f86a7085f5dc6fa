"""StyleGAN latent probe (Schutte et al., "Using StyleGAN for visual interpretability
of deep learning models on medical images", 2021).

``fit``: sample ``w`` from the mapping of ``z ~ N(0, I)`` (optionally truncated; a
conditional generator gets uniformly drawn classes),
render and classify ``G(w)``, and fit a logistic regression (scikit-learn
``LogisticRegressionCV``, C chosen by stratified cross-validation) from the
standardised ``w`` to the classifier's decision; its accuracy on a held-out share
of the samples is reported. The normal ``β`` of the decision boundary, mapped back
from standardised coordinates (``β / std``) and normalised, is the unit direction
``α`` in W toward a class (binary: ``+α`` toward class 1, ``-α`` toward 0; more
classes: the multinomial coefficients centred over classes).

``explain(x, target)``:

1. invert x into W+: a learned encoder, optionally refined by the projector, or
   the projector alone (``explain_latents(w, target)`` skips this step);
2. walk ``w_λ = w + λ·σ·α`` (only in the selected W+ ``layers`` if given), with λ
   in units of ``σ``, the spread of the fit samples along ``α``; every frame
   ``G(w_λ)`` is classified;
3. the walk shared with Latent Shift (``medcf.counterfactual.walk``): per query,
   stop when the target probability reaches ``stop_probability`` ("reached"), when
   the log-odds stop rising for ``patience`` frames ("no_progress") or at
   ``max_lambda`` ("max_lambda");
4. the counterfactual is the first point past ``threshold`` (or past ``take_at``,
   a higher probability; validity is still judged at ``threshold``), located
   between the two frames around the crossing by bisection; a query that never
   crosses keeps its best frame and ``info["found"]`` is False.

Frames (``compose``): ``"generated"`` (Schutte et al.) shows ``G(w_λ)`` itself, so
whatever the inversion lost (thin wires, text markers) is missing from every
frame; ``"residual"`` adds the generator's change to the input,
``x + G(w_λ) - G(w_0)`` (clipped to [-1, 1]): the frame at λ = 0 is x itself and
only what the walk changes differs from it. The classifier always judges the
frames as shown.

The difference map is ``counterfactual - reconstruction`` where the reconstruction
is the frame at λ = 0 (``G(w_0)``, or x when residual): the inversion error
cancels; ``info["inversion_l1"]`` reports how far ``G(w_0)`` is from the input.

Example:
    >>> probe = LatentProbe(generator=G, classifier=clf, encoder=enc)              # doctest: +SKIP
    >>> probe.fit(5000, generator=torch.Generator().manual_seed(0))                # doctest: +SKIP
    >>> cf = probe.explain(x, target="cardiomegaly")                               # doctest: +SKIP
    >>> probe.save("runs/probe"); LatentProbe.load_probe("runs/probe", generator=G, classifier=clf)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medcf.counterfactual._common import eval_mode
from medcf.counterfactual.base import Explainer
from medcf.counterfactual.walk import WalkConfig, latent_walk
from medcf.errors import CheckpointError, MedcfError, NotFittedError, ShapeError
from medcf.generators.fingerprint import generator_fingerprint
from medcf.generators.stylegan2.loading import latent_shape, map_z
from medcf.io import atomic_write_dir, first_line
from medcf.progress import tqdm  # a live bar on a terminal, plain lines in a log
from medcf.types import Counterfactual, Target, reaches

log = logging.getLogger(__name__)

PROBE_FORMAT = "medcf-latent-probe"
PROBE_JSON, PROBE_TENSORS = "probe.json", "probe.safetensors"


@dataclass(frozen=True)
class LatentProbeConfig(WalkConfig):
    """Latent-probe settings (``threshold``, ``take_at``, ``keep_path``, ``compose``,
    ``stop_probability``, ``patience``, ``min_progress``, ``refine_steps``: see ``WalkConfig``).

    The defaults are the settings the benchmark shows to give meaningful counterfactuals
    (docs/defaults.md): taken at p = 0.99999, residual frames. ``LatentProbeConfig.published()``
    is Schutte et al.'s walk (generated frames, taken where p crosses the threshold).
    """

    take_at: float | None = 0.99999       # where the counterfactual is taken (validity: at threshold)
    compose: str = "residual"             # frames: x + G(w_λ) - G(w_0) ("generated": G(w_λ))
    truncation_psi: float = 1.0           # truncation of the w sampled for fit
    test_fraction: float = 0.2            # held-out share of the fit samples (probe accuracy)
    cv_folds: int = 5                     # cross-validation folds choosing C
    n_cs: int = 10                        # size of the C grid (LogisticRegressionCV Cs)
    max_iter: int = 2000                  # solver iterations
    step_size: float = 0.1                # λ increment per frame, in σ units along α
    max_lambda: float = 10.0              # give up past this λ (σ units)
    layers: tuple[int, ...] | None = None  # W+ layers to move (None: all)

    @classmethod
    def published(cls, **changes) -> LatentProbeConfig:
        """Schutte et al. (2021) as published: the generator's frames, the counterfactual where p
        crosses ``threshold``; ``changes`` override fields."""
        return cls(**{"take_at": None, "compose": "generated", **changes})

    def __post_init__(self):
        super().__post_init__()
        where = "LatentProbeConfig"
        if not 0.0 < self.test_fraction < 1.0 or self.cv_folds < 2 or self.n_cs < 1:
            raise ValueError(f"{where}: test_fraction in (0, 1), cv_folds >= 2, n_cs >= 1 needed, got "
                             f"{self.test_fraction}, {self.cv_folds}, {self.n_cs}")
        if self.max_lambda < self.step_size:
            raise ValueError(f"{where}.max_lambda: must be >= step_size, got {self.max_lambda} < {self.step_size}")
        if self.layers is not None and (len(self.layers) == 0 or min(self.layers) < 0):
            raise ValueError(f"{where}.layers: a non-empty tuple of W+ layer indices or None, got {self.layers}")


@dataclass
class ProbeFit:
    """The fitted probe: one unit direction in W per class, plus its provenance."""

    directions: Tensor       # [K, w_dim] unit direction toward each class (NaN rows: class never seen)
    sigma: Tensor            # [K] std of the fit samples' w along each direction
    mean: Tensor             # [w_dim] standardisation mean
    std: Tensor              # [w_dim] standardisation std
    coef: Tensor             # [R, w_dim] logistic-regression coefficients (standardised space)
    intercept: Tensor        # [R]
    classes: list[int]       # the decisions present in the fit samples (sklearn classes_)
    accuracy: float          # held-out accuracy of the probe on the classifier's decisions
    train_accuracy: float
    C: float                 # chosen inverse regularisation strength
    n_samples: int
    truncation_psi: float
    generator_fingerprint: str = ""

    def tensors(self) -> dict[str, Tensor]:
        return {k: getattr(self, k).contiguous() for k in ("directions", "sigma", "mean", "std", "coef",
                                                           "intercept")}

    def header(self) -> dict[str, Any]:
        return {"format": PROBE_FORMAT, "version": 1, "classes": self.classes, "accuracy": self.accuracy,
                "train_accuracy": self.train_accuracy, "C": self.C, "n_samples": self.n_samples,
                "truncation_psi": self.truncation_psi, "generator_fingerprint": self.generator_fingerprint}


def _device(module) -> torch.device:
    p = next(module.parameters(), None) if isinstance(module, nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


class LatentProbe(Explainer):
    """Latent-probe explainer bound to a StyleGAN2 generator and a classifier.

    ``generator`` needs ``mapping(z, c, truncation_psi=...)``, ``decode(w)``, ``z_dim``,
    ``num_ws``, ``w_dim`` (the in-house StyleGAN2 ``Generator``); ``encoder`` (a
    ``StyleGANEncoder``) and/or ``projector`` (a ``Projector``) invert images.

    Example:
        >>> probe = LatentProbe(generator=G, classifier=clf, encoder=enc).fit(5000)   # doctest: +SKIP
        >>> cf = probe.explain(x, target=1); cf.info["probe_accuracy"]                # doctest: +SKIP
    """

    method = "latent-probe"
    config_class = LatentProbeConfig

    def __init__(self, *, generator, classifier: nn.Module, encoder=None, projector=None,
                 config: LatentProbeConfig | None = None):
        for name in ("mapping", "decode"):
            if not callable(getattr(generator, name, None)):
                raise TypeError(f"LatentProbe: generator must have a callable {name}() (a StyleGAN2 Generator)")
        if encoder is not None and not callable(getattr(encoder, "encode", None)):
            raise TypeError("LatentProbe: encoder must have a callable encode()")
        if projector is not None and not callable(getattr(projector, "project", None)):
            raise TypeError("LatentProbe: projector must have a callable project()")
        super().__init__(classifier=classifier, config=config)
        self.generator = generator
        self.encoder, self.projector = encoder, projector
        self.num_ws, self.w_dim = latent_shape(generator)
        if self.config.layers is not None and max(self.config.layers) >= self.num_ws:
            raise ValueError(f"LatentProbeConfig.layers: indices must be < num_ws = {self.num_ws}, "
                             f"got {self.config.layers}")
        self.probe: ProbeFit | None = None

    # -- the classifier's view ---------------------------------------------------------

    def logits(self, images: Tensor) -> Tensor:
        """[b, C, H, W] -> float logits [b, K] of a single-decision classifier."""
        if getattr(self.classifier, "head", None) in ("multilabel", "regression"):
            raise MedcfError(f"LatentProbe: a {self.classifier.head} classifier has no single decision to probe")
        return super().logits(images)

    @staticmethod
    def _decisions(logits: Tensor) -> Tensor:
        """[b, K] logits -> [b] decided class (the one decision rule for a single sigmoid logit)."""
        return reaches(torch.sigmoid(logits[:, 0]), 0.5).long() if logits.shape[1] == 1 else logits.argmax(1)

    # -- fit -----------------------------------------------------------------------------

    def fit(self, n_samples: int = 5000, *, generator: torch.Generator | None = None,
            batch_size: int = 64, progress: bool = True) -> LatentProbe:
        """Sample ``n_samples`` latents, classify their images, fit the probe; returns self.

        ``generator`` draws z (default: a fresh ``torch.Generator`` seeded 0).
        """
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        cfg = self.config
        if n_samples < 4 * cfg.cv_folds:
            raise ValueError(f"LatentProbe.fit: n_samples must be >= {4 * cfg.cv_folds}, got {n_samples}")
        t0 = time.perf_counter()
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        G = self.generator
        device = _device(G)
        ws, ys, k = [], [], 2
        with eval_mode(G, self.classifier), torch.no_grad():
            for i in tqdm(range(0, n_samples, batch_size), desc="probe samples", disable=not progress,
                          leave=False):
                b = min(batch_size, n_samples - i)
                z = torch.randn(b, G.z_dim, generator=generator, device=generator.device).to(device)
                w = map_z(G, z, truncation_psi=cfg.truncation_psi, rng=generator)[:, 0]  # [b, w_dim]
                logits = self.logits(G.decode(w))
                k = max(2, logits.shape[1])
                ws.append(w.double().cpu())
                ys.append(self._decisions(logits).cpu())
        W, y = torch.cat(ws).numpy(), torch.cat(ys).numpy()
        present = np.unique(y)
        if present.size < 2:
            raise MedcfError(f"LatentProbe.fit: all {n_samples} generated images were classified as class "
                             f"{int(present[0])}; a probe needs both decisions (more samples, less truncation)")
        counts = np.bincount(y, minlength=k)
        if counts[present].min() < cfg.cv_folds:
            raise MedcfError(f"LatentProbe.fit: a decision occurs only {counts[present].min()} times in "
                             f"{n_samples} samples; increase n_samples")

        # held-out split (stratified, seeded from the torch generator)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        rng = np.random.default_rng(seed)
        test = np.zeros(len(y), dtype=bool)
        for c in present:
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            test[idx[:max(1, round(cfg.test_fraction * idx.size))]] = True
        mean, std = W[~test].mean(0), W[~test].std(0)
        std = np.where(std > 1e-12, std, 1.0)
        X = (W - mean) / std
        lr = LogisticRegressionCV(Cs=cfg.n_cs, cv=StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=seed),
                                  max_iter=cfg.max_iter, scoring="accuracy")
        with warnings.catch_warnings():  # scikit-learn 1.8 announces API changes we do not depend on
            warnings.simplefilter("ignore", FutureWarning)
            lr.fit(X[~test], y[~test])
        acc, train_acc = float(lr.score(X[test], y[test])), float(lr.score(X[~test], y[~test]))

        # unit directions in W: β / std (the gradient of the decision function w.r.t. w)
        coef = lr.coef_  # [1, d] binary, [len(present), d] multinomial
        dirs = np.full((k, W.shape[1]), np.nan)
        if coef.shape[0] == 1:
            a = coef[0] / std
            a /= np.linalg.norm(a)
            dirs[lr.classes_[1]], dirs[lr.classes_[0]] = a, -a
        else:
            centred = coef - coef.mean(0, keepdims=True)
            for row, c in zip(centred, lr.classes_, strict=True):
                a = row / std
                dirs[c] = a / np.linalg.norm(a)
        sigma = np.array([(W[~test] @ d).std() if np.isfinite(d).all() else np.nan for d in dirs])
        C = float(np.atleast_1d(lr.C_)[0])
        self.probe = ProbeFit(
            directions=torch.from_numpy(dirs).float(), sigma=torch.from_numpy(sigma).float(),
            mean=torch.from_numpy(mean).float(), std=torch.from_numpy(std).float(),
            coef=torch.from_numpy(coef).float(), intercept=torch.from_numpy(np.atleast_1d(lr.intercept_)).float(),
            classes=[int(c) for c in lr.classes_], accuracy=acc, train_accuracy=train_acc, C=C,
            n_samples=n_samples, truncation_psi=cfg.truncation_psi,
            generator_fingerprint=generator_fingerprint(G) if isinstance(G, nn.Module) else "")
        log.info("latent probe: held-out accuracy %.3f (train %.3f, C=%.3g) from %d samples in %.1f s",
                 acc, train_acc, C, n_samples, time.perf_counter() - t0)
        return self

    # -- save / load ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted probe as ``probe.safetensors`` + ``probe.json`` into directory ``path``."""
        from safetensors.torch import save_file

        probe = self._fitted()

        def fill(tmp: Path) -> None:
            save_file(probe.tensors(), str(tmp / PROBE_TENSORS), metadata={"format": PROBE_FORMAT})
            (tmp / PROBE_JSON).write_text(json.dumps(
                {**probe.header(), "settings": dataclasses.asdict(self.config)}, indent=2) + "\n")

        return atomic_write_dir(path, fill)

    @classmethod
    def load_probe(cls, path: str | os.PathLike, *, generator, classifier: nn.Module, encoder=None,
                   projector=None, config: LatentProbeConfig | None = None) -> LatentProbe:
        """An explainer with the probe saved in ``path`` (checked against ``generator``)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / PROBE_JSON).is_file():
            raise CheckpointError(f"{path}: no {PROBE_JSON} (not a saved latent probe)")
        try:
            header = json.loads((path / PROBE_JSON).read_text())
            tensors = load_file(str(path / PROBE_TENSORS))
        except (OSError, ValueError, SafetensorError) as e:
            raise CheckpointError(f"{path}: unreadable latent probe ({first_line(e)})") from e
        if not isinstance(header, dict) or header.get("format") != PROBE_FORMAT:
            raise CheckpointError(f"{path / PROBE_JSON}: not a medcf latent probe")
        explainer = cls(generator=generator, classifier=classifier, encoder=encoder, projector=projector,
                        config=config)
        try:
            probe = ProbeFit(**{k: tensors[k] for k in ("directions", "sigma", "mean", "std", "coef",
                                                         "intercept")},
                             classes=list(header["classes"]), accuracy=float(header["accuracy"]),
                             train_accuracy=float(header["train_accuracy"]), C=float(header["C"]),
                             n_samples=int(header["n_samples"]), truncation_psi=float(header["truncation_psi"]),
                             generator_fingerprint=str(header.get("generator_fingerprint", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: incomplete latent probe ({first_line(e)})") from e
        if probe.directions.ndim != 2 or probe.directions.shape[1] != explainer.w_dim:
            raise CheckpointError(f"{path}: probe directions {tuple(probe.directions.shape)} do not fit "
                                  f"w_dim={explainer.w_dim}")
        if probe.generator_fingerprint and isinstance(generator, nn.Module):
            mine = generator_fingerprint(generator)
            if mine != probe.generator_fingerprint:
                raise CheckpointError(f"{path}: probe was fitted for generator {probe.generator_fingerprint}, "
                                      f"not this one ({mine})")
        explainer.probe = probe
        return explainer

    def _fitted(self) -> ProbeFit:
        if self.probe is None:
            raise NotFittedError("LatentProbe: call fit(n_samples) or LatentProbe.load_probe(dir) before "
                                 "explain/save")
        return self.probe

    # -- explanation ---------------------------------------------------------------------

    def invert(self, x: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, str]:
        """(W+ latents [B, num_ws, w_dim], how) of images ``x``: encoder, then projector refinement."""
        w, how = None, []
        if self.encoder is not None:
            with eval_mode(self.encoder), torch.no_grad():
                w = self.encoder.encode(x)
            how.append("encoder")
        if self.projector is not None:
            w = self.projector.project(x, init=w, generator=generator).latents
            how.append("projector")
        if w is None:
            raise MedcfError("LatentProbe.explain: needs an encoder or a projector to invert images "
                             "(or call explain_latents with W latents)")
        return self._as_wplus(w), "+".join(how)

    def _as_wplus(self, w: Tensor) -> Tensor:
        if w.ndim == 2 and w.shape[1] == self.w_dim:
            return w.unsqueeze(1).expand(-1, self.num_ws, -1).clone()
        if w.ndim != 3 or w.shape[1:] != (self.num_ws, self.w_dim):
            raise ShapeError(f"latents: expected [B, {self.w_dim}] or [B, {self.num_ws}, {self.w_dim}], "
                             f"got {tuple(w.shape)}")
        return w

    def explain(self, x: Tensor, target: Target | None = None, *,
                generator: torch.Generator | None = None) -> Counterfactual:
        """Counterfactuals for images ``x`` [B, C, H, W] toward ``target`` (None: flip a binary decision)."""
        self._fitted()
        start = time.perf_counter()
        G = self.generator
        self.check_inputs(x, channels=getattr(G, "img_channels", None), resolution=getattr(G, "img_resolution", None),
                          modules={"generator": G}, expected_by="generator")
        x = x.detach()
        w0, how = self.invert(x, generator=generator)
        return self._explain(x, w0.detach(), target, inversion=how, start=start)

    def explain_latents(self, w: Tensor, target: Target | None = None) -> Counterfactual:
        """Counterfactuals for generator latents ``w`` [B, w_dim] or [B, num_ws, w_dim]; the original is G(w)."""
        self._fitted()
        start = time.perf_counter()
        w0 = self._as_wplus(w.detach())
        with eval_mode(self.generator), torch.no_grad():
            x = self.generator.decode(w0)
        return self._explain(x, w0, target, inversion="latents", start=start)

    def _explain(self, x: Tensor, w0: Tensor, target: Target | None, *, inversion: str,
                 start: float) -> Counterfactual:
        cfg, probe = self.config, self._fitted()
        with eval_mode(self.generator, self.classifier), torch.no_grad():
            t, _ = self.targets(x, target)
            dirs = probe.directions.to(w0.device)[t.cpu()]  # [B, w_dim]
            if not torch.isfinite(dirs).all():
                missing = sorted(set(t[~torch.isfinite(dirs).all(1)].tolist()))
                raise MedcfError(f"LatentProbe: class(es) {missing} never occurred in the probe's fit samples; "
                                 "no direction toward them")
            step = probe.sigma.to(w0.device)[t.cpu()].unsqueeze(1) * dirs  # [B, w_dim]: one σ along α
            mask = torch.zeros(self.num_ws, device=w0.device)
            mask[list(cfg.layers) if cfg.layers is not None else slice(None)] = 1.0
            delta = step.unsqueeze(1) * mask.view(1, -1, 1)  # [B, num_ws, w_dim] per unit λ
            s_x = self.log_odds(x, t)
            g0 = self.generator.decode(w0)  # [B, C, H, W] the inversion's image
            offset = x - g0 if cfg.compose == "residual" else None
            out = self._walk(w0, delta, t, offset)
        b = x.shape[0]
        difference = (out["counterfactual"] - out["reconstruction"]).mean(1, keepdim=True)
        sig = probe.sigma[t.cpu()]
        info = {
            "method": self.method,
            "settings": dataclasses.asdict(cfg),
            "inversion": inversion,
            "inversion_l1": (g0 - x).abs().flatten(1).mean(1).tolist(),
            "probe_accuracy": probe.accuracy,
            "probe_train_accuracy": probe.train_accuracy,
            "probe_C": probe.C,
            "probe_samples": probe.n_samples,
            "layers": list(cfg.layers) if cfg.layers is not None else None,
            "found": out["found"].tolist(),
            "lambda": (out["lam"].cpu() * sig).tolist(),
            "lambda_sd": out["lam"].tolist(),
            "latent_distance": (out["w_cf"] - w0).flatten(1).norm(dim=1).tolist(),
            "n_frames": out["n_frames"].tolist(),
            "stop_reason": out["stop_reason"],
            "prob_reconstruction": out["prob_rec"].tolist(),
            "seconds": time.perf_counter() - start,
        }
        names = getattr(self.classifier, "class_names", None)
        if names:
            info["class_names"] = list(names)
        log.info("latent probe: %d/%d found in %.2fs", int(out["found"].sum()), b, info["seconds"])
        return Counterfactual(
            original=x, counterfactual=out["counterfactual"], difference=difference, target=t,
            prob_original=torch.sigmoid(s_x), prob_counterfactual=out["prob_cf"],
            reconstruction=out["reconstruction"], path=out["path"], path_probs=out["path_probs"],
            latents=out["w_cf"], threshold=cfg.threshold, info=info)

    def _frames(self, w0: Tensor, delta: Tensor, lam: Tensor, t: Tensor,
                offset: Tensor | None) -> tuple[Tensor, Tensor]:
        """Frames and their log-odds at w0 + lam·delta; lam [b] in σ units, offset x - G(w0) or None."""
        images = self.generator.decode(w0 + lam.view(-1, 1, 1) * delta)  # [b, C, H, W]
        if offset is not None:
            images = (images + offset).clamp(-1.0, 1.0)
        return images, self.log_odds(images, t)

    def _walk(self, w0: Tensor, delta: Tensor, t: Tensor, offset: Tensor | None) -> dict:
        """The shared latent walk along λ (the state: λ [B] in σ units)."""
        cfg = self.config
        zero = torch.zeros(w0.shape[0], device=w0.device)

        def part(i):  # the offset of queries i (None when frames are pure generator images)
            return None if offset is None else offset[i]

        def render(idx: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
            return self._frames(w0[idx], delta[idx], lam, t[idx], part(idx))

        def step(idx: Tensor, lam: Tensor):
            lam_new = lam + cfg.step_size
            return (lam_new, *render(idx, lam_new))

        rec, s_rec = self._frames(w0, delta, zero, t, offset)
        res = latent_walk(step, render, start=zero, frame0=rec, s0=s_rec, level=cfg.take_logit,
                          stop_at=cfg.stop_logit, step_size=cfg.step_size,
                          max_steps=int(math.floor(cfg.max_lambda / cfg.step_size + 1e-9)),
                          patience=cfg.patience, min_progress=cfg.min_progress, refine_steps=cfg.refine_steps,
                          keep_path=cfg.keep_path, max_reason="max_lambda")
        return {
            "reconstruction": rec, "counterfactual": res.counterfactual,
            "w_cf": w0 + res.state.view(-1, 1, 1) * delta,
            "prob_rec": torch.sigmoid(s_rec), "prob_cf": torch.sigmoid(res.log_odds), "found": res.found,
            "lam": res.state, "n_frames": res.n_frames, "stop_reason": res.stop_reason,
            "path": res.path,
            "path_probs": torch.sigmoid(res.path_log_odds) if res.path_log_odds is not None else None,
        }


def build_latent_probe(generator_dir, classifier, encoder_dir=None, probe_dir=None, *,
                       fit_samples: int = 5000, seed: int = 0, config: LatentProbeConfig | None = None,
                       project_steps: int | None = None, device: str | torch.device = "cpu",
                       batch_size: int = 64, progress: bool = True) -> LatentProbe:
    """A fitted ``LatentProbe`` from saved parts (for ``medcf explain/evaluate --method latent-probe``).

    ``classifier``: a module or a classifier checkpoint directory. ``encoder_dir``: a
    trained ``stylegan2-encoder`` (checked against the generator). ``project_steps``:
    projector refinement steps (default: 0 with an encoder, 300 without one).
    ``probe_dir``: load the probe from there when it holds one, else fit
    ``fit_samples`` latents (seeded by ``seed``) and save it there.

    Example:
        >>> probe = build_latent_probe("runs/stylegan2", "runs/classifier", "runs/encoder",
        ...                            probe_dir="runs/probe", fit_samples=5000)       # doctest: +SKIP
    """
    from medcf.encoders.projector import Projector, ProjectorConfig
    from medcf.encoders.stylegan_encoder import load_stylegan_encoder
    from medcf.generators.stylegan2.loading import load_stylegan2_generator

    G = load_stylegan2_generator(generator_dir, device=device)
    if isinstance(classifier, (str, os.PathLike)):
        from medcf.classifiers import load_classifier

        classifier = load_classifier(classifier, device=device)
    encoder = load_stylegan_encoder(encoder_dir, generator=G, device=device) if encoder_dir else None
    steps = project_steps if project_steps is not None else (0 if encoder is not None else 300)
    projector = Projector(G, config=ProjectorConfig(steps=steps, progress=progress)) if steps > 0 else None
    parts = dict(generator=G, classifier=classifier, encoder=encoder, projector=projector, config=config)
    if probe_dir is not None and (Path(probe_dir) / PROBE_JSON).is_file():
        return LatentProbe.load_probe(probe_dir, **parts)
    probe = LatentProbe(**parts).fit(fit_samples, generator=torch.Generator().manual_seed(seed),
                                     batch_size=batch_size, progress=progress)
    if probe_dir is not None:
        probe.save(probe_dir)
    return probe


def build(classifier_dir, generator_dir, *, device: str | torch.device = "cpu", progress: bool = True,
          encoder: str | os.PathLike | None = None, probe_dir: str | os.PathLike | None = None,
          fit_samples: int | None = None, seed: int = 0, project_steps: int | None = None,
          max_steps: int | None = None, **settings) -> LatentProbe:
    """A fitted latent-probe explainer from a classifier run and a StyleGAN2 run (the registry's builder).

    ``settings`` are ``LatentProbeConfig`` fields (``take_at``, ``compose``, ``step_size``, ...;
    None keeps the default). Extras: ``encoder`` (a trained StyleGAN2 encoder run),
    ``probe_dir`` (load the probe from there, else fit it and save it there),
    ``fit_samples``/``seed`` (the fit), ``project_steps`` (projector refinement; default 0
    with an encoder, 300 without), ``max_steps`` (frames searched: ``max_lambda = max_steps *
    step_size``).

    Example:
        >>> lp = build("runs/classifier", "runs/stylegan2", encoder="runs/encoder",
        ...            probe_dir="runs/probe", fit_samples=5000)                   # doctest: +SKIP
    """
    from medcf.counterfactual.checkpoints import (
        check_pair,
        config_from_options,
        expect_kind,
        load_explained_classifier,
        setting_error,
    )
    from medcf.generators.stylegan2.loading import GENERATOR_KIND

    method = LatentProbe.method
    if max_steps is not None:
        if max_steps < 1:
            raise setting_error("max_steps", f"must be >= 1, got {max_steps}")
        step = settings.get("step_size") or LatentProbeConfig.step_size
        settings = {**settings, "max_lambda": max_steps * step}
    if project_steps is not None and project_steps < 0:
        raise setting_error("project_steps", f"must be >= 0, got {project_steps}")
    config = config_from_options(LatentProbeConfig, method, settings)
    classifier = load_explained_classifier(classifier_dir, device=device)
    header = expect_kind(generator_dir, (GENERATOR_KIND,), method, "medcf train stylegan2")
    if encoder is not None:
        try:
            expect_kind(encoder, ("stylegan2-encoder",), method, "medcf train encoder")
        except MedcfError as e:
            raise setting_error("encoder", str(e), type(e)) from None
    gcfg = header.get("config") or {}
    shape = SimpleNamespace(channels=gcfg.get("img_channels"), resolution=gcfg.get("img_resolution"))
    check_pair(classifier, shape, classifier_dir, generator_dir)  # without loading the weights twice
    kwargs = {"fit_samples": fit_samples} if fit_samples is not None else {}
    return build_latent_probe(header["path"], classifier, encoder, probe_dir, seed=seed, device=device,
                              config=config, project_steps=project_steps, progress=progress, **kwargs)
