"""Pictures of counterfactuals: GIFs, frame strips, difference overlays, notebook figures.

Nothing here runs inside an explainer; every function takes a finished
``Counterfactual`` (or tensors) and writes files atomically.

Example:
    >>> cf = LatentShift(autoencoder=vae, classifier=clf).explain(x, target=1)  # doctest: +SKIP
    >>> save_gif(cf, "out/shift.gif")          # forward-and-back loop, p printed on each frame  # doctest: +SKIP
    >>> save_strip(cf, "out/strip.png", n_frames=6)                                            # doctest: +SKIP
    >>> save_map(cf, "out/map.png"); fig = figure(cf)                                          # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from medcf.errors import ShapeError
from medcf.io import atomic_write
from medcf.types import Counterfactual

LOOPS = ("forward-back", "forward")


def to_uint8(image: Tensor) -> np.ndarray:
    """[C, H, W] in [-1, 1] -> uint8 [H, W] (C == 1) or [H, W, 3]."""
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ShapeError(f"image: expected [C, H, W] with C = 1 or 3, got {got}")
    a = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def _rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a


def _resize(a: np.ndarray, size: int | None) -> Image.Image:
    img = Image.fromarray(_rgb(a))
    if size and size != img.width:
        img = img.resize((size, round(size * img.height / img.width)), Image.NEAREST)
    return img


def _font(width: int):
    """PIL's default font, scaled with the image where this Pillow supports it (>= 10.1)."""
    try:
        return ImageFont.load_default(size=max(10, width // 16))
    except (TypeError, OSError):  # older Pillow / no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _label(img: Image.Image, text: str) -> Image.Image:
    """Draw ``text`` on a dark band at the top of the image (PIL's default font)."""
    draw = ImageDraw.Draw(img)
    font = _font(img.width)
    box = draw.textbbox((2, 2), text, font=font)
    draw.rectangle((0, 0, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.text((2, 2), text, fill=(255, 255, 0), font=font)
    return img


def _check_index(cf: Counterfactual, index: int) -> None:
    if not 0 <= index < len(cf):
        raise IndexError(f"index: {index} is out of range for {len(cf)} counterfactual(s)")


def _class_name(cf: Counterfactual, index: int) -> str:
    names = cf.info.get("class_names")
    t = int(cf.target[index])
    return str(names[t]) if names and t < len(names) else f"class {t}"


def path_frames(cf: Counterfactual, index: int = 0) -> tuple[Tensor, Tensor]:
    """(frames [T, C, H, W], target probabilities [T]) of query ``index``, padding dropped.

    Without a stored path the two frames reconstruction (or original) -> counterfactual.
    """
    _check_index(cf, index)
    if cf.path is None:
        start = cf.reconstruction if cf.reconstruction is not None else cf.original
        frames = torch.stack([start[index], cf.counterfactual[index]])
        probs = torch.stack([cf.prob_original[index], cf.prob_counterfactual[index]]).float()
        return frames, probs
    n = cf.info.get("n_frames")
    t = int(n[index]) if n is not None else cf.path.shape[0]
    probs = cf.path_probs[:t, index] if cf.path_probs is not None else torch.full((t,), float("nan"))
    return cf.path[:t, index], probs


def gif_frames(cf: Counterfactual, index: int = 0, *, size: int | None = 256,
               loop: str = "forward-back") -> list[np.ndarray]:
    """The RGB uint8 frames ``save_gif`` writes (``forward-back``: T + T - 2 frames)."""
    if loop not in LOOPS:
        raise ValueError(f"loop: expected one of {LOOPS}, got {loop!r}")
    frames, probs = path_frames(cf, index)
    name = _class_name(cf, index)
    out = []
    for f, p in zip(frames, probs.tolist(), strict=True):
        img = _resize(to_uint8(f), size)
        out.append(np.asarray(_label(img, f"p({name}) = {p:.2f}")))
    if loop == "forward-back" and len(out) > 2:
        out = out + out[-2:0:-1]
    return out


def save_gif(cf: Counterfactual, path: str | os.PathLike, *, index: int = 0, fps: float = 10.0,
             size: int | None = 256, loop: str = "forward-back") -> Path:
    """Write query ``index``'s path as a looping GIF with the target probability on each frame.

    Example:
        >>> save_gif(cf, "shift.gif", fps=8, size=256)     # doctest: +SKIP
    """
    import imageio.v3 as iio

    if fps <= 0:
        raise ValueError(f"fps: must be positive, got {fps}")
    frames = gif_frames(cf, index, size=size, loop=loop)
    duration = 1000.0 / fps  # milliseconds per frame
    return atomic_write(path, lambda p: iio.imwrite(p, np.stack(frames), extension=".gif",
                                                    duration=duration, loop=0))


def save_strip(cf: Counterfactual, path: str | os.PathLike, *, index: int = 0, n_frames: int = 6,
               size: int | None = 128) -> Path:
    """Write ``n_frames`` evenly spaced path frames side by side as a PNG (probabilities on top).

    Example:
        >>> save_strip(cf, "strip.png", n_frames=8)     # doctest: +SKIP
    """
    if n_frames < 1:
        raise ValueError(f"n_frames: must be >= 1, got {n_frames}")
    frames, probs = path_frames(cf, index)
    pick = np.unique(np.linspace(0, len(frames) - 1, num=min(n_frames, len(frames))).round().astype(int))
    tiles = [np.asarray(_label(_resize(to_uint8(frames[i]), size), f"{float(probs[i]):.2f}")) for i in pick]
    strip = np.concatenate(tiles, axis=1)
    return atomic_write(path, lambda p: Image.fromarray(strip).save(p, format="PNG"))


HEATMAPS = ("mean_abs", "max", "first_last")


def path_heatmap(cf: Counterfactual, index: int = 0, mode: str = "mean_abs") -> Tensor:
    """Cohen et al.'s path heatmaps of query ``index`` -> [1, H, W] (channels averaged).

    ``mean_abs``: mean absolute frame-to-frame change; ``max``: largest absolute
    change from the first frame; ``first_last``: last frame - first frame (signed).
    """
    if mode not in HEATMAPS:
        raise ValueError(f"mode: expected one of {HEATMAPS}, got {mode!r}")
    frames, _ = path_frames(cf, index)
    frames = frames.float().mean(1)  # [T, H, W]
    if mode == "first_last" or len(frames) < 2:
        return (frames[-1] - frames[0]).unsqueeze(0)
    if mode == "mean_abs":
        return frames.diff(dim=0).abs().mean(0, keepdim=True)
    return (frames - frames[0]).abs().amax(0, keepdim=True)


def overlay_heatmap(image: Tensor, diff: Tensor, *, alpha: float = 0.6, cmap: str = "bwr",
                    scale: float | None = None) -> np.ndarray:
    """Signed difference map over a grayscale image -> uint8 RGB [H, W, 3].

    ``image``: [C, H, W] in [-1, 1]; ``diff``: [1, H, W] or [H, W] signed. Colours
    run from blue (darker in the counterfactual) to red (brighter), scaled by
    ``scale`` or the map's largest magnitude; opacity grows with |diff|.
    """
    from matplotlib import colormaps

    base = _rgb(to_uint8(image if image.shape[0] == 1 else image.mean(0, keepdim=True))).astype(np.float32)
    d = diff.detach().float().cpu()
    d = d[0] if d.ndim == 3 else d
    if d.ndim != 2 or tuple(d.shape) != base.shape[:2]:
        raise ShapeError(f"diff: expected [1, H, W] matching the image {base.shape[:2]}, got {tuple(diff.shape)}")
    m = float(scale) if scale is not None else float(d.abs().max())
    d = (d / m).clamp(-1, 1).numpy() if m > 0 else np.zeros_like(d.numpy())
    colour = colormaps[cmap]((d + 1) / 2)[..., :3] * 255.0
    a = alpha * np.abs(d)[..., None]
    return (base * (1 - a) + colour * a).round().clip(0, 255).astype(np.uint8)


def save_map(cf: Counterfactual, path: str | os.PathLike, *, index: int = 0, size: int | None = 256,
             alpha: float = 0.6) -> Path:
    """Write the difference map of query ``index`` over its original image as a PNG."""
    _check_index(cf, index)
    rgb = overlay_heatmap(cf.original[index], cf.difference[index], alpha=alpha)
    img = _resize(rgb, size)
    return atomic_write(path, lambda p: img.save(p, format="PNG"))


def figure(cf: Counterfactual, index: int = 0):
    """A matplotlib Figure: original, reconstruction, counterfactual, difference (for notebooks).

    Example:
        >>> fig = figure(cf, 0); fig.savefig("cf.png")     # doctest: +SKIP
    """
    from matplotlib.figure import Figure

    _check_index(cf, index)
    p = f"p({_class_name(cf, index)})"
    panels = [("original", cf.original[index], f"{p} = {float(cf.prob_original[index]):.2f}")]
    if cf.reconstruction is not None:
        p_rec = cf.info.get("prob_reconstruction")
        sub = f"{p} = {float(p_rec[index]):.2f}" if p_rec is not None else ""
        panels.append(("reconstruction", cf.reconstruction[index], sub))
    panels.append(("counterfactual", cf.counterfactual[index],
                   f"{p} = {float(cf.prob_counterfactual[index]):.2f}"))
    fig = Figure(figsize=(2.6 * (len(panels) + 1), 3.0), layout="constrained")
    axes = fig.subplots(1, len(panels) + 1)
    for ax, (title, img, sub) in zip(axes, panels, strict=False):
        a = to_uint8(img)
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(f"{title}\n{sub}", fontsize=9)
    d = cf.difference[index, 0].detach().float().cpu().numpy()
    m = float(np.abs(d).max()) or 1.0
    im = axes[-1].imshow(d, cmap="bwr", vmin=-m, vmax=m)
    ref = cf.info.get("reference", "reference")
    axes[-1].set_title(f"difference\n(cf - {ref})", fontsize=9)
    fig.colorbar(im, ax=axes[-1], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"target: {_class_name(cf, index)}", fontsize=10)
    return fig
