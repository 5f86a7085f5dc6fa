"""A DDPM backbone built from ``diffusers`` parts (kind ``diffusion``).

``DiffusionModel`` wraps a ``diffusers.UNet2DModel`` (the noise predictor) and the
noise schedule of a ``diffusers.DDPMScheduler``; sampling and counterfactuals use a
``diffusers.DDIMScheduler`` with the same schedule. Nothing here re-implements a UNet
or a scheduler.

A saved model is a directory in diffusers' own layout, readable by both libraries::

    MODEL_DIR/config.json                         UNet2DModel's config + the medcf header keys
                                                  (format, kind, class, config, meta)
    MODEL_DIR/diffusion_pytorch_model.safetensors the UNet's weights (diffusers' file name)
    MODEL_DIR/scheduler_config.json               the DDPMScheduler's config

so ``UNet2DModel.from_pretrained(MODEL_DIR)`` and ``DDPMScheduler.from_pretrained(MODEL_DIR)``
load it (diffusers logs that it ignores the medcf keys), and ``medcf.io.read_header`` /
``medcf info`` recognise it. ``load_diffusion`` also reads a UNet trained elsewhere: a
plain diffusers ``UNet2DModel`` folder, or a pipeline folder holding ``unet/`` (and
``scheduler/``).

Class-conditional models (``num_classes > 0``) embed the label with the UNet's own
``num_class_embeds``; index ``num_classes`` is the "no label" class used for
classifier-free dropout during training.

Example:
    >>> cfg = DiffusionConfig(resolution=16, channels=1, widths=(8, 16), layers_per_block=1)
    >>> model = DiffusionModel(cfg, seed=0).eval()
    >>> model(torch.zeros(2, 1, 16, 16), torch.tensor([10, 500])).shape   # predicted noise
    torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from medcf.errors import CheckpointError
from medcf.io import (
    CONFIG_NAME,
    FORMAT_TAG,
    SavableModule,
    atomic_write_dir,
    config_from_dict,
    config_to_dict,
    first_line,
)
from medcf.types import check_images

log = logging.getLogger(__name__)

KIND = "diffusion"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"   # diffusers' file name
SCHEDULER_CONFIG = "scheduler_config.json"
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_HEADER_KEYS = ("format", "kind", "class", "config", "meta")


@dataclass(frozen=True)
class DiffusionConfig:
    resolution: int = 64                      # image height = width (divisible by 2**(len(widths)-1))
    channels: int = 1                         # image channels (1 or 3)
    widths: tuple[int, ...] = (32, 64, 128)   # UNet channels per resolution level
    layers_per_block: int = 2                 # ResNet layers per UNet block
    attention: bool = True                    # self-attention at the lowest level (and the mid block)
    num_classes: int = 0                      # > 0: class-conditional (label num_classes = unconditional)
    class_names: tuple[str, ...] = ()         # names of the conditioning classes
    train_timesteps: int = 1000               # length of the noise schedule
    beta_schedule: str = "linear"             # diffusers beta schedule
    prediction_type: str = "epsilon"          # what the UNet predicts: epsilon | v_prediction | sample

    def __post_init__(self):
        where = "DiffusionConfig"
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        if self.channels < 1 or self.resolution < 8:
            raise ValueError(f"{where}: channels must be >= 1 and resolution >= 8, got "
                             f"{self.channels}, {self.resolution}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"{where}: widths must be positive, got {self.widths}")
        if self.resolution % 2 ** (len(self.widths) - 1):
            raise ValueError(f"{where}: resolution {self.resolution} is not divisible by "
                             f"2**{len(self.widths) - 1} ({len(self.widths)} levels)")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"{where}: beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"{where}: prediction_type must be one of {PREDICTION_TYPES}, "
                             f"got {self.prediction_type!r}")
        if self.num_classes < 0 or self.train_timesteps < 2 or self.layers_per_block < 1:
            raise ValueError(f"{where}: num_classes >= 0, train_timesteps >= 2 and layers_per_block >= 1 "
                             f"required, got {self.num_classes}, {self.train_timesteps}, {self.layers_per_block}")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0


def _groups(widths: tuple[int, ...]) -> int:
    """The largest GroupNorm group count (<= 32) dividing every width."""
    import math

    g = 0
    for w in widths:
        g = math.gcd(g, w)
    return max(d for d in range(1, min(g, 32) + 1) if g % d == 0)


def unet_kwargs(config: DiffusionConfig) -> dict[str, Any]:
    """``UNet2DModel`` constructor arguments for a ``DiffusionConfig``."""
    n = len(config.widths)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if config.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return dict(sample_size=config.resolution, in_channels=config.channels, out_channels=config.channels,
                block_out_channels=config.widths, layers_per_block=config.layers_per_block,
                down_block_types=tuple(down), up_block_types=tuple(up), add_attention=config.attention,
                norm_num_groups=_groups(config.widths), attention_head_dim=8 if config.attention else None,
                num_class_embeds=config.num_classes + 1 if config.conditional else None)


def scheduler_kwargs(config: DiffusionConfig) -> dict[str, Any]:
    """``DDPMScheduler`` / ``DDIMScheduler`` arguments for the noise schedule."""
    return dict(num_train_timesteps=config.train_timesteps, beta_schedule=config.beta_schedule,
                prediction_type=config.prediction_type, clip_sample=False)


class DiffusionModel(SavableModule):
    """The noise predictor of a DDPM: ``forward(x_t [B,C,H,W], t [B], labels [B] | None) -> [B,C,H,W]``.

    ``unet`` is a ``diffusers.UNet2DModel``; ``scheduler_config`` the DDPM schedule
    (a dict diffusers' schedulers accept). ``ddpm_scheduler()`` / ``ddim_scheduler()``
    return fresh scheduler objects on that schedule.

    Example:
        >>> m = DiffusionModel(DiffusionConfig(resolution=16, widths=(8, 16), layers_per_block=1))
        >>> m.sample(2, steps=2, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 16, 16])
    """

    kind: ClassVar[str] = KIND
    config_class: ClassVar[type] = DiffusionConfig

    def __init__(self, config: DiffusionConfig, *, seed: int | None = None, unet: Any = None,
                 scheduler_config: dict[str, Any] | None = None):
        super().__init__(config)
        from diffusers import UNet2DModel

        if unet is None:
            if seed is not None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    unet = UNet2DModel(**unet_kwargs(config))
            else:
                unet = UNet2DModel(**unet_kwargs(config))
        self.unet = unet
        self.scheduler_config = dict(scheduler_config or scheduler_kwargs(config))

    # -- the network ------------------------------------------------------------------------

    def forward(self, x_t: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """[B, C, H, W] noisy images, [B] timesteps (, [B] labels) -> [B, C, H, W] UNet output."""
        if class_labels is None and self.config.conditional:
            class_labels = torch.full((x_t.shape[0],), self.config.num_classes, dtype=torch.long,
                                      device=x_t.device)
        return self.unet(x_t, t, class_labels=class_labels).sample

    def ddpm_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.scheduler_config)

    def ddim_scheduler(self):
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config({**self.scheduler_config, "clip_sample": False,
                                          "set_alpha_to_one": True})

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    def eps_and_x0(self, out: Tensor, x_t: Tensor, alpha_bar: Tensor) -> tuple[Tensor, Tensor]:
        """UNet output -> (noise estimate, clean-image estimate x0-hat), whatever it predicts.

        ``alpha_bar``: [B] (or scalar) cumulative alpha of each sample's timestep.
        """
        a = alpha_bar.reshape(-1, 1, 1, 1).to(x_t)
        sa, sb = a.sqrt(), (1 - a).sqrt()
        kind = self.prediction_type
        if kind == "epsilon":
            eps = out
            x0 = (x_t - sb * eps) / sa
        elif kind == "v_prediction":
            x0 = sa * x_t - sb * out
            eps = sa * out + sb * x_t
        elif kind == "sample":
            x0 = out
            eps = (x_t - sa * x0) / sb
        else:
            raise CheckpointError(f"diffusion: unsupported prediction_type {kind!r}")
        return eps, x0

    @torch.no_grad()
    def sample(self, n: int, *, steps: int = 50, labels: Tensor | None = None,
               generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
        """``n`` images [n, C, R, R] by deterministic DDIM (eta 0) from Gaussian noise.

        ``labels`` [n]: classes for a conditional model (None: unconditional).
        """
        from medcf.progress import tqdm  # a live bar on a terminal, plain lines in a log

        cfg = self.config
        device = next(self.parameters()).device
        gen_device = generator.device if generator is not None else device
        x = torch.randn((n, cfg.channels, cfg.resolution, cfg.resolution), generator=generator,
                        device=gen_device).to(device)
        sched = self.ddim_scheduler()
        sched.set_timesteps(steps)
        if labels is not None:
            labels = labels.to(device)
        for t in tqdm(sched.timesteps, desc="sample", disable=not progress, leave=False):
            out = self(x, t.to(device).expand(n), labels)
            x = sched.step(out, t, x).prev_sample
        return x.clamp(-1, 1)

    # -- saving in diffusers' layout --------------------------------------------------------

    def checkpoint_meta(self) -> dict[str, Any]:
        cfg = self.config
        return {"input": {"channels": cfg.channels, "resolution": cfg.resolution, "value_range": [-1.0, 1.0]}}

    def save(self, path, *, meta: dict[str, Any] | None = None) -> Path:
        """Write MODEL_DIR in diffusers' layout with the medcf header merged into config.json."""
        unet = self.unet
        sched_config = dict(self.scheduler_config)
        header = {"format": FORMAT_TAG, "kind": self.kind, "class": type(self).__name__,
                  "config": config_to_dict(self.config), "meta": {**self.checkpoint_meta(), **(meta or {})}}

        def fill(tmp: Path) -> None:
            from diffusers import DDPMScheduler

            unet.save_pretrained(tmp, safe_serialization=True)
            DDPMScheduler.from_config(sched_config).save_pretrained(tmp)
            unet_config = json.loads((tmp / CONFIG_NAME).read_text())
            clash = sorted(set(unet_config) & set(_HEADER_KEYS))
            if clash:
                raise CheckpointError(f"diffusion: UNet config keys {clash} clash with the medcf header")
            (tmp / CONFIG_NAME).write_text(json.dumps({**unet_config, **header}, indent=2) + "\n")

        return atomic_write_dir(path, fill)

    @classmethod
    def load(cls, path, *, device: str | torch.device = "cpu") -> DiffusionModel:
        return load_diffusion(path, device=device)


# ----------------------------------------------------------------------------- loading


def _find_unet_dir(path: Path) -> Path:
    """A folder holding a UNet config: PATH, PATH/model (a medcf run) or PATH/unet (a pipeline)."""
    for cand in (path, path / "model", path / "unet"):
        if (cand / CONFIG_NAME).is_file():
            try:
                data = json.loads((cand / CONFIG_NAME).read_text())
            except (OSError, ValueError) as e:
                raise CheckpointError(f"{cand / CONFIG_NAME}: unreadable ({first_line(e)})") from e
            if isinstance(data, dict) and (data.get("_class_name") == "UNet2DModel" or data.get("kind") == KIND):
                return cand
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    raise CheckpointError(f"{path}: not a diffusion model (no UNet2DModel config.json here, in model/ "
                          "or in unet/)")


def _scheduler_config(unet_dir: Path) -> dict[str, Any] | None:
    for cand in (unet_dir / SCHEDULER_CONFIG, unet_dir.parent / "scheduler" / SCHEDULER_CONFIG):
        if cand.is_file():
            try:
                data = json.loads(cand.read_text())
            except (OSError, ValueError) as e:
                raise CheckpointError(f"{cand}: unreadable ({first_line(e)})") from e
            return {k: v for k, v in data.items() if not k.startswith("_")}
    return None


def load_diffusion(path, *, device: str | torch.device = "cpu") -> DiffusionModel:
    """A ``DiffusionModel`` from a medcf run/model directory or any diffusers ``UNet2DModel`` folder.

    A foreign UNet (no medcf header) gets its config from the UNet's own (``sample_size``,
    ``in_channels``, ``num_class_embeds``) and its schedule from ``scheduler_config.json``
    beside it or in ``../scheduler/`` (a pipeline folder), else diffusers' default DDPM
    schedule (linear, 1000 steps).

    Example:
        >>> model = load_diffusion("runs/ddpm")                       # doctest: +SKIP
        >>> model = load_diffusion("google-ddpm-cifar10-local/")      # a diffusers pipeline folder  # doctest: +SKIP
    """
    from diffusers import UNet2DModel

    unet_dir = _find_unet_dir(Path(path))
    raw = json.loads((unet_dir / CONFIG_NAME).read_text())
    if "kind" in raw and raw.get("kind") != KIND:
        raise CheckpointError(f"{unet_dir}: is a '{raw.get('kind')}' checkpoint, expected '{KIND}'")
    if not (unet_dir / UNET_WEIGHTS).is_file():
        raise CheckpointError(f"{unet_dir / UNET_WEIGHTS}: weights file not found (safetensors only)")
    sched = _scheduler_config(unet_dir)
    unet_config = {k: v for k, v in raw.items() if k not in _HEADER_KEYS}
    if raw.get("format") == FORMAT_TAG:
        config = config_from_dict(DiffusionConfig, raw.get("config", {}), where=str(unet_dir / CONFIG_NAME))
    else:
        size = unet_config.get("sample_size", 64)
        size = size[0] if isinstance(size, (list, tuple)) else size
        n_embeds = unet_config.get("num_class_embeds") or 0
        config = DiffusionConfig(
            resolution=int(size), channels=int(unet_config.get("in_channels", 3)),
            widths=tuple(unet_config.get("block_out_channels", (64,))), num_classes=max(int(n_embeds) - 1, 0),
            train_timesteps=int((sched or {}).get("num_train_timesteps", 1000)),
            beta_schedule=str((sched or {}).get("beta_schedule", "linear")),
            prediction_type=str((sched or {}).get("prediction_type", "epsilon")))
    try:
        with _quiet_diffusers():
            unet = UNet2DModel.from_config(unet_config)
    except Exception as e:  # diffusers raises assorted errors on a bad config
        raise CheckpointError(f"{unet_dir / CONFIG_NAME}: not a usable UNet2DModel config "
                              f"({type(e).__name__}: {first_line(e)})") from e
    from safetensors.torch import load_file

    try:
        state = load_file(str(unet_dir / UNET_WEIGHTS))
    except Exception as e:
        raise CheckpointError(f"{unet_dir / UNET_WEIGHTS}: corrupt weights file ({first_line(e)})") from e
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{unet_dir / UNET_WEIGHTS}: weights do not match the UNet config "
                              f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model = DiffusionModel(config, unet=unet, scheduler_config=sched)
    return model.to(device).eval()


class _quiet_diffusers:
    """Context: diffusers' logger at ERROR (it warns about keys it ignores)."""

    def __enter__(self):
        self.logger = logging.getLogger("diffusers")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def check_diffusion_input(model: DiffusionModel, x: Tensor, name: str = "diffusion input") -> None:
    """Images [B, C, R, R] matching the model's channels and resolution (one-line ShapeError)."""
    cfg = model.config
    check_images(x, channels=cfg.channels, resolution=cfg.resolution,
                 name=f"{name} (expects [B, {cfg.channels}, {cfg.resolution}, {cfg.resolution}])")


__all__ = ["DiffusionConfig", "DiffusionModel", "KIND", "check_diffusion_input", "load_diffusion",
           "scheduler_kwargs", "unet_kwargs"]
