"""Throughput of the in-house StyleGAN2-ADA generator/discriminator.

Measures, per config, (1) generator forward throughput (eval, no grad, const noise,
images/s) and (2) the time of one training step: G forward+backward of the
non-saturating loss softplus(-D(G(z))), D forward+backward of
softplus(D(fake)) + softplus(-D(real)), and both Adam updates -- eager and,
with --compile, under torch.compile (compile time reported separately).

Configs: "A" is the reference fixture's generator A (32 px, 1 channel, 64 ch,
z=w=64, 2 mapping layers; its discriminator), "64" a 64 px, 1-channel config
(channels 128 at 4-16 px, 64 at 32 px, 32 at 64 px; z=w=128; 4 mapping layers).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stylegan2.py --threads 1
    .venv/bin/python benchmarks/bench_stylegan2.py --device cuda --compile --fp16
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

from medcf.generators.stylegan2 import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    MappingConfig,
    SynthesisConfig,
)


def configs(name: str, fp16: bool) -> tuple[GeneratorConfig, DiscriminatorConfig]:
    nfp16 = 4 if fp16 else 0
    clamp = 256.0 if fp16 else None
    if name == "A":
        g = GeneratorConfig(z_dim=64, w_dim=64, img_resolution=32, img_channels=1,
                            mapping=MappingConfig(num_layers=2),
                            synthesis=SynthesisConfig(channel_base=2048, channel_max=64,
                                                      num_fp16_res=nfp16, conv_clamp=clamp))
        d = DiscriminatorConfig(img_resolution=32, img_channels=1, channel_base=2048,
                                channel_max=64, mbstd_group_size=4, num_fp16_res=nfp16,
                                conv_clamp=clamp)
    elif name == "64":
        g = GeneratorConfig(z_dim=128, w_dim=128, img_resolution=64, img_channels=1,
                            mapping=MappingConfig(num_layers=4),
                            synthesis=SynthesisConfig(channel_base=2048, channel_max=128,
                                                      num_fp16_res=nfp16, conv_clamp=clamp))
        d = DiscriminatorConfig(img_resolution=64, img_channels=1, channel_base=2048,
                                channel_max=128, mbstd_group_size=4, num_fp16_res=nfp16,
                                conv_clamp=clamp)
    else:
        raise SystemExit(f"--configs: unknown config {name!r} (known: A, 64)")
    return g, d


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device: torch.device, iters: int, warmup: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds per call after warm-up)."""
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return first, times[len(times) // 2]


def bench(name: str, args, compiled: bool) -> None:
    device = torch.device(args.device)
    gcfg, dcfg = configs(name, args.fp16)
    G, D = Generator(gcfg, seed=0).to(device), Discriminator(dcfg, seed=1).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    b = args.batch
    z = torch.randn(b, gcfg.z_dim, generator=gen, device=device)
    real = torch.rand(b, 1, gcfg.img_resolution, gcfg.img_resolution, generator=gen,
                      device=device) * 2 - 1
    g_run, d_run = (torch.compile(G), torch.compile(D)) if compiled else (G, D)
    tag = f"{name:>3} {'compile' if compiled else 'eager':>7}{' fp16' if args.fp16 else ''}"

    # 1. generator forward throughput
    G.eval()

    def forward():
        with torch.no_grad():
            return g_run(z, None, noise_mode="const", fused_modconv=args.fused)

    first, t = timeit(forward, device, args.iters, args.warmup)
    print(f"{tag}  G forward   batch {b}: {b / t:9.1f} img/s  ({t * 1e3:8.2f} ms/batch; "
          f"first call {first:6.2f} s)", flush=True)

    # 2. one training step (G and D forward+backward, non-saturating loss, Adam)
    G.train()
    D.train()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99))

    def step():
        fake = g_run(z, None, generator=gen)
        loss_g = F.softplus(-d_run(fake, None)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        loss_d = (F.softplus(d_run(fake.detach(), None)) + F.softplus(-d_run(real, None))).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

    first, t = timeit(step, device, max(args.iters // 2, 3), args.warmup)
    print(f"{tag}  train step  batch {b}: {t * 1e3:9.1f} ms/step ({b / t:8.1f} img/s; "
          f"first call {first:6.2f} s)", flush=True)


def accuracy(fixtures: str, device: torch.device) -> None:
    """Errors against the official reference fixture on ``device``: fp32 (TF32 off / on) and fp16."""
    import copy
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from medcf.generators.stylegan2 import build_from_official

    root = Path(fixtures)

    def net(name: str, **changes):
        meta = json.loads((root / f"{name}.json").read_text())
        kwargs = copy.deepcopy(meta["init_kwargs"])
        for section, (key, value) in changes.items():
            (kwargs[section] if section != "top" else kwargs)[key] = value
        return build_from_official(meta["class_name"], kwargs,
                                   load_file(str(root / f"{name}.safetensors"))).to(device)

    ra = {k: v.to(device) for k, v in load_file(str(root / "refs_A.safetensors")).items()}
    rb = {k: v.to(device) for k, v in load_file(str(root / "refs_B.safetensors")).items()}
    ga, gb, da = net("generator_A"), net("generator_B"), net("discriminator_A")
    da16 = net("discriminator_A", top=("num_fp16_res", 4))

    def err(a, b):
        return f"{(a.float() - b).abs().max().item():.2e} (max|ref| {b.abs().max().item():.2f})"

    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        with torch.no_grad():
            for fused in (True, False):
                print(f"fp32 tf32={tf32} fused={fused}: "
                      f"A img_const {err(ga.synthesis(ra['ws'], noise_mode='const', force_fp32=True, fused_modconv=fused), ra['img_const'])}, "  # noqa: E501
                      f"B img_const {err(gb.synthesis(rb['ws'], noise_mode='const', force_fp32=True, fused_modconv=fused), rb['img_const'])}")  # noqa: E501
            print(f"fp32 tf32={tf32}: A ws {err(ga.mapping(ra['z'], None), ra['ws'])}, "
                  f"B ws {err(gb.mapping(rb['z'], rb['c']), rb['ws'])}, "
                  f"D_A logits {err(da(ra['img_const'], None, force_fp32=True), ra['d_logits'])}")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():  # B runs its 4 highest resolutions in fp16 (num_fp16_res=4, clamp 256)
        for fused in (True, False):
            print(f"fp16 fused={fused}: B img_const "
                  f"{err(gb.synthesis(rb['ws'], noise_mode='const', fused_modconv=fused), rb['img_const'])}")  # noqa: E501
        print(f"fp16: D_A logits with num_fp16_res=4 {err(da16(ra['img_const'], None), ra['d_logits'])}")
    gb.train()
    img = gb(rb["z"], rb["c"], noise_mode="const")
    img.square().mean().backward()
    finite = all(torch.isfinite(p.grad).all() for p in gb.parameters() if p.grad is not None)
    print(f"fp16 training-mode backward of G_B: output dtype {img.dtype}, grads finite: {finite}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--configs", default="A,64", help="comma-separated: A, 64")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile")
    p.add_argument("--no-eager", action="store_true", help="skip the eager measurements")
    p.add_argument("--fp16", action="store_true", help="num_fp16_res=4, conv_clamp=256 (CUDA)")
    p.add_argument("--fused", default=None, type=lambda v: {"on": True, "off": False}[v],
                   help="G forward modulation path: on (grouped conv) | off (default: auto)")
    p.add_argument("--accuracy", metavar="FIXTURE_DIR", default=None,
                   help="first compare with the official reference fixture on --device")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}, "
          f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    if args.accuracy:
        accuracy(args.accuracy, torch.device(args.device))
    for name in [c for c in args.configs.split(",") if c]:
        if not args.no_eager:
            bench(name, args, compiled=False)
        if args.compile:
            bench(name, args, compiled=True)


if __name__ == "__main__":
    main()
