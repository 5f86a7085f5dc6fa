"""Loading what an explainer is bound to, for the method builders of the registry.

Every ``build(classifier_dir, generator_dir, *, device, progress, **options)`` in
``medcf.counterfactual.registry`` starts the same way: load the classifier to
explain, check the generator checkpoint's kind, check that the two work on the
same images, and turn the options into the method's config (``load_method_inputs`` does
all four for a builder bound to one generator checkpoint). Errors are one-line
``MedcfError``s naming the file or setting (the CLI adds the flag names).

Example:
    >>> clf = load_explained_classifier("runs/demo/classifier")                 # doctest: +SKIP
    >>> header = expect_kind("runs/demo/vae", ("ae", "vae"), "latent-shift", "medcf train vae")  # doctest: +SKIP
    >>> cfg = config_from_options(LatentShiftConfig, "latent-shift", {"take_at": 0.99})          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medcf.errors import CheckpointError, MedcfError, ShapeError

EXPLAINABLE_KINDS = ("classifier", "oracle")  # checkpoint kinds that decide a class label


def load_explained_classifier(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """The classifier to explain from a model or run directory (kind classifier or oracle)."""
    from medcf.classifiers import load_classifier
    from medcf.io import read_header

    header = read_header(path)
    if header["kind"] not in EXPLAINABLE_KINDS:
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint; the classifier to "
                              f"explain must be one of {list(EXPLAINABLE_KINDS)}")
    return load_classifier(header["path"], device=device)


def expect_kind(path: str | os.PathLike, kinds: tuple[str, ...], method: str, how: str) -> dict:
    """The checkpoint header of ``path``, refused unless its kind is one of ``kinds``."""
    from medcf.io import read_header

    header = read_header(path)
    if header["kind"] not in kinds:
        want = " or ".join(f"'{k}'" for k in kinds)
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint; {method} needs a {want} "
                              f"checkpoint ({how})")
    return header


def generator_shape(generator: Any) -> tuple[int | None, int | None]:
    """(channels, resolution) of a generator's images: ``config.channels``/``resolution``
    (autoencoders, encoders) or ``img_channels``/``img_resolution`` (StyleGAN2); None when unknown."""
    cfg = getattr(generator, "config", None)
    for ch, res in (("channels", "resolution"), ("img_channels", "img_resolution")):
        for owner in (cfg, generator):
            c, r = getattr(owner, ch, None), getattr(owner, res, None)
            if isinstance(c, int) and isinstance(r, int):
                return c, r
    return None, None


def check_pair(classifier: nn.Module, generator: Any, classifier_dir, generator_dir) -> None:
    """The classifier must read the images the generator makes (channels, resolution)."""
    g_ch, g_res = generator_shape(generator)
    c_ch, c_res = getattr(classifier, "in_channels", None), getattr(classifier, "resolution", None)
    if None not in (g_ch, c_ch) and g_ch != c_ch:
        raise ShapeError(f"{generator_dir}: generator makes {g_ch}-channel images but the classifier "
                         f"{classifier_dir} expects {c_ch}")
    if None not in (g_res, c_res) and g_res != c_res:
        raise ShapeError(f"{generator_dir}: generator makes {g_res}x{g_res} images but the classifier "
                         f"{classifier_dir} expects {c_res}x{c_res}")


def setting_error(param: str, message: str, cls: type[MedcfError] = MedcfError) -> MedcfError:
    """A one-line error ``"PARAM: message"`` about the setting ``param``; ``err.param`` lets a
    caller (the CLI) name its own flag for it instead."""
    err = cls(f"{param}: {message}")
    err.param = param
    return err


class _ExplicitNone:
    """``NONE``: a setting set to None on purpose (plain None means "keep the default")."""

    def __repr__(self) -> str:
        return "NONE"


NONE = _ExplicitNone()


_FIELD_ERROR = re.compile(r"^\w+\.(\w+): (.*)$")


def config_from_options(config_class: type, method: str, options: dict[str, Any], *, base: Any = None) -> Any:
    """``config_class(**options)`` (None values keep the defaults, or ``base``'s values; ``NONE``
    sets a field to None); an unknown field or an invalid value is a one-line ``MedcfError``
    naming the field (``err.param``)."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(k for k in options if k not in fields)
    if unknown:
        raise MedcfError(f"{method}: unknown setting(s) {unknown}; known: {sorted(fields)}")
    given = {k: None if v is NONE else v for k, v in options.items() if v is not None}
    try:
        return dataclasses.replace(base, **given) if base is not None else config_class(**given)
    except (TypeError, ValueError) as e:
        m = _FIELD_ERROR.match(str(e).split("\n")[0])
        if m and m.group(1) in fields:
            raise setting_error(m.group(1), f"{m.group(2)} ({method})") from None
        raise MedcfError(f"{method}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def load_method_inputs(config_class: type, method: str, options: dict[str, Any], classifier_dir, generator_dir, *,
                       kinds: tuple[str, ...], how: str, load: Callable[..., Any],
                       device: str | torch.device = "cpu") -> tuple[Any, nn.Module, Any]:
    """The start of a builder bound to one generator checkpoint, in this order: the method's config
    from ``options`` (``config_from_options``), the classifier to explain, the generator's kind
    (one of ``kinds``; ``how`` names the command that makes one), the generator loaded with
    ``load(path, device=device)``, and the classifier/generator image check.
    -> (config, classifier, generator)

    Example:
        >>> config, clf, model = load_method_inputs(CycleGANExplainerConfig, "cyclegan", {"max_steps": 4},
        ...                                         "runs/classifier", "runs/cyclegan", kinds=("cyclegan",),
        ...                                         how="medcf train cyclegan", load=CycleGAN.load)  # doctest: +SKIP
    """
    config = config_from_options(config_class, method, options)
    classifier = load_explained_classifier(classifier_dir, device=device)
    header = expect_kind(generator_dir, kinds, method, how)
    generator = load(header["path"], device=device)
    check_pair(classifier, generator, classifier_dir, generator_dir)
    return config, classifier, generator


__all__ = ["EXPLAINABLE_KINDS", "NONE", "check_pair", "config_from_options", "expect_kind", "generator_shape",
           "load_explained_classifier", "load_method_inputs", "setting_error"]
