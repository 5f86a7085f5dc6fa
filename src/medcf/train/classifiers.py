"""Training recipes for the five classifier kinds on the shared engine.

``train_classifier(data, out_dir, role=...)`` trains one ResNet role, evaluates it
on the test split, stores the test figures in the model's ``meta["test"]`` and
returns them.  Roles and their losses:

- ``classifier`` / ``oracle``: cross-entropy on ``label`` (the oracle defaults to
  another seed and wider stages: an independent judge);
- ``fo-detector``: binary cross-entropy on ``fo_flags`` (one sigmoid per object);
- ``ctr-regressor``: mean squared error on ``ctr``;
- ``cpr-scorer``: binary cross-entropy on ``blunted`` (synthetic ``effusion`` data):
  one logit of a blunted costophrenic recess.

Augmentation is a small random shift (up to ``resolution // 32`` px, border
padding) and light Gaussian noise; never flips (the heart sits on one side).
The learning rate follows a linear warm-up then cosine decay computed from the
step, so a resumed run continues exactly.

Example:
    >>> res = train_classifier("data/synth64", "runs/classifier")   # doctest: +SKIP
    >>> res.test["accuracy"]                                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from medcf.classifiers.resnet import CLASSIFIERS, ResNetClassifier, ResNetConfig, load_classifier
from medcf.errors import DataError, MedcfError
from medcf.io import read_header
from medcf.train.schedules import warmup_cosine

log = logging.getLogger(__name__)

ROLES = ("classifier", "oracle", "fo-detector", "ctr-regressor", "cpr-scorer")
FO_NAMES_DEFAULT = ("pacemaker", "electrodes", "marker")


@dataclass(frozen=True)
class RoleRecipe:
    """Defaults of one role; every field can be overridden in ``train_classifier``."""

    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    seed: int
    steps: int
    lr: float
    target: str          # sample-dict key the head predicts
    monitor: str         # headline test figure


RECIPES: dict[str, RoleRecipe] = {
    "classifier": RoleRecipe((8, 16, 32, 64), (1, 1, 1, 1), 0, 1000, 3e-3, "label", "accuracy"),
    "oracle": RoleRecipe((12, 24, 48, 96), (1, 1, 1, 1), 1, 700, 3e-3, "label", "accuracy"),
    "fo-detector": RoleRecipe((8, 16, 32, 64), (1, 1, 1, 1), 2, 400, 3e-3, "fo_flags", "macro_f1"),
    "ctr-regressor": RoleRecipe((8, 16, 32, 64), (1, 1, 1, 1), 3, 1200, 3e-3, "ctr", "mae"),
    "cpr-scorer": RoleRecipe((8, 16, 32, 64), (1, 1, 1, 1), 4, 600, 3e-3, "blunted", "accuracy"),
}


@dataclass(frozen=True)
class TrainedClassifier:
    """What a recipe returns: where the model is and its test figures."""

    model_dir: Path
    role: str
    test: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


# ----------------------------------------------------------------------------- data


def _open(data, split: str, resolution: int | None) -> Dataset:
    from medcf.data import open_dataset

    return open_dataset(data, split=split, resolution=resolution)


def _datasets(data, val_data, test_data, resolution):
    """(train, val, test) datasets from a path (its splits) or given Dataset objects."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise DataError(f"{path}: data directory not found")
        # `data` itself, not `path`: a medcf.data.DataOptions carries split fractions and fit
        train = _open(data, "train", resolution)
        val = val_data if val_data is not None else _open_optional(data, "val", resolution)
        test = test_data if test_data is not None else _open_optional(data, "test", resolution)
        return train, val, test
    return data, val_data, test_data


def _open_optional(path: Path, split: str, resolution: int | None) -> Dataset | None:
    """The ``split`` of ``path``, or None (with a warning) when the data has no such split."""
    try:
        ds = _open(path, split, resolution)
    except DataError as e:
        log.warning("%s: no %s split (%s); continuing without it", path, split, e)
        return None
    return ds if len(ds) > 0 else None


def _dataset_facts(ds: Dataset) -> tuple[int, int, tuple[str, ...]]:
    """(channels, resolution, class_names) of a dataset following the sample-dict contract."""
    base = ds.dataset if isinstance(ds, Subset) else ds
    try:
        channels, resolution = int(base.channels), int(base.resolution)
        names = tuple(base.class_names)
    except AttributeError:
        image = ds[0]["image"]
        channels, resolution = int(image.shape[0]), int(image.shape[-1])
        names = tuple(getattr(base, "class_names", ("class0", "class1")))
    return channels, resolution, names


def _fo_names(ds: Dataset) -> tuple[str, ...]:
    base = ds.dataset if isinstance(ds, Subset) else ds
    names = getattr(base, "fo_names", None)
    if names:
        return tuple(names)
    try:
        from medcf.data.synthetic import FO_NAMES

        return tuple(FO_NAMES)
    except ImportError:  # pragma: no cover - synthetic module is part of medcf
        return FO_NAMES_DEFAULT


def _check_target(ds: Dataset, role: str, where: str) -> None:
    key = RECIPES[role].target
    sample = ds[0]
    if key not in sample:
        raise DataError(f"{where}: samples have no '{key}' (needed by the {role} role; "
                        f"use a medcf synthetic dataset)")
    base = ds.dataset if isinstance(ds, Subset) else ds
    task = getattr(base, "task", None) or getattr(getattr(base, "config", None), "task", None)
    if role == "cpr-scorer" and task not in (None, "effusion"):
        raise DataError(f"{where}: the cpr-scorer needs synthetic effusion data (every recess is "
                        f"sharp in task {task!r}; medcf data synth --task effusion)")


# ----------------------------------------------------------------------------- loss, augmentation


def _targets(batch: dict[str, Tensor], role: str, device) -> Tensor:
    y = batch[RECIPES[role].target].to(device)
    if role in ("classifier", "oracle"):
        return y.long().view(-1)
    if role == "fo-detector":
        return y.float()
    return y.float().view(-1, 1)  # ctr-regressor, cpr-scorer: [B, 1]


def _loss(out: Tensor, y: Tensor, role: str) -> Tensor:
    if role in ("classifier", "oracle"):
        return F.cross_entropy(out, y)
    if role in ("fo-detector", "cpr-scorer"):
        return F.binary_cross_entropy_with_logits(out, y)
    return F.mse_loss(out, y)


def augment(x: Tensor, generator: torch.Generator, *, max_shift: int, noise: float) -> Tensor:
    """Random integer shift of up to ``max_shift`` px (border padding) and Gaussian noise.

    [B, C, H, W] -> [B, C, H, W]; no flips (anatomy is not mirror-symmetric).
    """
    b, _, h, w = x.shape
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator,
                               device=generator.device).cpu()
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = 1.0
        theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = shifts[:, 0].float() * 2.0 / w
        theta[:, 1, 2] = shifts[:, 1].float() * 2.0 / h
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)
    if noise > 0:
        eps = torch.randn(x.shape, generator=generator, device=generator.device)
        x = x + noise * eps.to(x.device)
    return x.clamp(-1.0, 1.0)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: ResNetClassifier, dataset: Dataset, *, role: str | None = None,
             batch_size: int = 256, device: str | torch.device = "cpu",
             limit: int | None = None) -> dict[str, Any]:
    """Test figures of a trained model on a dataset (role defaults to the model's kind).

    classifier/oracle: accuracy (and AUROC for two classes); fo-detector: per-object
    and macro F1; ctr-regressor: MAE, RMSE and the accuracy of ``ctr > 0.5``;
    cpr-scorer: accuracy of ``logit > 0`` against ``blunted`` and AUROC.

    Example:
        >>> evaluate(load_classifier("runs/oracle"), open_dataset("data", split="test"))  # doctest: +SKIP
    """
    role = role or model.kind
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    was_training = model.training
    model.eval().to(device)
    outs, ys, labels = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        outs.append(model(batch["image"].to(device)).float().cpu())
        ys.append(_targets(batch, role, "cpu"))
        labels.append(batch["label"].view(-1))
    model.train(was_training)
    out, y = torch.cat(outs), torch.cat(ys)
    res: dict[str, Any] = {"n": int(out.shape[0])}
    if role in ("classifier", "oracle"):
        if model.head == "sigmoid":
            pred = (out[:, 0] > 0).long()
            score = out[:, 0]
        else:
            pred = out.argmax(1)
            score = out.softmax(1)[:, -1] if out.shape[1] == 2 else None
        res["accuracy"] = float((pred == y).float().mean())
        if score is not None and 0 < int(y.sum()) < len(y):
            from sklearn.metrics import roc_auc_score

            res["auroc"] = float(roc_auc_score(y.numpy(), score.numpy()))
    elif role == "cpr-scorer":
        truth = y[:, 0] > 0.5
        res["accuracy"] = float(((out[:, 0] > 0) == truth).float().mean())
        if 0 < int(truth.sum()) < len(truth):
            from sklearn.metrics import roc_auc_score

            res["auroc"] = float(roc_auc_score(truth.numpy(), out[:, 0].numpy()))
    elif role == "fo-detector":
        pred = out > 0
        truth = y > 0.5
        f1s = {}
        for i, name in enumerate(model.class_names):
            tp = int((pred[:, i] & truth[:, i]).sum())
            fp = int((pred[:, i] & ~truth[:, i]).sum())
            fn = int((~pred[:, i] & truth[:, i]).sum())
            f1s[name] = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 1.0
        res["f1"] = f1s
        res["macro_f1"] = float(np.mean(list(f1s.values())))
        res["exact_match"] = float((pred == truth).all(1).float().mean())
    else:
        err = out[:, 0] - y[:, 0]
        res["mae"] = float(err.abs().mean())
        res["rmse"] = float(err.pow(2).mean().sqrt())
        label = torch.cat(labels)
        res["threshold_accuracy"] = float(((out[:, 0] > 0.5).long() == label).float().mean())
    return res


# ----------------------------------------------------------------------------- recipe


def train_classifier(
    data,                                   # dataset dir/file (open_dataset) or a train Dataset
    out_dir: str | os.PathLike,             # run directory (RUN_DIR/model is the result)
    *,
    role: str = "classifier",               # classifier | oracle | fo-detector | ctr-regressor | cpr-scorer
    steps: int | None = None,               # optimizer steps (role default)
    batch_size: int = 64,
    lr: float | None = None,                # peak learning rate (role default)
    weight_decay: float = 1e-4,
    seed: int | None = None,                # init + data order (role default: differs per role)
    resolution: int | None = None,          # resize the data to this size
    widths: Sequence[int] | None = None,    # stage widths (role default)
    blocks: Sequence[int] | None = None,    # blocks per stage (role default)
    max_shift: int | None = None,           # augmentation shift in px (default resolution // 32)
    noise: float = 0.02,                    # augmentation noise std
    val_data: Dataset | None = None,        # when ``data`` is a Dataset: optional val set
    test_data: Dataset | None = None,       # when ``data`` is a Dataset: test set for the figures
    val_every: int = 200,                   # steps between validation figures (0: never)
    resume: bool = False,
    device: str | None = None,              # None/auto: the engine's choice; else checked
    progress: bool = True,
    log_every: int = 50,
    checkpoint_every: int = 500,
    num_workers: int = 0,
) -> TrainedClassifier:
    """Train one classifier role and evaluate it on the test split.

    Example:
        >>> res = train_classifier("data/synth64", "runs/oracle", role="oracle")   # doctest: +SKIP
        >>> print(res.test)                                                        # doctest: +SKIP
    """
    from medcf.train.engine import Hook, TrainConfig, Trainer

    if role not in ROLES:
        raise ValueError(f"role: expected one of {ROLES}, got {role!r}")
    recipe = RECIPES[role]
    steps = recipe.steps if steps is None else int(steps)
    lr = recipe.lr if lr is None else float(lr)
    seed = recipe.seed if seed is None else int(seed)
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps, batch_size and lr must be positive, got {steps}, {batch_size}, {lr}")
    t0 = time.perf_counter()
    train_ds, val_ds, test_ds = _datasets(data, val_data, test_data, resolution)
    where = str(data) if isinstance(data, (str, os.PathLike)) else "data"
    if len(train_ds) == 0:
        raise DataError(f"{where}: the training split is empty")
    _check_target(train_ds, role, where)
    channels, res, class_names = _dataset_facts(train_ds)
    if role in ("classifier", "oracle"):
        head, names = "softmax", class_names
    elif role == "fo-detector":
        head, names = "multilabel", _fo_names(train_ds)
    elif role == "cpr-scorer":
        head, names = "sigmoid", ("sharp", "blunted")
    else:
        head, names = "regression", ("ctr",)
    widths = tuple(int(w) for w in (widths or recipe.widths))
    blocks = tuple(int(b) for b in (blocks or recipe.blocks))
    if len(blocks) != len(widths):
        blocks = (blocks[0],) * len(widths) if len(blocks) == 1 else blocks
    config = ResNetConfig(in_channels=channels, resolution=res, class_names=tuple(names),
                          num_outputs=1 if head == "sigmoid" else len(names), head=head, widths=widths, blocks=blocks,
                          stem_stride=max(1, min(4, res // 64)))
    model = CLASSIFIERS[role](config, seed=seed)
    if role == "ctr-regressor":  # start at the mean CTR so early steps learn the spread
        with torch.no_grad():
            first = [float(train_ds[i]["ctr"]) for i in range(min(256, len(train_ds)))]
            model.fc.bias.fill_(float(np.mean(first)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    shift = max(1, res // 32) if max_shift is None else int(max_shift)
    warmup = max(1, min(100, steps // 10))

    def step_fn(tr, batch):
        net, optimizer = tr.models["model"], tr.optimizers["model"]
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(tr.step, steps, lr, warmup, floor=0.02)
        x = augment(batch["image"], tr.generator, max_shift=shift, noise=noise)
        loss = _loss(net(x), _targets(batch, role, x.device), role)
        optimizer.zero_grad(set_to_none=True)
        tr.backward(loss)
        optimizer.step()
        return {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]}

    hooks = []
    if val_ds is not None and len(val_ds) > 0 and val_every > 0:
        def validate(tr):
            figures = evaluate(tr.unwrap("model"), val_ds, role=role, device=tr.device, limit=1024)
            return {f"val_{k}": v for k, v in figures.items() if isinstance(v, float)}

        hooks.append(Hook(every=val_every, fn=validate))
    run_info = {"recipe": "medcf.train.classifiers.train_classifier", "role": role,
                "data": where, "steps": steps, "batch_size": batch_size, "lr": lr,
                "weight_decay": weight_decay, "seed": seed, "resolution": res,
                "widths": list(widths), "blocks": list(blocks), "max_shift": shift, "noise": noise}
    tconf = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=batch_size, seed=seed,
                        log_every=log_every, checkpoint_every=checkpoint_every,
                        num_workers=num_workers, progress=progress)
    trainer = Trainer(tconf, models={"model": model}, optimizers={"model": opt},
                      dataset=train_ds, step_fn=step_fn, export="model", hooks=hooks,
                      run_info=run_info)
    _check_device(trainer, device)
    model_dir = Path(trainer.fit(resume=resume))

    test: dict[str, Any] = {}
    if test_ds is not None and len(test_ds) > 0:
        trained = load_classifier(model_dir, kind=role)
        test = evaluate(trained, test_ds, role=role, device=trainer.device)
        meta = dict(read_header(model_dir).get("meta", {}))
        meta.update({"test": test, "role": role, "data": where})
        trained.save(model_dir, meta=meta)
        log.info("%s test figures: %s", role, test)
    else:
        log.warning("%s: no test data given; test figures not computed", role)
    return TrainedClassifier(model_dir=model_dir, role=role, test=test,
                             wall_s=time.perf_counter() - t0)


def _check_device(trainer, device: str | None) -> None:
    """The engine picks the device (accelerate); refuse a run on another one than asked."""
    if device in (None, "auto"):
        return
    want = torch.device(device)
    got = trainer.device
    if got.type != want.type or (want.index is not None and got.index != want.index):
        hint = (" (set ACCELERATE_USE_CPU=1 to force the CPU)" if want.type == "cpu"
                else " (is an accelerator visible to torch?)")
        raise MedcfError(f"device: asked for {device!r} but the engine selected {got}{hint}")


def train_oracle(data, out_dir, **kwargs) -> TrainedClassifier:
    """``train_classifier(..., role="oracle")``: wider, other seed; an independent judge."""
    return train_classifier(data, out_dir, role="oracle", **kwargs)


def train_fo_detector(data, out_dir, **kwargs) -> TrainedClassifier:
    """``train_classifier(..., role="fo-detector")`` on ``fo_flags``."""
    return train_classifier(data, out_dir, role="fo-detector", **kwargs)


def train_ctr_regressor(data, out_dir, **kwargs) -> TrainedClassifier:
    """``train_classifier(..., role="ctr-regressor")`` on ``ctr``."""
    return train_classifier(data, out_dir, role="ctr-regressor", **kwargs)


def train_cpr_scorer(data, out_dir, **kwargs) -> TrainedClassifier:
    """``train_classifier(..., role="cpr-scorer")`` on ``blunted`` (synthetic effusion data)."""
    return train_classifier(data, out_dir, role="cpr-scorer", **kwargs)
