"""``prepare`` hooks of the method table for ``medcf benchmark`` (latent-shift, latent-probe).

The contract (``medcf.counterfactual.registry.MethodSpec.prepare``):
``prepare(data_dir, out_dir, *, classifier_dir, task, profile, device, seed, progress) -> dict``
trains (or reuses, through ``medcf.benchmark.cache.cached_stage``) the method's
backbones under ``out_dir`` and returns the keywords of its ``build``:
``{"generator_dir": ..., **options}``. ``profile`` is the method's
``[methods.NAME]`` table of the benchmark profile; its ``explain`` sub-table is
passed through as build options.

Example:
    >>> kw = prepare_latent_shift("out/cache/data-ab12", "out/methods/latent-shift",
    ...                           classifier_dir="out/cache/classifier-cd34", task="cardiomegaly",
    ...                           profile={"steps": 600}, device="cpu", seed=0, progress=True)  # doctest: +SKIP
    >>> build_latent_shift("out/cache/classifier-cd34", **kw)                                    # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medcf.benchmark.cache import cached_stage, data_resolution, stage_checkpoint_every


def _lpips_available() -> bool:
    from medcf.errors import MedcfError

    try:
        from medcf.eval.lpips import LPIPS

        LPIPS("alex")
        return True
    except MedcfError:
        return False


def prepare_latent_shift(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, classifier_dir,
                         task: str, profile: dict[str, Any], device="cpu", seed: int = 0,
                         progress: bool = True) -> dict:
    """Train (or reuse) the ``ae``/``vae`` of Latent Shift: ``profile`` keys kind, widths, steps,
    batch_size (defaults: vae, (16, 32), 1500, 32); returns ``{"generator_dir", **profile["explain"]}``."""
    from medcf.train.autoencoders import train_autoencoder

    cfg = {"data": str(data_dir), "kind": profile.get("kind", "vae"),
           "widths": list(profile.get("widths", (16, 32))), "steps": int(profile.get("steps", 1500)),
           "batch_size": int(profile.get("batch_size", 32)), "seed": seed}
    run = cached_stage(out_dir, cfg["kind"], cfg, lambda d, resume: train_autoencoder(
        data_dir, d, kind=cfg["kind"], steps=cfg["steps"], batch_size=cfg["batch_size"],
        widths=tuple(cfg["widths"]), seed=seed, val_every=0, resume=resume, progress=progress,
        checkpoint_every=stage_checkpoint_every(cfg["steps"])))
    return {"generator_dir": str(run), **profile.get("explain", {})}


def prepare_latent_probe(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, classifier_dir,
                         task: str, profile: dict[str, Any], device="cpu", seed: int = 0,
                         progress: bool = True) -> dict:
    """Train (or reuse) a StyleGAN2 on the data and an encoder for it; the probe is fitted (and
    saved) for this classifier by the explainer's build. ``profile`` keys: channel_base,
    channel_max, z_dim, steps, batch_size, encoder_steps, encoder_batch_size, fit_samples."""
    from medcf.train.encoder import train_encoder
    from medcf.train.stylegan2 import train_stylegan2

    res = data_resolution(data_dir)
    g = {"data": str(data_dir), "resolution": res, "channel_base": int(profile.get("channel_base", 2048)),
         "channel_max": int(profile.get("channel_max", 128)), "z_dim": int(profile.get("z_dim", 128)),
         "steps": int(profile.get("steps", 2000)), "batch_size": int(profile.get("batch_size", 32)),
         "seed": seed}
    sg2 = cached_stage(out_dir, "stylegan2", g, lambda d, resume: train_stylegan2(
        data_dir, d, resolution=res, steps=g["steps"], batch_size=g["batch_size"],
        channel_base=g["channel_base"], channel_max=g["channel_max"], z_dim=g["z_dim"], w_dim=g["z_dim"],
        seed=seed, sample_every=0, fid_every=0, checkpoint_every=stage_checkpoint_every(g["steps"]),
        resume=resume, progress=progress))
    e = {"generator": str(sg2), "steps": int(profile.get("encoder_steps", 1000)),
         "batch_size": int(profile.get("encoder_batch_size", 32)),
         "base_channels": int(profile.get("encoder_base_channels", 16)),
         "max_channels": int(profile.get("encoder_max_channels", 64)),
         "lpips_weight": 0.5 if _lpips_available() else 0.0, "seed": seed}
    enc = cached_stage(out_dir, "encoder", e, lambda d, resume: train_encoder(
        sg2, d, steps=e["steps"], batch_size=e["batch_size"], base_channels=e["base_channels"],
        max_channels=e["max_channels"], lpips_weight=e["lpips_weight"], seed=seed,
        val_samples=min(64, 4 * e["batch_size"]), val_every=0, resume=resume, progress=progress,
        checkpoint_every=stage_checkpoint_every(e["steps"])))
    fit = int(profile.get("fit_samples", 2000))
    probe = Path(out_dir) / f"probe-{Path(str(classifier_dir)).name}-{fit}-{seed}"
    return {"generator_dir": str(sg2), "encoder": str(enc), "probe_dir": str(probe), "fit_samples": fit,
            "seed": seed, **profile.get("explain", {})}
