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

from medcf.errors import MedcfError, ShapeError
from medcf.io import atomic_write
from medcf.types import Counterfactual

LOOPS = ("forward-back", "forward")
MAX_GIF_FRAMES = 16  # path frames kept in a GIF by default (evenly spaced)
MIN_SIZE = 128  # size=None: pictures are upscaled (by an integer factor) to at least this width
GIF_TOLERANCE = 8  # grey levels a pixel may drift before a GIF frame rewrites it


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
    """Nearest-neighbour resize to width ``size``; None: an integer upscale to >= ``MIN_SIZE``."""
    img = Image.fromarray(_rgb(a))
    if size is None:
        size = img.width * max(1, -(-MIN_SIZE // img.width))
    if size != img.width:
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


def _pick_frames(n: int, k: int) -> np.ndarray:
    """At most ``k`` evenly spaced indices of ``range(n)``, both ends included."""
    return np.unique(np.linspace(0, n - 1, num=max(1, min(k, n))).round().astype(int))


def gif_frames(cf: Counterfactual, index: int = 0, *, size: int | None = None,
               loop: str = "forward-back", max_frames: int | None = MAX_GIF_FRAMES) -> list[np.ndarray]:
    """The RGB uint8 frames ``save_gif`` writes, before duplicates are merged.

    At most ``max_frames`` evenly spaced path frames (None: all), each labelled
    ``p(class) = 0.42``; ``forward-back`` then plays them back (T + T - 2 frames).
    """
    if loop not in LOOPS:
        raise ValueError(f"loop: expected one of {LOOPS}, got {loop!r}")
    if max_frames is not None and max_frames < 2:
        raise ValueError(f"max_frames: must be >= 2 (or None for all), got {max_frames}")
    frames, probs = path_frames(cf, index)
    keep = _pick_frames(len(frames), max_frames or len(frames))
    name = _class_name(cf, index)
    out = []
    for i in keep:
        img = _resize(to_uint8(frames[i]), size)
        out.append(np.asarray(_label(img, f"p({name}) = {float(probs[i]):.2f}")))
    if loop == "forward-back" and len(out) > 2:
        out = out + out[-2:0:-1]
    return out


def _merge_repeats(frames: list[np.ndarray], ms: float) -> tuple[list[np.ndarray], list[int]]:
    """Consecutive identical frames become one frame shown for their summed duration."""
    kept, durations = [frames[0]], [ms]
    for f in frames[1:]:
        if np.array_equal(f, kept[-1]):
            durations[-1] += ms
        else:
            kept.append(f)
            durations.append(ms)
    return kept, [max(20, round(d / 10) * 10) for d in durations]  # GIF stores 1/100 s


def _write_gif(frames: list[np.ndarray], durations: list[int], path: Path, colors: int,
               tolerance: int = GIF_TOLERANCE) -> None:
    """One shared palette, no dithering (dither noise defeats LZW). A pixel keeps the
    previous frame's palette entry while that entry stays within ``tolerance`` grey
    levels of its true colour, so slowly changing frames have large unchanged areas,
    which Pillow's optimiser writes as transparent runs over the kept previous frame."""
    sheet = Image.fromarray(np.concatenate(frames, axis=0))
    palette = sheet.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    table = np.asarray(palette.getpalette()[: 3 * colors], dtype=np.int16).reshape(-1, 3)  # [colors, 3]
    images, previous = [], None
    for f in frames:
        idx = np.asarray(Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE))  # [H, W]
        if previous is not None:
            close = np.abs(table[previous] - f.astype(np.int16)).max(-1) <= tolerance
            idx = np.where(close, previous, idx)
        previous = idx
        im = Image.fromarray(idx.astype(np.uint8), mode="P")
        im.putpalette(palette.getpalette()[: 3 * colors])
        images.append(im)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=durations,
                   loop=0, optimize=True, disposal=1)


def _one_query(cf: Counterfactual, index: int | None, what: str) -> int:
    if index is None:
        if len(cf) != 1:
            raise MedcfError(f"{what}: this Counterfactual holds {len(cf)} queries; pass index=i "
                             f"(0..{len(cf) - 1}) or call it on cf.select(i)")
        index = 0
    _check_index(cf, index)
    return index


def save_gif(cf: Counterfactual, path: str | os.PathLike, *, index: int | None = None,
             fps: float = 10.0, size: int | None = None, loop: str = "forward-back",
             max_frames: int | None = MAX_GIF_FRAMES, colors: int = 256) -> Path | list[Path]:
    """Write a query's path as a looping GIF with the target probability on each frame.

    ``index=None`` on a batch writes every query, numbered (``a.gif`` -> ``a_0.gif``,
    ``a_1.gif``, ...) and returns their paths. At most ``max_frames`` path frames
    (evenly spaced), repeated frames merged, one shared ``colors``-entry palette and
    frame-to-frame deltas: a 64x64 image (``size=None``: shown at 128 px) takes tens of
    KB (about 150 KB at ``size=256``). ``size``: pixel width; None upscales by an
    integer factor to at least ``MIN_SIZE``.

    Example:
        >>> save_gif(cf, "shift.gif", index=0, fps=8, size=256)     # doctest: +SKIP
        >>> save_gif(cf, "shift.gif")   # batch of 8: shift_0.gif .. shift_7.gif  # doctest: +SKIP
    """
    if fps <= 0:
        raise ValueError(f"fps: must be positive, got {fps}")
    if not 2 <= colors <= 256:
        raise ValueError(f"colors: must be in 2..256, got {colors}")
    if index is None and len(cf) > 1:
        p = Path(path)
        width = len(str(len(cf) - 1))
        return [save_gif(cf, p.with_name(f"{p.stem}_{i:0{width}d}{p.suffix}"), index=i, fps=fps, size=size,
                         loop=loop, max_frames=max_frames, colors=colors) for i in range(len(cf))]
    index = _one_query(cf, index, "save_gif")
    frames, durations = _merge_repeats(gif_frames(cf, index, size=size, loop=loop, max_frames=max_frames),
                                       1000.0 / fps)
    return atomic_write(path, lambda p: _write_gif(frames, durations, Path(p), colors))


def strip_labels(cf: Counterfactual, index: int = 0, n_frames: int = 6) -> tuple[str, list[int], list[str]]:
    """(title, path frame of each tile after the input, tile labels) of ``save_strip``.

    The first tile is the input; the others are evenly spaced path frames after the start.
    """
    frames, probs = path_frames(cf, index)
    after = _pick_frames(len(frames), n_frames)[1:] if len(frames) > 1 else np.zeros(0, dtype=int)
    if len(after) < n_frames - 1 and len(frames) > 1:  # short path: every frame after the start
        after = np.arange(1, len(frames))[: n_frames - 1]
    name = _class_name(cf, index)
    labels = [f"input: {float(cf.prob_original[index]):.2f}"] + [f"{float(probs[i]):.2f}" for i in after]
    return f"p({name}): input, then along the path", [int(i) for i in after], labels


def save_strip(cf: Counterfactual, path: str | os.PathLike, *, index: int = 0, n_frames: int = 6,
               size: int | None = 128) -> Path:
    """Write the input then ``n_frames - 1`` path frames side by side as a PNG.

    A title band names the class (``p(cardiomegaly): ...``); each tile carries its probability.

    Example:
        >>> save_strip(cf, "strip.png", n_frames=8)     # doctest: +SKIP
    """
    if n_frames < 2:
        raise ValueError(f"n_frames: must be >= 2 (the input and one path frame), got {n_frames}")
    index = _one_query(cf, index, "save_strip")
    frames, _ = path_frames(cf, index)
    title, after, labels = strip_labels(cf, index, n_frames)
    images = [cf.original[index]] + [frames[i] for i in after]
    tiles = [np.asarray(_label(_resize(to_uint8(im), size), text)) for im, text in zip(images, labels, strict=True)]
    row = np.concatenate(tiles, axis=1)
    font = _font(row.shape[0])
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    band = Image.new("RGB", (row.shape[1], draw.textbbox((0, 0), title, font=font)[3] + 5), (0, 0, 0))
    ImageDraw.Draw(band).text((2, 2), title, fill=(255, 255, 0), font=font)
    strip = np.concatenate([np.asarray(band), row], axis=0)
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
    """Write ``figure(cf, index)`` as a PNG: the panels, the signed difference with its
    colour bar and legend, and a title naming the target class.

    ``size``: about the pixel width of one panel; ``alpha``: opacity of the difference
    overlay panel. Example: ``save_map(cf, "out/map.png", index=0)``
    """
    index = _one_query(cf, index, "save_map")
    fig = figure(cf, index, alpha=alpha)
    dpi = max(50, (size or 256) / 2.4)  # panels are about 2.4 inches wide
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi))


def figure(cf: Counterfactual, index: int = 0, *, alpha: float = 0.6):
    """A matplotlib Figure: original, reconstruction, counterfactual, the signed difference
    (colour bar) and the difference over the input, a legend and a title naming the class.

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
    fig = Figure(figsize=(2.4 * (len(panels) + 2) + 0.4, 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels) + 2)
    for ax, (title, img, sub) in zip(axes, panels, strict=False):
        a = to_uint8(img)
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(f"{title}\n{sub}", fontsize=9)
    d = cf.difference[index, 0].detach().float().cpu().numpy()
    m = float(np.abs(d).max()) or 1.0
    im = axes[-2].imshow(d, cmap="bwr", vmin=-m, vmax=m)
    ref = cf.info.get("reference", "reference")
    axes[-2].set_title(f"difference\n(cf - {ref})", fontsize=9)
    fig.colorbar(im, ax=axes[-2], fraction=0.046, label="intensity change")
    axes[-1].imshow(overlay_heatmap(cf.original[index], cf.difference[index], alpha=alpha, scale=m))
    axes[-1].set_title("difference\nover the input", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"counterfactual towards '{_class_name(cf, index)}'", fontsize=10)
    fig.supxlabel(f"red: brighter in the counterfactual, blue: darker (scale +/-{m:.2g} in [-1, 1] units)",
                  fontsize=8)
    return fig
