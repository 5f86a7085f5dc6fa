"""Training recipe for the ``icam`` backbone on the shared engine.

Per step, on an unpaired batch (a from domain A, b from domain B):

1. encoders + decoder + attribute classifier: ``medcf.generators.icam.icam_losses``
   (adversarial and class-head terms on the attribute-swapped images, L1 self and
   cross-cycle reconstruction, KL of the attribute code, attribute classification,
   content adversarial), one Adam step;
2. image discriminator (real/fake + class head) and content discriminator, one Adam step.

Adam(lr, betas (0.5, 0.999)), constant then linear decay over the second half of the
run (from the step: exact resume). After training, the per-domain mean and standard
deviation of the attribute code over the training images are stored in the model
(``attr_mean``/``attr_std``), and validation figures (ICAM's own classifier accuracy,
self-reconstruction L1, how often the attribute swap changes ICAM's decision) go to
``meta["val"]``. Sample grids (rows: A, A with B's attribute, B, B with A's attribute)
go to RUN_DIR/samples/. With ``fid_oracle`` (a medcf classifier run), domain-FID snapshots
of the translation A -> B (up to ``fid_n`` training images of A decoded with the attribute
codes of as many real B images, against those B images) every ``fid_every`` steps; the last
one is kept in the model's ``meta["fid"]``.

Example:
    >>> res = train_icam("data/synth64", "runs/icam", steps=3000)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from medcf.errors import MedcfError
from medcf.eval._common import evaluating
from medcf.generators.icam import (
    ICAM,
    ContentDiscriminator,
    ICAMConfig,
    ICAMWeights,
    ImageDiscriminator,
    discriminator_losses,
    icam_losses,
)
from medcf.io import read_header
from medcf.train.cyclegan import TrainedTranslator, prepare_domains
from medcf.train.domains import (
    UnpairedDomains,
    class_names_of,
    dataset_labels,
    grid_hook,
    grid_pairs,
)
from medcf.train.fid_snapshots import translation_fid
from medcf.train.recipe_common import frozen, optimizer_step
from medcf.train.schedules import linear_decay, set_lr


@torch.no_grad()
def attribute_statistics(model: ICAM, dataset: Dataset, *, batch_size: int = 64, limit: int | None = 512,
                         device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Per-domain (mean [2, A], std [2, A]) of the attribute code over ``dataset`` and
    figures: ICAM's classifier accuracy on the two domains and the self-reconstruction L1."""
    cfg = model.config
    labels = dataset_labels(dataset)
    keep = [i for i, v in enumerate(labels) if v in (cfg.domain_a, cfg.domain_b)]
    if limit is not None:
        keep = keep[:limit]
    was = model.training
    model.eval().to(device)
    codes, ys, l1 = [], [], 0.0
    for batch in DataLoader(Subset(dataset, keep), batch_size=batch_size, shuffle=False):
        x = batch["image"].to(device)
        c, a = model.encode(x)
        l1 += float((model.decode(c, a) - x).abs().mean(dim=tuple(range(1, x.ndim))).sum())
        codes.append(a.cpu())
        ys.append((batch["label"] == cfg.domain_b).cpu())
    model.train(was)
    a, y = torch.cat(codes), torch.cat(ys)
    groups = [a[~y] if (~y).any() else a, a[y] if y.any() else a]     # a missing domain: all codes
    mean = torch.stack([g.mean(0) for g in groups])
    std = torch.stack([g.std(0, unbiased=False) for g in groups]).clamp_min(1e-4)
    acc = float(((model.classify(a.to(device)).cpu() > 0) == y).float().mean())
    return mean, std, {"icam_accuracy": acc, "self_l1": l1 / len(keep), "n": len(keep)}


@torch.no_grad()
def swap_flip_rate(model: ICAM, dataset: Dataset, *, limit: int = 256, device="cpu") -> float:
    """Fraction of images whose ICAM decision flips when their attribute code is replaced by
    the other domain's mean and the result is re-encoded."""
    cfg = model.config
    labels = dataset_labels(dataset)
    keep = [i for i, v in enumerate(labels) if v in (cfg.domain_a, cfg.domain_b)][:limit]
    if not keep:
        return float("nan")
    x = torch.stack([dataset[i]["image"] for i in keep]).to(device)
    y = torch.tensor([labels[i] == cfg.domain_b for i in keep], device=device)
    model.eval().to(device)
    c, _ = model.encode(x)
    other = model.attr_mean[(~y).long()]
    _, a_cf = model.encode(model.decode(c, other))
    return float(((model.classify(a_cf) > 0) == ~y).float().mean())


def train_icam(
    data,                                   # dataset dir/file (open_dataset) or a labelled Dataset
    out_dir: str | os.PathLike,             # run directory (RUN_DIR/model is the ICAM)
    *,
    domain_a: str | int | None = None,      # class name/index of domain A (None: class 0)
    domain_b: str | int | None = None,      # class name/index of domain B (None: class 1)
    steps: int = 3000,
    batch_size: int = 8,
    lr: float = 2e-4,
    width: int = 32,                        # content encoder / decoder width
    blocks: int = 2,
    attr_dim: int = 8,
    attr_map: int = 0,                      # 0: vector attribute code; k: attr_dim x k x k spatial code
    attr_width: int = 32,
    disc_width: int = 32,
    disc_layers: int = 3,
    content_noise: float = 0.0,             # std of the noise on the content code in training (0: none)
    weights: ICAMWeights = ICAMWeights(),
    seed: int = 0,
    resolution: int | None = None,
    val_data: Dataset | None = None,
    sample_every: int = 500,
    fid_oracle: str | os.PathLike | None = None,  # classifier run for domain-FID snapshots (None: off)
    fid_every: int = 0,                     # steps between FID snapshots (0: only at the end)
    fid_n: int = 500,                       # A images translated / real B images per snapshot
    resume: bool = False,
    progress: bool = True,
    log_every: int = 50,
    checkpoint_every: int = 500,
    num_workers: int = 0,
) -> TrainedTranslator:
    """Train ICAM between two classes of ``data``.

    Example:
        >>> res = train_icam("data/synth64", "runs/icam", steps=3000)   # doctest: +SKIP
        >>> res.val["icam_accuracy"]                                    # doctest: +SKIP
    """
    from medcf.train.engine import Hook, TrainConfig, Trainer

    if steps < 1 or batch_size < 1 or lr <= 0:
        raise MedcfError(f"--steps, --batch-size, --lr must be positive, got {steps}, {batch_size}, {lr}")
    t0 = time.perf_counter()
    train_ds, val_data, a_cls, b_cls, where = prepare_domains(data, domain_a, domain_b, resolution, val_data)
    image = train_ds[0]["image"]
    try:
        config = ICAMConfig(resolution=int(image.shape[-1]), channels=int(image.shape[0]), width=width,
                            blocks=blocks, attr_dim=attr_dim, attr_map=attr_map, attr_width=attr_width, disc_width=disc_width,
                            disc_layers=disc_layers, content_noise=content_noise, domain_a=a_cls, domain_b=b_cls,
                            class_names=class_names_of(train_ds))
    except ValueError as e:
        raise MedcfError(f"{where}: {e}") from None
    model = ICAM(config, seed=seed)
    d_img, d_content = ImageDiscriminator(config, seed=seed + 1), ContentDiscriminator(config, seed=seed + 2)
    betas = (0.5, 0.999)
    opt_g = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam([*d_img.parameters(), *d_content.parameters()], lr=lr, betas=betas)

    def step_fn(tr, batch):
        g, di, dc = tr.models["model"], tr.models["d_img"], tr.models["d_content"]
        rate = set_lr(tr.optimizers.values(), linear_decay(tr.step, steps, lr))
        a, b = batch["image_a"], batch["image_b"]
        with frozen(di, dc):                    # 1. encoders, decoder, attribute classifier
            out = g(a, b, generator=tr.generator)
            terms = icam_losses(out, tr.unwrap("model"), di, dc, a, b, weights)
            optimizer_step(tr, "g", terms["total"])
        d_terms = discriminator_losses(out, di, dc, a, b)      # 2. discriminators
        optimizer_step(tr, "d", d_terms["d_total"])
        return {**{k: v.item() for k, v in terms.items()}, **{k: v.item() for k, v in d_terms.items()}, "lr": rate}

    x_a, x_b = grid_pairs(val_data, train_ds, a_cls, b_cls)

    def translate(tr, xa, xb):                  # grid rows: A, A with B's attribute, B, B with A's
        with evaluating(tr.unwrap("model")) as m:
            (ca, za), (cb, zb) = m.encode(xa), m.encode(xb)
            return torch.cat([xa, m.decode(ca, zb), xb, m.decode(cb, za)])

    hooks = [Hook(every=sample_every or steps, fn=grid_hook(translate, x_a, x_b, 2))]
    snaps = None
    if fid_oracle is not None:
        def to_b(tr, xa, xb):                       # A's content with B's attribute code -> [m, C, H, W]
            m = tr.unwrap("model").eval()
            return m.decode(m.encode(xa)[0], m.encode(xb)[1])

        snaps = translation_fid(fid_oracle, train_ds, a_cls, b_cls, to_b, n=fid_n, every=fid_every, steps=steps,
                                channels=config.channels, resolution=config.resolution)
        hooks.append(snaps.hook)
    run_info = {"recipe": "medcf.train.icam.train_icam", "kind": ICAM.kind, "data": where,
                "domains": [config.domain_name("a"), config.domain_name("b")], "steps": steps,
                "batch_size": batch_size, "lr": lr, "width": width, "blocks": blocks, "attr_dim": attr_dim,
                "attr_map": attr_map, "attr_width": attr_width, "disc_width": disc_width, "disc_layers": disc_layers,
                "content_noise": content_noise, "weights": dataclasses.asdict(weights), "seed": seed,
                "fid_oracle": str(fid_oracle) if fid_oracle is not None else None, "fid_n": fid_n}
    tconf = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=batch_size, seed=seed, log_every=log_every,
                        checkpoint_every=checkpoint_every, ema_decay=None, num_workers=num_workers,
                        progress=progress)
    trainer = Trainer(tconf, models={"model": model, "d_img": d_img, "d_content": d_content},
                      optimizers={"g": opt_g, "d": opt_d}, dataset=UnpairedDomains(train_ds, a_cls, b_cls, seed=seed),
                      step_fn=step_fn, export="model", hooks=hooks, run_info=run_info)
    model_dir = Path(trainer.fit(resume=resume))

    # attribute statistics of the training data (used by the explainer), validation figures
    trained = ICAM.load(model_dir, device=trainer.device)
    mean, std, train_figs = attribute_statistics(trained, train_ds, device=trainer.device)
    trained.attr_mean.copy_(mean)
    trained.attr_std.copy_(std)
    val: dict[str, Any] = {"train_icam_accuracy": train_figs["icam_accuracy"]}
    if val_data is not None and len(val_data) > 0:
        _, _, figs = attribute_statistics(trained, val_data, device=trainer.device)
        val.update(figs)
        val["swap_flip_rate"] = swap_flip_rate(trained, val_data, device=trainer.device)
    meta = dict(read_header(model_dir).get("meta", {}))
    meta.update({"val": val, "data": where})
    fid = snaps.last_result(out_dir) if snaps is not None else None
    if fid:
        meta["fid"] = fid
    if trainer.is_main_process:                          # one writer under multi-GPU training
        trained.save(model_dir, meta=meta)
    return TrainedTranslator(model_dir=model_dir, kind=ICAM.kind,
                             domains=(config.domain_name("a"), config.domain_name("b")), val=val,
                             wall_s=time.perf_counter() - t0, fid=fid)


# quick-profile sizes (a profile's [methods.icam] table overrides any of them; ``explain``
# holds build options)
BENCH_DEFAULTS: dict[str, Any] = {"width": 8, "blocks": 1, "attr_dim": 8, "disc_width": 8, "disc_layers": 2,
                                  "steps": 150, "batch_size": 4, "lr": 2e-4, "content_noise": 0.0,
                                  "weights": {}}


def bench_weights(table) -> ICAMWeights:
    """``ICAMWeights`` from a profile's ``weights = {...}`` (unnamed terms keep their defaults)."""
    known = {f.name for f in dataclasses.fields(ICAMWeights)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise MedcfError(f"[methods.icam] weights: unknown term(s) {unknown}; known: {sorted(known)}")
    try:
        return ICAMWeights(**{k: float(v) for k, v in table.items()})
    except ValueError as e:
        raise MedcfError(f"[methods.icam] weights: {e}") from None


def prepare_icam(data_dir, out_dir, *, classifier_dir, task: str, profile: dict[str, Any],
                 device="cpu", seed: int = 0, progress: bool = True) -> dict:
    """``prepare`` hook of the ``icam`` row of ``medcf benchmark``: train (or reuse) ICAM between
    classes 0 and 1 of the data; returns ``{"generator_dir", **profile["explain"]}``.

    Example:
        >>> kw = prepare_icam("out/cache/data", "out/methods/icam/cardiomegaly",
        ...                   classifier_dir="out/cache/classifier", task="cardiomegaly",
        ...                   profile={"steps": 150})                             # doctest: +SKIP
    """
    from medcf.benchmark.cache import profile_stage, stage_checkpoint_every

    def train(cfg: dict, d, resume: bool):  # cfg: BENCH_DEFAULTS updated by the profile table
        return train_icam(
            data_dir, d, steps=int(cfg["steps"]), batch_size=int(cfg["batch_size"]), lr=float(cfg["lr"]),
            width=int(cfg["width"]), blocks=int(cfg["blocks"]), attr_dim=int(cfg["attr_dim"]),
            attr_map=int(cfg.get("attr_map", 0)),   # not in BENCH_DEFAULTS: cached stages keep their keys
            attr_width=int(cfg["width"]), disc_width=int(cfg["disc_width"]), disc_layers=int(cfg["disc_layers"]),
            content_noise=float(cfg["content_noise"]), weights=bench_weights(cfg["weights"]), seed=seed,
            sample_every=0, checkpoint_every=stage_checkpoint_every(cfg["steps"]), resume=resume,
            progress=progress)

    return profile_stage(out_dir, "icam", data_dir, profile, BENCH_DEFAULTS, seed, train)
