"""The one explicit table of explainers: CLI name -> how to build it from checkpoints.

Adding a method is one module under ``medcf/counterfactual/`` (its ``Explainer``
subclass, config dataclass and a ``build`` function) plus one entry here; see
docs/adding-a-method.md. Imported lazily by the CLI (it imports torch).

A builder is ``build(classifier_dir, generator_dir, *, device="cpu", progress=True,
**options) -> Explainer``; ``options`` names every keyword it accepts besides
``device``/``progress`` (config fields and method extras such as ``encoder``).

Example:
    >>> from medcf.counterfactual.registry import METHODS
    >>> sorted(METHODS)[:2]
    ['latent-probe', 'latent-shift']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from medcf.counterfactual import diffusion

from medcf.explain_runner import build_latent_probe_method, build_latent_shift


@dataclass(frozen=True)
class MethodSpec:
    build: Callable                 # build(classifier_dir, generator_dir, *, device, progress, **options)
    options: tuple[str, ...]        # keyword options build accepts (besides device/progress)
    backbone: str                   # what --generator (and --encoder) must be, for help and errors
    tasks: tuple[str, ...] = ("cardiomegaly", "opacity")  # benchmark tasks the method has rows for
    # prepare(data_dir, out_dir, *, classifier_dir, task, profile, device, seed, progress) -> dict:
    # trains (or reuses) the method's backbone(s) for `medcf benchmark` under out_dir and returns
    # the keywords for build: {"generator_dir": ..., **options}. None: not benchmarked yet.
    prepare: Callable | None = None


METHODS: dict[str, MethodSpec] = {
    "latent-shift": MethodSpec(
        build_latent_shift,
        ("iterative", "direction", "step_size", "max_steps", "max_change", "threshold", "take_at", "compose",
         "stop_probability", "patience", "reference", "device"),
        "an 'ae' or 'vae' run (medcf train vae)"),
    "latent-probe": MethodSpec(
        build_latent_probe_method,
        ("encoder", "probe_dir", "fit_samples", "seed", "step_size", "max_steps", "threshold", "take_at",
         "compose", "project_steps", "device", "progress"),
        "a 'stylegan2' run (medcf train stylegan2), optionally --encoder (medcf train encoder)"),
    "diffusion": MethodSpec(
        diffusion.builder("fast"), diffusion.BUILD_OPTIONS,
        "a 'diffusion' run (medcf train diffusion) or a diffusers UNet2DModel folder",
        tasks=("cardiomegaly", "opacity"), prepare=diffusion.prepare_benchmark),
    "diffusion-masked": MethodSpec(
        diffusion.builder("masked"), diffusion.BUILD_OPTIONS,
        "a 'diffusion' run (medcf train diffusion) or a diffusers UNet2DModel folder",
        tasks=("cardiomegaly", "opacity"), prepare=diffusion.prepare_benchmark),
    "diffusion-dime": MethodSpec(
        diffusion.builder("dime"), diffusion.BUILD_OPTIONS,
        "a 'diffusion' run (medcf train diffusion) or a diffusers UNet2DModel folder",
        tasks=("cardiomegaly", "opacity"), prepare=diffusion.prepare_benchmark),
}
