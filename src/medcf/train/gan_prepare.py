"""``prepare`` hooks of the method table for ``medcf benchmark``: GVR and VA-GAN backbones.

The contract (``medcf.counterfactual.registry.MethodSpec.prepare``):
``prepare(data_dir, out_dir, *, classifier_dir, task, profile, device, seed, progress) -> dict``
trains (or reuses, through ``medcf.benchmark.cache.cached_stage``) the backbones
under ``out_dir`` and returns the keywords of the method's ``build``. ``profile`` is
the method's ``[methods.NAME]`` table; missing keys take the defaults below, which
are sized for the quick profile (32 px, under a minute for both methods, measured on a
loaded 2-core machine); the full profile's tables set larger budgets. Its ``explain`` sub-table is
passed through as build options.

Example:
    >>> kw = prepare_gvr("out/cache/data-ab12", "out/methods/gvr", classifier_dir="out/cache/clf",
    ...                  task="cardiomegaly", profile={"steps": 300}, device="cpu", seed=0,
    ...                  progress=False)                                             # doctest: +SKIP
    >>> build_gvr("out/cache/clf", **kw)                                             # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

# quick-profile sizes (32 px): GVR 17 s to train + 0.8 s for 48 queries per task, measured at load average ~8
# on 2 cores (docs/gvr.md); VA-GAN (100 critic-only + 40 x 2 updates) 70 s + 1 s at load ~9 (docs/vagan.md)
GVR_DEFAULTS = {"loss": "wgan-gp", "steps": 50, "n_critic": 2, "batch_size": 16, "z_dim": 64,
                "base_channels": 16, "encoder_steps": 60, "encoder_batch_size": 16}
GVR_EXPLAIN = {"max_steps": 40, "step_size": 0.05}
VAGAN_DEFAULTS = {"steps": 40, "n_critic": 2, "critic_warmup": 100, "map_lr": 1e-5, "batch_size": 16, "base_channels": 8,
                  "depth": 2, "critic_channels": 8, "l1_weight": 10.0, "snapshots": 2}
SOURCE_TARGET = {"opacity": ("opacity", "clear"), "cardiomegaly": ("cardiomegaly", "normal")}


def prepare_gvr(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, classifier_dir, task: str,
                profile: dict[str, Any], device="cpu", seed: int = 0, progress: bool = True) -> dict:
    """Train (or reuse) a DCGAN on the images and its encoder; ``profile`` keys: those of
    ``GVR_DEFAULTS``; returns ``{"generator_dir", "encoder", **explain}``."""
    from medcf.benchmark.cache import cached_stage, data_resolution, stage_checkpoint_every
    from medcf.train.gan import train_gan
    from medcf.train.gan_encoder import train_gan_encoder

    p = {**GVR_DEFAULTS, **{k: v for k, v in profile.items() if k != "explain"}}
    g = {"data": str(data_dir), "resolution": data_resolution(data_dir), "seed": seed,
         **{k: p[k] for k in ("loss", "steps", "n_critic", "batch_size", "z_dim", "base_channels")}}
    gan = cached_stage(out_dir, "gan", g, lambda d, resume: train_gan(
        data_dir, d, loss=g["loss"], steps=int(g["steps"]), n_critic=int(g["n_critic"]),
        batch_size=int(g["batch_size"]), z_dim=int(g["z_dim"]), base_channels=int(g["base_channels"]),
        seed=seed, sample_every=0, checkpoint_every=stage_checkpoint_every(int(g["steps"]) * int(g["n_critic"])),
        resume=resume, progress=progress))
    e = {"generator": str(gan), "data": str(data_dir), "steps": int(p["encoder_steps"]),
         "batch_size": int(p["encoder_batch_size"]), "seed": seed}
    enc = cached_stage(out_dir, "gan-encoder", e, lambda d, resume: train_gan_encoder(
        gan, d, data=data_dir, steps=e["steps"], batch_size=e["batch_size"], seed=seed,
        base_channels=int(p["base_channels"]), resume=resume, progress=progress,
        checkpoint_every=stage_checkpoint_every(e["steps"])))
    return {"generator_dir": str(gan), "encoder": str(enc), **GVR_EXPLAIN, **profile.get("explain", {})}


def prepare_vagan(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, classifier_dir, task: str,
                  profile: dict[str, Any], device="cpu", seed: int = 0, progress: bool = True) -> dict:
    """Train (or reuse) VA-GAN from the task's positive class to its negative one, snapshots
    scored with the benchmark's classifier as the selection oracle when the profile gives no
    ``oracle`` path; ``profile`` keys: those of ``VAGAN_DEFAULTS``, ``source``, ``target``,
    ``oracle``."""
    from medcf.benchmark.cache import cached_stage
    from medcf.train.vagan import train_vagan

    p = {**VAGAN_DEFAULTS, **{k: v for k, v in profile.items() if k != "explain"}}
    source, target = SOURCE_TARGET.get(task, ("1", "0"))
    source, target = str(p.get("source", source)), str(p.get("target", target))
    oracle = str(p.get("oracle", classifier_dir))
    v = {"data": str(data_dir), "source": source, "target": target, "oracle": oracle, "seed": seed,
         **{k: p[k] for k in VAGAN_DEFAULTS}}
    every = max(1, int(v["steps"]) // int(v["snapshots"]))
    run = cached_stage(out_dir, "vagan", v, lambda d, resume: train_vagan(
        data_dir, d, source=source, target=target, oracle=oracle, steps=int(v["steps"]),
        n_critic=int(v["n_critic"]), critic_warmup=int(v["critic_warmup"]),
        map_lr=float(v["map_lr"]), batch_size=int(v["batch_size"]), base_channels=int(v["base_channels"]),
        depth=int(v["depth"]), critic_channels=int(v["critic_channels"]), l1_weight=float(v["l1_weight"]),
        snapshot_every=every, seed=seed, resume=resume, progress=progress))
    return {"generator_dir": str(run), **profile.get("explain", {})}


__all__ = ["GVR_DEFAULTS", "VAGAN_DEFAULTS", "prepare_gvr", "prepare_vagan"]
