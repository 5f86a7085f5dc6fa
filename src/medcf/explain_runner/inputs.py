"""What an explainer is run on: images opened for its generator, targets, and batches.

Example:
    >>> ds = open_images("scan.png", explainer)                                        # doctest: +SKIP
    >>> for cf, batch in explain_dataset(explainer, ds, target="opposite"):            # doctest: +SKIP
    ...     print(cf.flipped.tolist())
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from medcf.counterfactual.checkpoints import setting_error
from medcf.errors import DataError, ShapeError
from medcf.explain_runner.builders import explainer_input_shape
from medcf.io import unique_stems
from medcf.types import Counterfactual, Explainer, Target, reaches

OPPOSITE = "opposite"  # target meaning "the other class than the classifier's decision"


def open_images(path: str | os.PathLike, explainer: Any = None, *, channels: int | None = None,
                resolution: int | None = None, split: str | None = None,
                convert_channels: bool = False) -> Dataset:
    """Open ``--images``: an image file, a folder of images or a dataset, sized for the generator.

    Images are resized to the generator's resolution. When their channel count
    differs from the generator's, a one-line ``ShapeError`` is raised unless
    ``convert_channels`` (RGB -> luminance, or grey repeated to RGB).

    Example:
        >>> ds = open_images("scan.png", explainer)                 # doctest: +SKIP
        >>> ds = open_images("data/synth64", explainer, split="test")  # doctest: +SKIP
    """
    from medcf.data import open_dataset

    if explainer is not None:
        e_ch, e_res = explainer_input_shape(explainer)
        channels = channels if channels is not None else e_ch
        resolution = resolution if resolution is not None else e_res
    p = Path(path)
    if not p.exists():
        raise setting_error("images", f"{p}: not found", DataError)
    ds = open_dataset(p, split=split, resolution=resolution)
    native = int(getattr(ds, "channels", ds[0]["image"].shape[0]))
    if channels is not None and native != channels:
        if not convert_channels:
            raise setting_error("convert_channels", f"{p}: images have {native} channel(s) but the generator "
                                f"expects {channels}; convert them, or allow the conversion", ShapeError)
        ds = open_dataset(p, split=split, resolution=resolution, channels=channels)
    if len(ds) == 0:
        raise DataError(f"{p}: no images")
    return ds


def image_name(dataset: Dataset, index: int) -> str:
    """A file stem for item ``index``: the source file's stem when known (made unique across the
    dataset, e.g. ``healthy_001`` / ``sick_001``), else a zero-padded index."""
    base, i = dataset, index
    while isinstance(base, Subset):
        i = int(base.indices[i])
        base = base.dataset
    files = getattr(base, "files", None)
    if files is not None and 0 <= i < len(files):
        names = getattr(base, "_output_names", None)
        if names is None or len(names) != len(files):  # computed once per dataset
            names = unique_stems(files)  # class folders may hold the same file name twice
            try:
                base._output_names = names
            except AttributeError:
                pass
        return names[i]
    return f"{i:06d}"


class _TensorImages(Dataset):
    """A tensor [N, C, H, W] as sample dicts (label -1: unknown)."""

    def __init__(self, images: Tensor):
        if not isinstance(images, Tensor) or images.ndim != 4:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ShapeError(f"images: expected a [N, C, H, W] tensor, got {got}")
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.images[i], "label": torch.tensor(-1), "index": torch.tensor(i)}


def _classifier_of(explainer: Any) -> nn.Module:
    clf = getattr(explainer, "classifier", None)
    if clf is None:
        raise ValueError(f"{type(explainer).__name__}: has no .classifier; pass an explicit target")
    return clf


@torch.no_grad()
def opposite_targets(classifier: nn.Module, x: Tensor) -> Tensor:
    """[B] the class other than the classifier's decision (binary classifiers only)."""
    was = classifier.training
    classifier.eval()
    try:
        logits = classifier(x)
    finally:
        classifier.train(was)
    if logits.ndim != 2 or logits.shape[1] > 2:
        raise setting_error("target", f"'opposite' needs a binary classifier; this one returns "
                            f"{tuple(logits.shape[1:])} outputs; name the class to reach")
    # the one decision rule: a single sigmoid logit decides class 1 at p >= 0.5 (logit >= 0)
    decision = reaches(torch.sigmoid(logits[:, 0].float()), 0.5).long() if logits.shape[1] == 1 else logits.argmax(1)
    return 1 - decision


def resolve_cli_target(target: str | int | None, class_names) -> str | int:
    """Target text (the CLI's ``--target``) -> 'opposite', a class index, or a class name of the classifier."""
    if target is None or target == OPPOSITE:
        return OPPOSITE
    if isinstance(target, int):
        return target
    names = list(class_names or [])
    if target in names:
        return target
    if target.lstrip("-").isdigit():
        return int(target)
    raise setting_error("target", f"{target!r} is not a class of the classifier; choose one of "
                        f"{names + [OPPOSITE]}")


def explain_dataset(explainer: Explainer, data: Dataset | Tensor, target: Target | str = OPPOSITE,
                    batch_size: int = 16, *, limit: int | None = None, progress: bool = True,
                    device: str | torch.device | None = None,
                    ) -> Iterator[tuple[Counterfactual, dict[str, Tensor]]]:
    """Explain every item of ``data`` in batches; yields ``(Counterfactual, batch)`` pairs.

    ``target``: a class index or name, a [N] tensor, or ``"opposite"`` (default: per query,
    the class the classifier did not choose). ``batch`` is the sample-dict batch the
    counterfactual was made from (ground-truth keys included for synthetic data).

    Example:
        >>> for cf, batch in explain_dataset(ls, open_dataset("data", split="test"), limit=32):  # doctest: +SKIP
        ...     print(cf.flipped.float().mean())
    """
    from medcf.eval.ood import find_profile, mark_ood
    from medcf.progress import tqdm  # a live bar on a terminal, plain lines in a log

    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    ds = _TensorImages(data) if isinstance(data, Tensor) else data
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit: must be >= 1, got {limit}")
        ds = Subset(ds, range(min(limit, len(ds))))
    per_query = isinstance(target, Tensor) and target.numel() > 1
    if per_query and target.numel() < len(ds):
        raise ShapeError(f"target: {target.numel()} class indices for {len(ds)} images")
    if device is None:
        clf = getattr(explainer, "classifier", None)
        p = next(clf.parameters(), None) if isinstance(clf, nn.Module) else None
        device = p.device if p is not None else "cpu"
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    found = find_profile(explainer)  # the training distribution's reconstruction errors, if recorded
    start = 0
    with tqdm(total=len(ds), desc="explain", unit="img", disable=not progress) as bar:
        for batch in loader:
            x = batch["image"].to(device)
            b = x.shape[0]
            if isinstance(target, str) and target == OPPOSITE:
                t = opposite_targets(_classifier_of(explainer), x)
            elif per_query:
                t = target.reshape(-1)[start:start + b].to(device)
            else:
                t = target
            cf = explainer.explain(x, t)
            if found is not None:
                mark_ood(cf, found.profile, where=str(found.where), reconstruct=found.reconstruct)
            start += b
            bar.update(b)
            yield cf, batch


__all__ = ["OPPOSITE", "explain_dataset", "image_name", "open_images", "opposite_targets", "resolve_cli_target"]
