"""StyleGAN2-ADA on synthetic 64x64 cardiomegaly for a wall-clock budget; kimg reached and domain FID.

1. renders ``--n`` synthetic images (task cardiomegaly, 64 px) into ``OUT/data``;
2. trains a small oracle classifier (``--oracle-steps``) unless ``--oracle RUN`` is given
   (its penultimate features are the FID "domain" extractor);
3. trains StyleGAN2-ADA for ``--minutes`` of wall clock: a 20-step probe measures the
   step time, then the run is resumed (exactly) up to the step count that fits the budget;
4. prints kimg reached, the final ADA p, and the FID of G_ema against the train split
   (``--fid-n`` images each, oracle features), plus the machine.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/train_stylegan2_synthetic.py --minutes 60
    .venv/bin/python benchmarks/train_stylegan2_synthetic.py --minutes 5 --out /tmp/sg2bench
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset


def images(ds, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n images [n, C, H, W] and labels [n] of a dataset."""
    items = [ds[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])


@torch.no_grad()
def generate(G, labels: torch.Tensor) -> torch.Tensor:
    """One image per label (fixed seed; labels ignored by an unconditional G)."""
    gen, out = torch.Generator().manual_seed(123), []
    for i in range(0, len(labels), 100):
        k = min(100, len(labels) - i)
        c = None
        if G.c_dim:
            c = torch.nn.functional.one_hot(labels[i:i + k], G.c_dim).float()
        out.append(G(torch.randn(k, G.z_dim, generator=gen), c, noise_mode="const"))
    return torch.cat(out)


def domain_fid(oracle, real: torch.Tensor, fake: torch.Tensor):
    from medcf.eval.fid import FID

    fid = FID(oracle)
    for i in range(0, len(real), 100):
        fid.update(real[i:i + 100], real=True)
    for i in range(0, len(fake), 100):
        fid.update(fake[i:i + 100], real=False)
    return fid.compute()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of GAN training")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_sg2"))
    ap.add_argument("--n", type=int, default=2000, help="synthetic images (90%% train+val, 10%% test)")
    ap.add_argument("--data", type=Path, default=None,
                    help="an existing synthetic dataset (e.g. runs/demo/data) instead of rendering --n")
    ap.add_argument("--oracle", type=Path, default=None, help="existing oracle run (skips training one)")
    ap.add_argument("--oracle-steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--channel-base", type=int, default=2048)
    ap.add_argument("--channel-max", type=int, default=128)
    ap.add_argument("--fid-n", type=int, default=1000)
    ap.add_argument("--fid-every", type=int, default=1000, help="steps between FID snapshots in the run")
    ap.add_argument("--cond", action="store_true", help="label-conditional training")
    ap.add_argument("--aug", default="ada", choices=("ada", "none"))
    ap.add_argument("--ada-kimg", type=float, default=100.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--fresh", action="store_true", help="delete OUT first")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from medcf.classifiers import load_classifier
    from medcf.data import SynthConfig, open_dataset, write_synthetic
    from medcf.generators.stylegan2 import Generator
    from medcf.train.classifiers import train_classifier
    from medcf.train.stylegan2 import train_stylegan2

    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    data = args.data or args.out / "data"
    t0 = time.perf_counter()
    if args.data is None and not (data / "dataset.json").is_file():
        write_synthetic(SynthConfig(task="cardiomegaly", resolution=64), args.n, data, seed=0,
                        progress=False)
    print(f"data: {len(open_dataset(data))} images at {data} ({time.perf_counter() - t0:.0f} s)")

    oracle_dir = args.oracle
    if oracle_dir is None:
        oracle_dir = args.out / "oracle"
        if not (oracle_dir / "model" / "config.json").is_file():
            t0 = time.perf_counter()
            res = train_classifier(data, oracle_dir, role="oracle", steps=args.oracle_steps,
                                   progress=False)
            print(f"oracle: {args.oracle_steps} steps in {time.perf_counter() - t0:.0f} s, "
                  f"test accuracy {res.test.get('accuracy', float('nan')):.3f}")
    oracle = load_classifier(oracle_dir)

    run = args.out / "sg2"
    common = dict(resolution=64, cond=args.cond, aug=args.aug, ada_kimg=args.ada_kimg,
                  batch_size=args.batch_size, channel_base=args.channel_base,
                  channel_max=args.channel_max, sample_every=200, checkpoint_every=200,
                  progress=False, log_every=20, fid_oracle=oracle_dir, fid_every=args.fid_every,
                  fid_n=args.fid_n)
    budget = args.minutes * 60
    t_gan = time.perf_counter()
    probe = 20
    shutil.rmtree(run, ignore_errors=True)  # the GAN run is always fresh (data and oracle are reused)
    train_stylegan2(data, run, steps=probe, **common)
    probe_s = time.perf_counter() - t_gan
    per_step = probe_s / probe
    target = max(probe, probe + int((budget - probe_s) / per_step))
    print(f"probe: {per_step:.2f} s/step at batch {args.batch_size}; training to step {target}")
    res = train_stylegan2(data, run, steps=target, resume=True, **common)
    gan_s = time.perf_counter() - t_gan

    t0 = time.perf_counter()
    G = Generator.load(res.model_dir)
    G0 = Generator(G.config, seed=0).eval()  # the run's initial weights (recipe seed 0)
    train = open_dataset(data, split="train")
    heldout = ConcatDataset([open_dataset(data, split="val"), open_dataset(data, split="test")])
    n = min(args.fid_n, len(train), len(heldout))  # the same n for both figures (FID depends on n)
    real, labels = images(train, n)
    result = domain_fid(oracle, real, generate(G, labels))
    init = domain_fid(oracle, real, generate(G0, labels))
    floor = domain_fid(oracle, real, images(heldout, n)[0])  # real vs real: the best reachable

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, torch {torch.__version__} (shared machine)")
    print(f"trained {res.steps} steps = {res.kimg:.2f} kimg in {gan_s / 60:.1f} min "
          f"({res.kimg * 1000 / gan_s:.1f} img/s), ADA p {res.augment_p:.3f}")
    print(f"FID {result.fid:.2f} ({result.extractor}, {result.n_real} real train vs "
          f"{result.n_fake} G_ema images; {time.perf_counter() - t0:.0f} s); "
          f"untrained G {init.fid:.2f}; real-vs-real floor (train vs val+test): {floor.fid:.2f}")
    print(f"samples: {run / 'samples'}")


if __name__ == "__main__":
    main()
