"""The end-to-end explanation path: checkpoints -> explainer -> batches of counterfactuals -> files.

Pieces, each usable on its own:

- ``build_explainer``: the method table (``medcf.counterfactual.registry.METHODS``) turns
  checkpoint paths into a ready explainer;
- ``open_images``: a single image file, a folder of images or any dataset path
  ``medcf.data.open_dataset`` understands, resized to the generator's resolution;
  a channel mismatch is a one-line ``ShapeError`` unless ``convert_channels=True``;
- ``explain_dataset``: iterate a dataset (or a tensor of images) in batches with a
  ``tqdm.auto`` bar, yielding ``(Counterfactual, sample-dict batch)`` pairs;
- ``write_explanation``: one query's GIF, frame strip, difference map and JSON of
  probabilities (atomic writes, via ``medcf.viz``).

Example:
    >>> from medcf.explain_runner import build_explainer, open_images, explain_dataset
    >>> explainer = build_explainer("latent-shift", "runs/demo/classifier", "runs/demo/vae")  # doctest: +SKIP
    >>> ds = open_images("xrays/", explainer)                                        # doctest: +SKIP
    >>> for cf, batch in explain_dataset(explainer, ds, target="opposite"):          # doctest: +SKIP
    ...     print(cf.flipped.tolist())
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from medcf.errors import CheckpointError, DataError, MedcfError, ShapeError
from medcf.io import atomic_write_text, read_header
from medcf.types import Counterfactual, Explainer, Target

log = logging.getLogger(__name__)

EXPLAINABLE_KINDS = ("classifier", "oracle")  # checkpoint kinds that decide a class label
OPPOSITE = "opposite"  # target meaning "the other class than the classifier's decision"


# ----------------------------------------------------------------------------- builders


def load_explained_classifier(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """The classifier to explain from a model or run directory (kind classifier or oracle)."""
    from medcf.classifiers import load_classifier

    header = read_header(path)
    if header["kind"] not in EXPLAINABLE_KINDS:
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint; --classifier "
                              f"needs one of {list(EXPLAINABLE_KINDS)}")
    return load_classifier(header["path"], device=device)


def _generator_shape(generator: Any) -> tuple[int | None, int | None]:
    """(channels, resolution) of a generator's images: ``config.channels``/``resolution``
    (autoencoders, encoders) or ``img_channels``/``img_resolution`` (StyleGAN2); None when unknown."""
    cfg = getattr(generator, "config", None)
    for ch, res in (("channels", "resolution"), ("img_channels", "img_resolution")):
        for owner in (cfg, generator):
            c, r = getattr(owner, ch, None), getattr(owner, res, None)
            if isinstance(c, int) and isinstance(r, int):
                return c, r
    return None, None


def _check_pair(classifier: nn.Module, generator: Any, classifier_dir, generator_dir) -> None:
    """The classifier must read the images the generator makes (channels, resolution)."""
    g_ch, g_res = _generator_shape(generator)
    c_ch, c_res = getattr(classifier, "in_channels", None), getattr(classifier, "resolution", None)
    if None not in (g_ch, c_ch) and g_ch != c_ch:
        raise ShapeError(f"{generator_dir}: generator makes {g_ch}-channel images but the classifier "
                         f"{classifier_dir} expects {c_ch}")
    if None not in (g_res, c_res) and g_res != c_res:
        raise ShapeError(f"{generator_dir}: generator makes {g_res}x{g_res} images but the classifier "
                         f"{classifier_dir} expects {c_res}x{c_res}")


def build_latent_shift(classifier_dir: str | os.PathLike, generator_dir: str | os.PathLike, *,
                       device: str | torch.device = "cpu", **opts) -> Explainer:
    """A ``LatentShift`` explainer from a classifier run and an ``ae``/``vae`` run.

    ``opts`` are ``LatentShiftConfig`` fields (``iterative``, ``direction``, ``step_size``,
    ``max_steps``, ``max_change``, ``threshold``, ...); None values keep the defaults.

    Example:
        >>> ls = build_latent_shift("runs/demo/classifier", "runs/demo/vae", iterative=True)  # doctest: +SKIP
    """
    import dataclasses

    from medcf.counterfactual.latent_shift import LatentShift, LatentShiftConfig
    from medcf.generators.autoencoder import load_autoencoder

    fields = {f.name for f in dataclasses.fields(LatentShiftConfig)}
    unknown = sorted(k for k in opts if k not in fields)
    if unknown:
        raise ValueError(f"latent-shift: unknown option(s) {unknown}; known: {sorted(fields)}")
    classifier = load_explained_classifier(classifier_dir, device=device)
    header = read_header(generator_dir)
    if header["kind"] not in ("ae", "vae"):
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint; latent-shift "
                              "needs an 'ae' or 'vae' generator (medcf train vae)")
    generator = load_autoencoder(header["path"], device=device)
    _check_pair(classifier, generator, classifier_dir, generator_dir)
    config = LatentShiftConfig(**{k: v for k, v in opts.items() if v is not None})
    return LatentShift(autoencoder=generator, classifier=classifier, config=config)


def build_latent_probe_method(classifier_dir: str | os.PathLike, generator_dir: str | os.PathLike, *,
                              encoder: str | os.PathLike | None = None,
                              probe_dir: str | os.PathLike | None = None,
                              fit_samples: int | None = None, seed: int = 0,
                              step_size: float | None = None, max_steps: int | None = None,
                              threshold: float | None = None, project_steps: int | None = None,
                              take_at: float | None = None, compose: str | None = None,
                              device: str | torch.device = "cpu", progress: bool = True) -> Explainer:
    """A fitted latent-probe explainer (StyleGAN2 generator, optional encoder; see
    ``medcf.counterfactual.latent_probe.build_latent_probe``); the probe is loaded from
    ``probe_dir`` when it holds one, else fitted (and saved there).

    ``step_size`` (λ per frame, in σ units) and ``max_steps`` (frames searched, so
    ``max_lambda = max_steps * step_size``) set the walk; None keeps ``LatentProbeConfig``'s.
    ``project_steps``: projector refinement (default 0 with an encoder, 300 without).
    ``take_at`` and ``compose`` ("generated" | "residual") as in ``LatentProbeConfig``.

    Example:
        >>> lp = build_latent_probe_method("runs/classifier", "runs/stylegan2", encoder="runs/encoder",
        ...                                probe_dir="runs/probe", fit_samples=5000)   # doctest: +SKIP
    """
    import dataclasses

    from medcf.counterfactual.latent_probe import LatentProbeConfig, build_latent_probe
    from medcf.encoders.generator_io import GENERATOR_KIND

    classifier = load_explained_classifier(classifier_dir, device=device)
    header = read_header(generator_dir)
    if header["kind"] != GENERATOR_KIND:
        raise CheckpointError(f"{header['path']}: is a '{header['kind']}' checkpoint; latent-probe needs a "
                              f"'{GENERATOR_KIND}' generator (medcf train stylegan2)")
    if encoder is not None:
        enc_header = read_header(encoder)
        if enc_header["kind"] != "stylegan2-encoder":
            raise CheckpointError(f"{enc_header['path']}: is a '{enc_header['kind']}' checkpoint; --encoder "
                                  "needs a 'stylegan2-encoder' (medcf train encoder)")
    gcfg = header.get("config") or {}
    _check_pair(classifier, SimpleNamespace(channels=gcfg.get("img_channels"), resolution=gcfg.get("img_resolution")),
                classifier_dir, generator_dir)
    config = None
    if any(v is not None for v in (step_size, max_steps, threshold, take_at, compose)):
        base = LatentProbeConfig()
        step = step_size if step_size is not None else base.step_size
        fields = {"step_size": step}
        if take_at is not None:
            fields["take_at"] = take_at
        if compose is not None:
            fields["compose"] = compose
        if max_steps is not None:
            if max_steps < 1:
                raise MedcfError(f"--max-steps: must be >= 1, got {max_steps}")
            fields["max_lambda"] = max_steps * step
        if threshold is not None:
            fields["threshold"] = threshold
            if base.stop_probability is not None and base.stop_probability < threshold:
                fields["stop_probability"] = threshold
        try:
            config = dataclasses.replace(base, **fields)
        except ValueError as e:
            raise MedcfError(f"latent-probe: {e}") from None
    if project_steps is not None and project_steps < 0:
        raise MedcfError(f"--project-steps: must be >= 0, got {project_steps}")
    kwargs = {"fit_samples": fit_samples} if fit_samples is not None else {}
    return build_latent_probe(header["path"], classifier, encoder, probe_dir, seed=seed, device=device,
                              config=config, project_steps=project_steps, progress=progress, **kwargs)


def build_explainer(method: str, classifier_dir, generator_dir, **opts) -> Explainer:
    """``METHODS[method](classifier_dir, generator_dir, **opts)`` with a one-line error for a typo.

    Options the method does not take are dropped (a warning names those that were set).
    """
    from medcf.counterfactual.registry import METHODS

    if method not in METHODS:
        raise MedcfError(f"--method: unknown method {method!r}; choose one of {sorted(METHODS)}")
    if opts.get("direction") is not None and method != "latent-shift":
        raise MedcfError(f"--away-from: not supported by --method {method}")
    spec = METHODS[method]
    ignored = sorted(k for k, v in opts.items()
                     if k not in spec.options and k != "progress" and v not in (None, False))
    if ignored:
        log.warning("%s ignores option(s) %s", method, ignored)
    opts = {k: v for k, v in opts.items() if k in spec.options and v is not None}
    return spec.build(classifier_dir, generator_dir, **opts)


# ----------------------------------------------------------------------------- inputs


def explainer_input_shape(explainer: Any) -> tuple[int | None, int | None]:
    """(channels, resolution) the explainer's generator works at (None when unknown)."""
    for owner in ("autoencoder", "generator", "encoder"):
        ch, res = _generator_shape(getattr(explainer, owner, None))
        if ch is not None:
            return ch, res
    clf = getattr(explainer, "classifier", None)
    return getattr(clf, "in_channels", None), getattr(clf, "resolution", None)


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
        raise DataError(f"{p}: --images not found")
    ds = open_dataset(p, split=split, resolution=resolution)
    native = int(getattr(ds, "channels", ds[0]["image"].shape[0]))
    if channels is not None and native != channels:
        if not convert_channels:
            raise ShapeError(f"{p}: images have {native} channel(s) but the generator expects "
                             f"{channels}; convert them or pass --convert-channels")
        ds = open_dataset(p, split=split, resolution=resolution, channels=channels)
    if len(ds) == 0:
        raise DataError(f"{p}: no images")
    return ds


def image_name(dataset: Dataset, index: int) -> str:
    """A file stem for item ``index``: the source file's stem when known, else a zero-padded index."""
    base, i = dataset, index
    while isinstance(base, Subset):
        i = int(base.indices[i])
        base = base.dataset
    files = getattr(base, "files", None)
    if files is not None and 0 <= i < len(files):
        return Path(files[i]).stem
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


# ----------------------------------------------------------------------------- explaining


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
        raise ValueError(f"target 'opposite' needs a binary classifier; this one returns "
                         f"{tuple(logits.shape[1:])} outputs; pass --target CLASS")
    decision = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    return 1 - decision


def resolve_cli_target(target: str | int | None, class_names) -> str | int:
    """``--target`` text -> 'opposite', a class index, or a class name known to the classifier."""
    if target is None or target == OPPOSITE:
        return OPPOSITE
    if isinstance(target, int):
        return target
    names = list(class_names or [])
    if target in names:
        return target
    if target.lstrip("-").isdigit():
        return int(target)
    raise ValueError(f"--target: {target!r} is not a class of the classifier; choose one of "
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
    from tqdm.auto import tqdm

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
            start += b
            bar.update(b)
            yield cf, batch


# ----------------------------------------------------------------------------- per-query files


def json_safe(obj: Any) -> Any:
    """Containers of plain values with non-finite floats as None (strict JSON).

    An infinite pixel budget (``max_change=inf``) means no budget, i.e. None in the config.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _num(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _pick(info: dict, key: str, i: int):
    v = info.get(key)
    if isinstance(v, (list, tuple)) and len(v) > i:
        v = v[i]
    elif isinstance(v, Tensor):
        v = v.reshape(-1)[i].item() if v.numel() > 1 else v.item()
    return v


def query_record(cf: Counterfactual, i: int, *, name: str, source: str | None = None) -> dict:
    """The JSON-able facts of query ``i``: probabilities along the path, flip, λ, time."""
    info = cf.info if isinstance(cf.info, dict) else {}
    names = info.get("class_names")
    t = int(cf.target[i])
    rec: dict[str, Any] = {
        "name": name,
        "source": source,
        "method": info.get("method"),
        "target": t,
        "target_name": str(names[t]) if names and t < len(names) else None,
        "prob_original": _num(cf.prob_original[i]),
        "prob_counterfactual": _num(cf.prob_counterfactual[i]),
        "prob_reconstruction": _pick(info, "prob_reconstruction", i),
        "threshold": cf.threshold,
        "flipped": bool(cf.flipped[i]),
        "found": _pick(info, "found", i),
        "lambda": _pick(info, "lambda", i),
        "stop_reason": _pick(info, "stop_reason", i),
    }
    if cf.path_probs is not None:
        n = _pick(info, "n_frames", i)
        probs = cf.path_probs[:, i]
        probs = probs[: int(n)] if n is not None else probs
        rec["path_probs"] = [round(float(p), 6) for p in probs]
    for key in ("inversion", "inversion_l1", "latent_distance", "probe_accuracy"):  # latent-probe facts
        if key in info:
            rec[key] = _pick(info, key, i)
    seconds = info.get("seconds")
    if isinstance(seconds, (int, float)):
        rec["seconds"] = float(seconds) / len(cf)  # batch total split evenly
        rec["batch_seconds"] = float(seconds)
        rec["batch_size"] = len(cf)
    elif seconds is not None:
        rec["seconds"] = _pick(info, "seconds", i)
    rec["settings"] = info.get("settings")
    return rec


def write_explanation(cf: Counterfactual, i: int, out_dir: str | os.PathLike, name: str, *,
                      source: str | None = None, fps: float = 8.0, size: int = 256) -> dict:
    """Write NAME.gif, NAME_strip.png, NAME_map.png and NAME.json for query ``i``; returns the record.

    Example:
        >>> write_explanation(cf, 0, "out", "patient01")     # doctest: +SKIP
    """
    from medcf import viz

    out = Path(out_dir)
    files = {"gif": f"{name}.gif", "strip": f"{name}_strip.png", "map": f"{name}_map.png",
             "json": f"{name}.json"}
    viz.save_gif(cf, out / files["gif"], index=i, fps=fps, size=size)
    viz.save_strip(cf, out / files["strip"], index=i, n_frames=6, size=min(size, 128))
    viz.save_map(cf, out / files["map"], index=i, size=size)
    rec = query_record(cf, i, name=name, source=source)
    rec["files"] = files
    atomic_write_text(out / files["json"], json.dumps(json_safe(rec), indent=2) + "\n")
    return rec


def check_out_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse a non-empty output folder unless ``overwrite`` (one-line ``MedcfError``)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise MedcfError(f"{p}: --out exists and is not a folder")
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise MedcfError(f"{p}: --out is not empty; pass --overwrite to write into it")
    p.mkdir(parents=True, exist_ok=True)
    return p


# ----------------------------------------------------------------------------- evaluation


def dataset_task(dataset: Dataset) -> str | None:
    """The synthetic task ("cardiomegaly" | "opacity") of a dataset, when it says one."""
    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    info = getattr(base, "info", None)
    task = info.get("task") if isinstance(info, dict) else getattr(getattr(base, "config", None), "task", None)
    return task if task in ("cardiomegaly", "opacity") else None


def _reference_images(dataset: Dataset, classes: set[int] | None, limit: int) -> Tensor:
    """Up to ``limit`` real images [N, C, H, W] of ``dataset`` whose label is in ``classes``."""
    labels = getattr(dataset, "labels", None)
    idx = range(len(dataset))
    if classes is not None and labels is not None:
        idx = [i for i in idx if int(labels[i]) in classes]
    idx = list(idx)[:limit]
    if not idx:
        return torch.empty(0)
    return torch.stack([dataset[i]["image"] for i in idx])


def evaluate_explainer(
    explainer: Explainer,                      # e.g. build_latent_shift(...)
    dataset: Dataset,                          # labelled evaluation images (sample dicts)
    *,
    target: Target | str = OPPOSITE,           # class index/name or "opposite" per query
    oracle: nn.Module | None = None,
    fo_detector: nn.Module | None = None,
    ctr_regressor: nn.Module | None = None,
    fid: str | None = "domain",                # "domain" (oracle features), "inception" or None
    inception_weights: str | os.PathLike | None = None,
    fid_reference: int = 1000,                 # real images of the target class(es) for FID
    lpips: Any = None,                         # a medcf.eval.LPIPS or None
    limit: int | None = None,
    batch_size: int = 16,
    n_examples: int = 8,                       # counterfactuals kept for the report's figure
    progress: bool = True,
) -> tuple[dict, list[dict], list[Counterfactual]]:
    """Explain ``dataset`` and score the counterfactuals with ``medcf.eval.evaluate_counterfactuals``.

    Returns ``(summary, rows, examples)``: the metric summary, one row per query and the
    first ``n_examples`` queries as single-query counterfactuals (for figures). Batches
    stream: memory stays flat however many queries are scored.

    Example:
        >>> summary, rows, ex = evaluate_explainer(ls, open_dataset("data", split="test"),
        ...                                        oracle=oracle, limit=64)   # doctest: +SKIP
    """
    from collections import deque

    from medcf.eval import evaluate_counterfactuals

    fid_extractor: Any = None
    real = None
    if fid == "domain":
        if oracle is None:
            log.warning("FID skipped: the domain extractor needs an oracle")
        else:
            fid_extractor = oracle
    elif fid == "inception":
        fid_extractor = "inception"
    elif fid not in (None, "none"):
        raise ValueError(f"fid: expected 'domain', 'inception' or None, got {fid!r}")
    if fid_extractor is not None:
        classes = None
        clf = getattr(explainer, "classifier", None)
        if not (isinstance(target, str) and target == OPPOSITE) and not isinstance(target, Tensor):
            from medcf.types import resolve_target

            names = getattr(clf, "class_names", None)
            classes = {int(resolve_target(target, 1, class_names=names)[0])}
        real = _reference_images(dataset, classes, fid_reference)
        if real.shape[0] < 2:
            log.warning("FID skipped: fewer than 2 real reference images")
            fid_extractor, real = None, None

    pending: deque = deque()
    examples: list[Counterfactual] = []

    def cf_stream():
        for cf, batch in explain_dataset(explainer, dataset, target, batch_size, limit=limit,
                                         progress=progress):
            pending.append(batch)
            for i in range(len(cf)):
                if len(examples) < n_examples:
                    examples.append(cf.select(i))
            yield cf

    class _GT:
        def __iter__(self):
            return self

        def __next__(self):
            if not pending:
                raise StopIteration
            return pending.popleft()

    summary, rows = evaluate_counterfactuals(
        cf_stream(), classifier=_classifier_of(explainer), oracle=oracle,
        fo_detector=fo_detector, ctr_regressor=ctr_regressor, fid_extractor=fid_extractor,
        real_target_images=real, gt=_GT(), lpips=lpips, task=dataset_task(dataset),
        inception_weights=inception_weights)
    return summary, rows, examples
