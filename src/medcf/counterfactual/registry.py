"""The one explicit table of explainers: CLI name -> how to build it from checkpoints.

Adding a method is one module under ``medcf/counterfactual/`` (its ``Explainer``
subclass, config dataclass and a ``build`` function) plus one entry here; see
docs/adding-a-method.md. Imported lazily by the CLI (it imports torch).

A builder is ``build(classifier_dir, generator_dir, *, device="cpu", progress=True,
**options) -> Explainer``. With ``config_class`` set, every field of that config
dataclass is an option (the CLI derives ``--set FIELD=VALUE`` and ``--list-options``
from it) and ``options`` lists only the extras (``encoder``, ...); without it,
``options`` names every keyword ``build`` accepts besides ``device``/``progress``.

Example:
    >>> from medcf.counterfactual.registry import METHODS
    >>> sorted(METHODS)[:2]
    ['latent-probe', 'latent-shift']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medcf.benchmark.backbones import prepare_latent_probe, prepare_latent_shift
from medcf.counterfactual import (
    cyclegan,
    diffusion,
    dissect,
    gvr,
    icam,
    latent_probe,
    latent_shift,
    progressive,
    vagan,
)
from medcf.train.cyclegan import prepare_cyclegan
from medcf.train.gan_prepare import prepare_gvr, prepare_vagan
from medcf.train.icam import prepare_icam
from medcf.train.progressive import prepare_benchmark as prepare_progressive
from medcf.train.progressive import prepare_dissect


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
    config_class: type | None = None  # the explainer's config dataclass: its fields are options too

    def accepts(self) -> tuple[str, ...]:
        """Every keyword option ``build`` takes: the config's fields, then the extras."""
        import dataclasses

        fields = tuple(f.name for f in dataclasses.fields(self.config_class)) if self.config_class else ()
        return fields + tuple(o for o in self.options if o not in fields)


METHODS: dict[str, MethodSpec] = {
    "latent-shift": MethodSpec(
        latent_shift.build, (),
        "an 'ae' or 'vae' run (medcf train vae)",
        config_class=latent_shift.LatentShiftConfig,
        prepare=prepare_latent_shift, tasks=("cardiomegaly", "opacity", "effusion")),
    "latent-probe": MethodSpec(
        latent_probe.build, ("encoder", "probe_dir", "fit_samples", "seed", "project_steps", "max_steps"),
        "a 'stylegan2' run (medcf train stylegan2), optionally --encoder (medcf train encoder)",
        config_class=latent_probe.LatentProbeConfig,
        prepare=prepare_latent_probe),
    "progressive": MethodSpec(
        progressive.build, ("force",),
        "a 'progressive-generator' run trained for this classifier (medcf train progressive)",
        tasks=("cardiomegaly",), config_class=progressive.ProgressiveConfig,
        prepare=prepare_progressive),
    "dissect": MethodSpec(
        dissect.build, ("force",),
        "a 'progressive-generator' run with --concepts K >= 2 (medcf train dissect)",
        tasks=("cardiomegaly",), config_class=dissect.DissectConfig, prepare=prepare_dissect),
    "gvr": MethodSpec(
        gvr.build, ("encoder",),
        "a 'dcgan-generator' run (medcf train gan) with --encoder (medcf train gan-encoder), or a "
        "'stylegan2-generator' with its encoder (medcf train encoder)",
        config_class=gvr.GVRConfig, prepare=prepare_gvr),
    "vagan": MethodSpec(
        vagan.build, ("max_steps",),
        "a 'vagan-map' run (medcf train vagan); it explains the data's class difference, not the classifier",
        tasks=("opacity",), config_class=vagan.VAGANExplainConfig, prepare=prepare_vagan),
    "diffusion": MethodSpec(
        diffusion.builder("fast"), ("step_size", "max_steps"),
        "a 'diffusion' run (medcf train diffusion) or a diffusers UNet2DModel folder",
        config_class=diffusion.DiffusionCFConfig, prepare=diffusion.prepare_benchmark),
    "diffusion-masked": MethodSpec(
        diffusion.builder("masked"), ("step_size", "max_steps"),
        "a 'diffusion' run (medcf train diffusion) or a diffusers UNet2DModel folder",
        config_class=diffusion.DiffusionCFConfig, prepare=diffusion.prepare_benchmark),
    "diffusion-dime": MethodSpec(
        diffusion.builder("dime"), ("step_size", "max_steps"),
        "a 'diffusion' run (medcf train diffusion) or a diffusers UNet2DModel folder",
        config_class=diffusion.DiffusionCFConfig, prepare=diffusion.prepare_benchmark),
    "icam": MethodSpec(
        icam.build_icam, (), "an 'icam' run (medcf train icam)",
        config_class=icam.ICAMExplainerConfig, prepare=prepare_icam),
    "cyclegan": MethodSpec(
        cyclegan.build_cyclegan, (), "a 'cyclegan' run (medcf train cyclegan)",
        config_class=cyclegan.CycleGANExplainerConfig, prepare=prepare_cyclegan),
}
