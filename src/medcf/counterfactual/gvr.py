"""Generative Visual Rationales (Seah et al., Radiology 2019): optimise a GAN latent toward the target.

For an image x, ``z0 = E(x)`` (the encoder that inverts the generator G). Then z is
optimised with Adam on, per query,

    -s(frame(z))  +  latent_weight · mean((z - z0)²)  +  image_weight · mean|G(z) - G(z0)|

where s is the explained classifier's log-odds of the target class and ``frame(z)`` is
what the classifier judges: ``G(z)`` (``compose="generated"``) or ``x + G(z) - G(z0)``
(``compose="residual"``: what the generator cannot render is kept). A query stops at
the first step whose frame reaches ``take_at`` (or the threshold); its last step is
then bisected (``refine_steps``) so that the counterfactual lies just past the
crossing rather than a whole Adam step beyond it. The frames of the optimisation
path make the GIF; the rationale map is ``G(z*) - G(z0)`` (the difference map).

Generator-agnostic: G is anything with ``decode(z)`` and E anything with
``encode(x)``: the DCGAN + ``gan-encoder`` of ``medcf train gan|gan-encoder``, or the
in-house StyleGAN2 + its encoder (``space="w+"``: the encoder's W+ latents;
``space="w"``: their mean over layers, one w broadcast to every layer).

Example:
    >>> gvr = GVR(generator=G, encoder=E, classifier=clf, config=GVRConfig(max_steps=100))  # doctest: +SKIP
    >>> cf = gvr.explain(x, target=0)                                                       # doctest: +SKIP
    >>> cf.difference.shape                       # [B, 1, H, W]: G(z*) - G(z0)             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from medcf.counterfactual.base import Explainer, PathConfig, refine_crossing
from medcf.errors import CheckpointError, MedcfError
from medcf.types import Counterfactual, Target

SPACES = ("native", "w+", "w")


@dataclass(frozen=True)
class GVRConfig(PathConfig):
    step_size: float = 0.05        # Adam learning rate on z
    max_steps: int = 200           # optimisation steps per query (the path has <= max_steps + 1 frames)
    latent_weight: float = 0.1     # weight of mean((z - z0)^2)
    image_weight: float = 1.0      # weight of mean|G(z) - G(z0)|
    compose: str = "generated"     # "generated" | "residual" (x + G(z) - G(z0))
    space: str = "native"          # "native": the encoder's latent as is (z; W+ for StyleGAN2) | "w+" | "w"
    refine_steps: int = 8          # bisection steps on the crossing Adam step (0: off)

    def __post_init__(self):
        super().__post_init__()
        if self.step_size <= 0 or self.max_steps < 1 or self.refine_steps < 0:
            raise ValueError(f"GVRConfig: step_size > 0, max_steps >= 1 and refine_steps >= 0 needed, got "
                             f"{self.step_size}, {self.max_steps}, {self.refine_steps}")
        if self.latent_weight < 0 or self.image_weight < 0:
            raise ValueError(f"GVRConfig: latent_weight and image_weight must be >= 0, got "
                             f"{self.latent_weight}, {self.image_weight}")
        if self.space not in SPACES:
            raise ValueError(f"GVRConfig.space: expected one of {list(SPACES)}, got {self.space!r}")


class GVR(Explainer):
    """Generative Visual Rationales bound to a generator, its encoder and a classifier."""

    method = "gvr"
    config_class = GVRConfig

    def __init__(self, *, generator: nn.Module, encoder: Any, classifier: nn.Module, config: GVRConfig | None = None):
        super().__init__(classifier=classifier, config=config)
        if not hasattr(generator, "decode"):
            raise TypeError(f"GVR: generator must have decode(z), got {type(generator).__name__}")
        if not (hasattr(encoder, "encode") or callable(encoder)):
            raise TypeError(f"GVR: encoder must have encode(x) or be callable, got {type(encoder).__name__}")
        check = getattr(encoder, "check_generator", None)
        if check is not None:
            check(generator)
        self.generator, self.encoder = generator, encoder

    # -- pieces -------------------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, *latent]
        z = self.encoder.encode(x) if hasattr(self.encoder, "encode") else self.encoder(x)
        if self.config.space == "w":
            if z.ndim != 3:
                raise MedcfError(f"GVR space 'w': needs W+ latents [B, num_ws, w_dim], the encoder gives "
                                 f"{tuple(z.shape)}")
            z = z.mean(1)
        elif self.config.space == "w+" and z.ndim != 3:
            raise MedcfError(f"GVR space 'w+': needs W+ latents [B, num_ws, w_dim], the encoder gives "
                             f"{tuple(z.shape)}")
        return z

    def frame(self, z: Tensor, x: Tensor, g0: Tensor) -> tuple[Tensor, Tensor]:
        """(G(z), the frame the classifier judges) for latents z [b, *latent]."""
        g = self.generator.decode(z)
        return g, (x + (g - g0) if self.config.compose == "residual" else g)

    # -- the method ---------------------------------------------------------------------

    def explain(self, x: Tensor, target: Target | None = None) -> Counterfactual:
        """Optimise each query's latent until its frame reaches the target; [B, C, H, W] -> Counterfactual."""
        t0 = time.perf_counter()
        cfg = self.config
        channels, res = _image_shape(self.generator)
        self.check_inputs(x, channels=channels, resolution=res,
                          modules={"generator": self.generator, "encoder": self.encoder})
        x = x.detach()
        t, _ = self.targets(x, target)
        level = cfg.take_logit
        with self.eval_mode(self.generator, self.encoder):
            grads = [p.requires_grad for p in _params(self.generator)]
            for p in _params(self.generator):
                p.requires_grad_(False)
            try:
                path, s_path, steps, z_star, z0 = self._optimise(x, t, level)
            finally:
                for p, g in zip(_params(self.generator), grads, strict=True):
                    p.requires_grad_(g)
        dist = (z_star - z0).flatten(1).norm(dim=1)
        info = {"method": self.method, "settings": dataclasses.asdict(cfg), "steps": steps.tolist(),
                "latent_distance": dist.tolist(), "space": cfg.space}
        with torch.no_grad():
            recon = self.generator.decode(z0)
        cf = self.from_path(x, t, path, s_path, reconstruction=recon, info=info, start_time=t0)
        return cf

    def _optimise(self, x: Tensor, t: Tensor, level: float):
        cfg = self.config
        b = x.shape[0]
        with torch.no_grad():
            z0 = self.encode(x).float()
            g0 = self.generator.decode(z0)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=cfg.step_size)
        frames, scores = [], []
        done = torch.zeros(b, dtype=torch.bool, device=x.device)
        steps = torch.full((b,), cfg.max_steps, dtype=torch.long, device=x.device)
        z_before = z0.clone()                    # each query's latent one step before its crossing
        z_prev = z0.clone()
        dims = tuple(range(1, z0.ndim))
        for k in range(cfg.max_steps + 1):
            g, f = self.frame(z, x, g0)
            s = self.log_odds(f, t)                                       # [B]
            frames.append(f.detach().clone())              # a generator may return a view of z
            scores.append(s.detach())
            newly = (s.detach() >= level) & ~done
            if newly.any():
                steps[newly] = k
                z_before[newly] = z_prev[newly]
                done |= newly
            if bool(done.all()) or k == cfg.max_steps:
                break
            active = (~done).float()
            loss_q = (-s + cfg.latent_weight * (z - z0).square().mean(dims)
                      + cfg.image_weight * (g - g0).abs().mean(dim=(1, 2, 3)))
            z_prev = z.detach().clone()
            (z.grad,) = torch.autograd.grad((loss_q * active).sum(), z)   # no .grad left on the models
            opt.step()
            with torch.no_grad():                                         # finished queries stay put
                z[done] = z_prev[done]
        path = torch.stack(frames)                                        # [T, B, C, H, W]
        s_path = torch.stack(scores)                                      # [T, B]
        z_star = z.detach().clone()
        cross = done & (steps > 0)
        if cfg.refine_steps > 0 and bool(cross.any()):
            idx = cross.nonzero().squeeze(1)
            lo_z, hi_z = z_before[idx], z_star[idx]

            def frame_fn(a: Tensor):
                za = lo_z + a.view(-1, *([1] * (lo_z.ndim - 1))) * (hi_z - lo_z)
                with torch.no_grad():
                    _, f = self.frame(za, x[idx], g0[idx])
                    return f, self.log_odds(f, t[idx])

            zeros = torch.zeros(len(idx), device=x.device)
            a = refine_crossing(frame_fn, zeros, torch.ones_like(zeros), level, cfg.refine_steps)
            f, s = frame_fn(a)
            z_star[idx] = lo_z + a.view(-1, *([1] * (lo_z.ndim - 1))) * (hi_z - lo_z)
            k = steps[idx]
            path[k, idx] = f                                              # the crossing frame, refined
            s_path[k, idx] = s
            later = torch.arange(path.shape[0], device=x.device).view(-1, 1) > k.view(1, -1)  # [T, n]
            for j, q in enumerate(idx.tolist()):                          # frozen repeats after the crossing
                path[later[:, j], q] = f[j]
                s_path[later[:, j], q] = s[j]
        return path, s_path, steps, z_star, z0


def _params(module: Any) -> list[nn.Parameter]:
    return list(module.parameters()) if isinstance(module, nn.Module) else []


def _image_shape(generator: Any) -> tuple[int | None, int | None]:
    from medcf.explain_runner import _generator_shape

    return _generator_shape(generator)


def build_gvr(classifier_dir: str | os.PathLike, generator_dir: str | os.PathLike, *,
              encoder: str | os.PathLike | None = None, device: str | torch.device = "cpu",
              progress: bool = True, **opts) -> GVR:
    """A ``GVR`` explainer from a classifier run, a generator run and its encoder run.

    ``generator_dir``: a ``dcgan-generator`` (``medcf train gan``) with a ``gan-encoder``
    (``medcf train gan-encoder``), or a ``stylegan2-generator`` with a ``stylegan2-encoder``
    (``medcf train encoder``). ``opts`` are ``GVRConfig`` fields; None keeps the default.

    Example:
        >>> gvr = build_gvr("runs/classifier", "runs/gan", encoder="runs/gan-encoder")   # doctest: +SKIP
    """
    from medcf.explain_runner import _check_pair, load_explained_classifier
    from medcf.io import read_header

    fields = {f.name for f in dataclasses.fields(GVRConfig)}
    unknown = sorted(k for k in opts if k not in fields)
    if unknown:
        raise MedcfError(f"gvr: unknown option(s) {unknown}; known: {sorted(fields)}")
    header = read_header(generator_dir)
    kinds = {"dcgan-generator": "gan-encoder", "stylegan2-generator": "stylegan2-encoder"}
    if header["kind"] not in kinds:
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint; gvr needs a "
                              f"'dcgan-generator' (medcf train gan) or a 'stylegan2-generator'")
    if encoder is None:
        raise MedcfError("--encoder: gvr needs the encoder of the generator (medcf train gan-encoder, "
                         "or medcf train encoder for a StyleGAN2)")
    enc_header = read_header(encoder)
    if enc_header["kind"] != kinds[header["kind"]]:
        raise CheckpointError(f"{enc_header['path']}: is a '{enc_header['kind']}' checkpoint; a "
                              f"'{header['kind']}' needs a '{kinds[header['kind']]}' as --encoder")
    classifier = load_explained_classifier(classifier_dir, device=device)
    if header["kind"] == "dcgan-generator":
        from medcf.encoders.gan_encoder import GANEncoder
        from medcf.generators.dcgan import load_dcgan_generator

        G = load_dcgan_generator(header["path"], device=device)
        E = GANEncoder.load(enc_header["path"], device=device)
    else:
        from medcf.encoders.stylegan_encoder import StyleGANEncoder
        from medcf.generators.stylegan2.loading import load_stylegan2_generator

        G = load_stylegan2_generator(header["path"], device=device)
        E = StyleGANEncoder.load(enc_header["path"], device=device)
    E.check_generator(G, where=str(enc_header["path"]))
    _check_pair(classifier, G, classifier_dir, generator_dir)
    try:
        config = GVRConfig(**{k: v for k, v in opts.items() if v is not None})
    except ValueError as e:
        raise MedcfError(f"gvr: {e}") from None
    return GVR(generator=G, encoder=E, classifier=classifier, config=config)


build = build_gvr  # the registry's name for it


__all__ = ["GVR", "GVRConfig", "SPACES", "build", "build_gvr"]
