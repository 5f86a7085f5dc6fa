"""Diagnostics behind VA-GAN's recipe (docs/vagan.md): does the critic find the lesion, and which
map/critic schedule learns a localized map?

``critic``: train the VA-GAN critic (``DCGANCritic``, WGAN-GP, Adam (0, 0.9)) ALONE on the
source class (as ``y = x``, the map at its zero start) against the target class, and every
``--every`` updates print how well it separates held-out images of the two classes (AUROC of
the critic score) and how well its input gradient on held-out source images -- the map's
first training signal -- matches the lesion mask (NCC and pixel AUROC of |∇ₓD|).

``toy``: a 16 px two-class toy (smooth random background with a random brightness offset;
the source class adds a bright 4x4 blob) trained with ``medcf.train.vagan.train_vagan``;
prints the map's NCC with the blob mask, its mean |M| inside and outside the blob, and the
signed change inside (the blob is +0.5). One seed per setting: a quick ablation, not a study.

``snapshots``: every snapshot of a VA-GAN run (and the selected model) on the first ``--n``
held-out source images that have a lesion mask: NCC and pixel AUROC of |M(x)| with the mask,
mean |M| inside and outside the lesion, the signed change inside, and the fraction of
``y = x + M(x)`` that a classifier (and an oracle) assign to the map's target class.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vagan_diagnostics.py critic --data DATA_DIR \\
        --source opacity --target clear --steps 800
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vagan_diagnostics.py toy --out /tmp/toy \\
        --critic-warmup 200 --map-lr 1e-5
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vagan_diagnostics.py snapshots --run RUN --data DATA_DIR \\
        --classifier CLF_RUN --oracle ORACLE_RUN
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import Dataset


def _first_images(data: str, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n`` images of ``split`` [n, C, R, R], their labels [n] and lesion masks [n, 1, R, R]."""
    from medcf.data import open_dataset

    ds = open_dataset(data, split=split)
    items = [ds[i] for i in range(min(n, len(ds)))]
    return (torch.stack([d["image"] for d in items]), torch.tensor([int(v) for v in ds.labels][:len(items)]),
            torch.stack([d["lesion_mask"] for d in items]))


def critic_probe(args) -> None:
    from sklearn.metrics import roc_auc_score

    from medcf.data import open_dataset
    from medcf.eval.localization import auroc, ncc
    from medcf.generators.dcgan import DCGANConfig, DCGANCritic
    from medcf.train.gan import gradient_penalty
    from medcf.train.vagan import resolve_class

    names = tuple(open_dataset(args.data, split="val").class_names)
    s, t = (resolve_class(c, names, flag, args.data) for c, flag in ((args.source, "--source"),
                                                                      (args.target, "--target")))
    x, y, _ = _first_images(args.data, "train", args.n_train)
    src, tgt = x[y == s], x[y == t]                                    # [n, C, R, R]
    xv, yv, mv = _first_images(args.data, "val", args.n_val)
    vs, vt, vmask = xv[yv == s], xv[yv == t], mv[yv == s]
    cfg = DCGANConfig(resolution=src.shape[-1], channels=src.shape[1], z_dim=1, base_channels=args.critic_channels)
    D = DCGANCritic(cfg, seed=1)
    opt = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.0, 0.9))
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.every == 0:
            with torch.no_grad():
                scores = torch.cat([D(vt), D(vs)])
            truth = torch.cat([torch.ones(len(vt)), torch.zeros(len(vs))])
            x = vs[:64].clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(D(x).sum(), x)
            print(f"update {step}: class AUROC {roc_auc_score(truth.numpy(), scores.numpy()):.3f}, "
                  f"|grad| vs lesion NCC {ncc(grad.abs(), vmask[:64]).nanmean():.3f} "
                  f"AUROC {auroc(grad.abs(), vmask[:64]).nanmean():.3f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        if step == args.steps:
            break
        i = torch.randint(len(tgt), (args.batch_size,), generator=g)
        j = torch.randint(len(src), (args.batch_size,), generator=g)
        real, fake = tgt[i], src[j]
        loss = D(fake).mean() - D(real).mean() + 10.0 * gradient_penalty(D, real, fake, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()


class Blobs(Dataset):
    """16 px toy: class 1 ("blob") = class-0-like background + 0.5 on a random 4x4 square."""

    class_names = ("clear", "blob")

    def __init__(self, n: int, seed: int, res: int = 16):
        g = torch.Generator().manual_seed(seed)
        self.labels = [i % 2 for i in range(n)]
        base = torch.nn.functional.avg_pool2d(torch.randn(n, 1, res, res, generator=g), 3, 1, 1) * 0.3
        base = base + (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.4 - 0.3     # brightness offset
        self.mask = torch.zeros(n, 1, res, res)
        for i in range(n):
            if self.labels[i]:
                r, c = torch.randint(2, res - 6, (2,), generator=g).tolist()
                self.mask[i, :, r:r + 4, c:c + 4] = 1
        self.x = (base + 0.5 * self.mask).clamp(-1, 1)                              # [n, 1, res, res]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": self.labels[i]}


def toy(args) -> None:
    from medcf.eval.localization import ncc
    from medcf.generators.vagan import load_vagan_map
    from medcf.train.vagan import train_vagan

    t0 = time.perf_counter()
    train_vagan(Blobs(256, 0), args.out, source="blob", target="clear", steps=args.steps, n_critic=args.n_critic,
                critic_warmup=args.critic_warmup, lr=args.lr, map_lr=args.map_lr, l1_weight=args.l1_weight,
                batch_size=16, base_channels=8, depth=2, critic_channels=8, snapshot_every=args.steps, val_n=8,
                progress=False, log_every=10 ** 6)
    test = Blobs(64, 1)
    x, mask = test.x[1::2], test.mask[1::2]
    with torch.no_grad():
        m = load_vagan_map(args.out)(x)
    print(f"warm-up {args.critic_warmup}, map lr {args.map_lr:g}, critic lr {args.lr:g}, n_critic {args.n_critic}, "
          f"L1 {args.l1_weight:g}, {args.steps} map updates: NCC {ncc(m.abs(), mask).nanmean():.3f}, "
          f"|M| in blob {(m.abs() * mask).sum() / mask.sum():.3f}, outside "
          f"{(m.abs() * (1 - mask)).sum() / (1 - mask).sum():.3f}, signed in blob {(m * mask).sum() / mask.sum():.3f} "
          f"({time.perf_counter() - t0:.0f} s)")


def snapshots(args) -> None:
    from pathlib import Path

    from medcf.classifiers import load_classifier
    from medcf.counterfactual.base import log_odds_of
    from medcf.eval.localization import auroc, ncc
    from medcf.generators.vagan import load_vagan_map

    run = Path(args.run)
    dirs = sorted(p for p in (run / "snapshots").iterdir() if p.is_dir()) + [run / "model"]
    first = load_vagan_map(dirs[0])
    names = first.config.class_names
    s, t = names.index(first.config.source_class), names.index(first.config.target_class)
    x, y, mask = _first_images(args.data, "val", 10 ** 9)
    keep = (y == s) & (mask.flatten(1).amax(1) > 0)
    x, mask = x[keep][:args.n], mask[keep][:args.n]                  # [n, C, R, R], [n, 1, R, R]
    judges = {k: load_classifier(v, **({"kind": "oracle"} if k == "oracle" else {}))
              for k, v in (("classifier", args.classifier), ("oracle", args.oracle)) if v}

    def to_target(net, images):
        target = torch.full((images.shape[0],), t, dtype=torch.long)
        with torch.no_grad():
            return float((log_odds_of(net(images).float(), target, head=getattr(net, "head", None)) >= 0).float().mean())

    print(f"{len(x)} held-out {names[s]!r} images with a lesion; on x itself: "
          + ", ".join(f"{k} -> {names[t]!r} {to_target(n, x):.3f}" for k, n in judges.items()))
    inside, outside = mask.sum(), (1 - mask).sum()
    for d in dirs:
        M = load_vagan_map(d)
        with torch.no_grad():
            m, cf = M(x), M.counterfactual(x)
        a = m.abs()
        print(f"{d.name}: NCC {ncc(a, mask).nanmean():.3f}, AUROC {auroc(a, mask).nanmean():.3f}, |M| in lesion "
              f"{(a * mask).sum() / inside:.3f}, outside {(a * (1 - mask)).sum() / outside:.4f}, signed in lesion "
              f"{(m * mask).sum() / inside:.3f}; "
              + ", ".join(f"{k} -> {names[t]!r} {to_target(n, cf):.3f}" for k, n in judges.items()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("critic", help="critic trained alone: class separation and lesion-pointing gradient")
    c.add_argument("--data", required=True)
    c.add_argument("--source", default="opacity")
    c.add_argument("--target", default="clear")
    c.add_argument("--steps", type=int, default=800)
    c.add_argument("--every", type=int, default=200)
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--lr", type=float, default=1e-4)
    c.add_argument("--critic-channels", type=int, default=16)
    c.add_argument("--n-train", type=int, default=2400, help="first training images used (both classes)")
    c.add_argument("--n-val", type=int, default=300, help="first held-out images used (both classes)")
    t = sub.add_parser("toy", help="16 px blob toy trained with train_vagan")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--n-critic", type=int, default=2)
    t.add_argument("--critic-warmup", type=int, default=200)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--map-lr", type=float, default=1e-5)
    t.add_argument("--l1-weight", type=float, default=10.0)
    n = sub.add_parser("snapshots", help="localization and validity of every snapshot of a VA-GAN run")
    n.add_argument("--run", required=True)
    n.add_argument("--data", required=True)
    n.add_argument("--classifier", default=None)
    n.add_argument("--oracle", default=None)
    n.add_argument("--n", type=int, default=96)
    args = ap.parse_args()
    torch.set_num_threads(1)
    {"critic": critic_probe, "toy": toy, "snapshots": snapshots}[args.cmd](args)


if __name__ == "__main__":
    main()
