"""Build medcf StyleGAN2-ADA networks from official constructor kwargs and state dicts.

An official network is described by its class path (``training.networks.Generator``
/ ``training.networks.Discriminator``), the ``init_kwargs`` its constructor
received (what an official pickle stores as ``_init_kwargs``), and its
``state_dict()``. No official code is imported or executed here.

Example (``generator_A.*`` from the reference fixture)::

    import json
    from safetensors.torch import load_file
    meta = json.load(open("generator_A.json"))
    G = build_from_official(meta["class_name"], meta["init_kwargs"],
                            load_file("generator_A.safetensors"))
    img = G(z, None, noise_mode="const", force_fp32=True)   # z: [B, 64]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from medcf.errors import CheckpointError, MedcfError
from medcf.generators.stylegan2.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    MappingConfig,
    SynthesisConfig,
)
from medcf.generators.stylegan2.discriminator import Discriminator
from medcf.generators.stylegan2.generator import Generator
from medcf.io import SavableModule

# official class path -> medcf class (stylegan3's networks_stylegan2 keeps the same layout)
OFFICIAL_CLASSES: dict[str, type[SavableModule]] = {
    "training.networks.Generator": Generator,
    "training.networks.Discriminator": Discriminator,
    "training.networks_stylegan2.Generator": Generator,
    "training.networks_stylegan2.Discriminator": Discriminator,
}

_MAPPING_KEYS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier",
                 "w_avg_beta"}
_SYNTHESIS_KEYS = {"channel_base", "channel_max", "num_fp16_res", "architecture", "resample_filter",
                   "conv_clamp", "kernel_size", "use_noise", "activation", "fp16_channels_last"}
_G_KEYS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
           "synthesis_kwargs"}
_D_KEYS = {"c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
           "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs",
           "epilogue_kwargs"}
_D_BLOCK_KEYS = {"activation", "resample_filter", "fp16_channels_last", "freeze_layers"}
_D_EPILOGUE_KEYS = {"mbstd_group_size", "mbstd_num_channels", "activation"}


def _section(kwargs: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(f"{where}: expected a dict, got {type(kwargs).__name__}")
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise CheckpointError(f"{where}: unsupported official argument(s) {unknown}")
    return {k: _plain(v) for k, v in kwargs.items()}


def _plain(v: Any) -> Any:
    """numpy scalars / lists -> Python scalars / tuples."""
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return v


def _build(cls: type, kwargs: dict[str, Any], where: str) -> Any:
    try:
        return cls(**kwargs)
    except MedcfError as e:
        raise CheckpointError(f"{where}: {e}") from e
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid arguments ({e})") from e


def config_from_official_kwargs(class_name: str,
                                init_kwargs: Mapping[str, Any]) -> GeneratorConfig | DiscriminatorConfig:
    """The medcf config equal to ``official_class(**init_kwargs)``."""
    cls = _official_class(class_name)
    short = class_name.rsplit(".", 1)[-1]
    if cls is Generator:
        top = _section(init_kwargs, _G_KEYS, f"{short} init_kwargs")
        mapping = _build(MappingConfig, _section(top.pop("mapping_kwargs", None), _MAPPING_KEYS,
                                                 f"{short} mapping_kwargs"), "mapping_kwargs")
        synthesis = _build(SynthesisConfig,
                           _section(top.pop("synthesis_kwargs", None), _SYNTHESIS_KEYS,
                                    f"{short} synthesis_kwargs"), "synthesis_kwargs")
        return _build(GeneratorConfig, {**top, "mapping": mapping, "synthesis": synthesis},
                      f"{short} init_kwargs")
    top = _section(init_kwargs, _D_KEYS, f"{short} init_kwargs")
    block = _section(top.pop("block_kwargs", None), _D_BLOCK_KEYS, f"{short} block_kwargs")
    epilogue = _section(top.pop("epilogue_kwargs", None), _D_EPILOGUE_KEYS,
                        f"{short} epilogue_kwargs")
    map_kwargs = _section(top.pop("mapping_kwargs", None), _MAPPING_KEYS - {"w_avg_beta"},
                          f"{short} mapping_kwargs")
    act = block.pop("activation", "lrelu")
    if epilogue.pop("activation", act) != act:
        raise CheckpointError(f"{short} init_kwargs: different block and epilogue activations "
                              "are not supported")
    mapping = _build(MappingConfig, {**map_kwargs, "w_avg_beta": None}, "mapping_kwargs")
    return _build(DiscriminatorConfig, {**top, **block, **epilogue, "activation": act,
                                        "mapping": mapping}, f"{short} init_kwargs")


def build_from_official(class_name: str, init_kwargs: Mapping[str, Any],
                        state_dict: Mapping[str, Tensor]) -> SavableModule:
    """A medcf Generator / Discriminator holding an official state dict (strict key/shape match)."""
    cls = _official_class(class_name)
    model = cls(config_from_official_kwargs(class_name, init_kwargs))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{class_name}: state dict does not match its init_kwargs "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in expected.items():
        if tuple(state_dict[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{class_name}: tensor {k!r} has shape "
                                  f"{tuple(state_dict[k].shape)}, expected {tuple(v.shape)}")
    with torch.no_grad():
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()}, strict=True)
    return model.eval()


def _official_class(class_name: str) -> type[SavableModule]:
    if class_name not in OFFICIAL_CLASSES:
        raise CheckpointError(f"official class {class_name!r} is not supported; known: "
                              f"{sorted(OFFICIAL_CLASSES)}")
    return OFFICIAL_CLASSES[class_name]
