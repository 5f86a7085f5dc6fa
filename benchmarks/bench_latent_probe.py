"""Benchmark: StyleGAN2 latent probe on the synthetic 64x64 cardiomegaly test split.

Needs the demo's models (``python -m medcf.demo --out runs/demo``: the classifier
to explain and, as judges, the oracle, the foreign-object detector and the CTR
regressor), a StyleGAN2 trained on the demo's data
(``benchmarks/train_stylegan2_synthetic.py --data runs/demo/data``) and an
encoder trained for it (``medcf train encoder``).

Prints, on the first ``--limit`` test images:

- the encoder on real test images: seconds per image (batch 1, median) and
  LPIPS (alex) / L1 between x and G(E(x));
- the probe's held-out accuracy on the classifier's decisions about generated images;
- per frame composition (``--compose``: "generated" = Schutte et al.'s G(w + λα),
  "residual" = x + G(w + λα) - G(w)), the evaluation suite of
  ``medcf.eval.evaluate_counterfactuals``: validity, oracle validity, FOP, CTR
  crossing, localization AUROC, median seconds per explanation (batch 1).

Targets from the issue: validity >= 0.9 and FOP >= 0.9; encoder < 50 ms per image on CPU.

Usage:
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_latent_probe.py \\
        --generator runs/bench_sg2/sg2 --encoder runs/bench_sg2/encoder --limit 400
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _common import latency, machine

from medcf.classifiers import load_classifier
from medcf.data import open_dataset
from medcf.eval.report_md import example_grid, lookup
from medcf.explain_runner import build_latent_probe_method, evaluate_explainer

TARGETS = (  # (label, summary key, comparison, bar); None: reported, no target
    ("validity", "validity", ">=", 0.9),
    ("FOP", "fop.fop", ">=", 0.9),
    ("oracle validity", "oracle_validity", ">=", None),
    ("CTR crosses 0.5", "clinical.crossed", ">=", None),
    ("localization AUROC", "localization.auroc", ">=", None),
    ("LPIPS(x, x_cf)", "lpips", "<=", None),
    ("median s / explanation (batch 1)", "latency_median_s", "<=", None),
)




@torch.no_grad()
def encoder_on_real_images(probe, dataset, n: int, n_timed: int, lpips) -> dict:
    """Encoder time per image (batch 1) and reconstruction LPIPS/L1 on real images."""
    G, enc = probe.generator, probe.encoder
    times, lp, l1 = [], [], []
    for i in range(min(n, len(dataset))):
        x = dataset[i]["image"][None]  # [1, C, H, W]
        t0 = time.perf_counter()
        w = enc.encode(x)
        if i < n_timed:
            times.append(time.perf_counter() - t0)
        rec = G.decode(w)
        lp.append(float(lpips(rec, x)))
        l1.append(float((rec - x).abs().mean()))
    return {"n": len(lp), "encode_median_s": statistics.median(times), "lpips_mean": statistics.fmean(lp),
            "lpips_sd": statistics.pstdev(lp), "l1_mean": statistics.fmean(l1)}



def report(summary: dict) -> None:
    for label, key, op, bar in TARGETS:
        v = lookup(summary, key)
        shown = "n/a" if v is None else f"{v:.3f}"
        if bar is None:
            print(f"  {label:>34}: {shown:>7}")
            continue
        ok = v is not None and (v >= bar if op == ">=" else v <= bar)
        gap = "" if ok or v is None else f"  (misses by {abs(v - bar):.3f})"
        print(f"  {label:>34}: {shown:>7}  target {op} {bar}  {'OK' if ok else 'MISSED'}{gap}")
    print(f"  {'not found':>34}: {summary['not_found_rate']:.3f}")
    if summary.get("fid"):
        print(f"  {'FID (' + str(summary['fid']['extractor']) + ')':>34}: {summary['fid']['fid']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default="runs/demo", help="demo folder with data/ and the judge models")
    ap.add_argument("--generator", default="runs/bench_sg2/sg2", help="StyleGAN2 run")
    ap.add_argument("--encoder", default="runs/bench_sg2/encoder", help="stylegan2-encoder run")
    ap.add_argument("--probe-dir", default=None, help="fitted probe (default GENERATOR/../probe; fitted "
                                                      "and saved there when absent)")
    ap.add_argument("--fit-samples", type=int, default=5000)
    ap.add_argument("--limit", type=int, default=400, help="test images scored per variant")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--latency-n", type=int, default=20, help="images timed one at a time")
    ap.add_argument("--compose", default="generated,residual", help="frame compositions to score")
    ap.add_argument("--take-at", type=float, default=None, help="LatentProbeConfig.take_at (judged at 0.5)")
    ap.add_argument("--step-size", type=float, default=None, help="λ per frame in σ units (default 0.1)")
    ap.add_argument("--max-steps", type=int, default=None, help="frames searched (default 100)")
    ap.add_argument("--project-steps", type=int, default=None,
                    help="projector refinement steps after the encoder (default 0)")
    ap.add_argument("--out", default=None, help="results JSON (default GENERATOR/../bench_latent_probe.json)")
    args = ap.parse_args()

    from medcf.eval import LPIPS

    demo, gen = Path(args.demo), Path(args.generator)
    probe_dir = Path(args.probe_dir) if args.probe_dir else gen.parent / "probe"
    test = open_dataset(demo / "data", split="test")
    judges = {"oracle": load_classifier(demo / "oracle", kind="oracle"),
              "fo_detector": load_classifier(demo / "fo-detector", kind="fo-detector"),
              "ctr_regressor": load_classifier(demo / "ctr-regressor", kind="ctr-regressor")}
    lpips = LPIPS("alex")
    info = machine()
    print(f"machine: {info}")
    results = {"machine": info, "generator": str(gen), "encoder": args.encoder, "limit": args.limit,
               "take_at": args.take_at, "project_steps": args.project_steps, "variants": {}}
    for compose in args.compose.split(","):
        t0 = time.perf_counter()
        explainer = build_latent_probe_method(demo / "classifier", gen, encoder=args.encoder,
                                              probe_dir=probe_dir, fit_samples=args.fit_samples,
                                              take_at=args.take_at, compose=compose,
                                              step_size=args.step_size, max_steps=args.max_steps,
                                              project_steps=args.project_steps, progress=False)
        probe = explainer.probe
        if "probe" not in results:
            print(f"probe: held-out accuracy {probe.accuracy:.3f} (train {probe.train_accuracy:.3f}, "
                  f"C={probe.C:.3g}, {probe.n_samples} generated samples; {time.perf_counter() - t0:.0f} s "
                  f"incl. fitting when not loaded from {probe_dir})")
            results["probe"] = {"accuracy": probe.accuracy, "train_accuracy": probe.train_accuracy,
                                "C": probe.C, "n_samples": probe.n_samples}
            enc = encoder_on_real_images(explainer, test, args.limit, args.latency_n, lpips)
            results["encoder_real"] = enc
            print(f"encoder on {enc['n']} real test images: {1000 * enc['encode_median_s']:.1f} ms/image "
                  f"(batch 1, median), LPIPS(G(E(x)), x) {enc['lpips_mean']:.4f} +- {enc['lpips_sd']:.4f}, "
                  f"L1 {enc['l1_mean']:.4f}")
        t0 = time.perf_counter()
        summary, rows, examples = evaluate_explainer(explainer, test, limit=args.limit,
                                                     batch_size=args.batch_size, fid="domain", lpips=lpips,
                                                     progress=False, **judges)
        wall = time.perf_counter() - t0
        times = latency(explainer, test, args.latency_n)
        summary["latency_median_s"] = statistics.median(times)
        summary["eval_wall_s"] = wall
        figure = example_grid(examples, gen.parent / f"bench_latent_probe_{compose}.png")
        results["variants"][compose] = summary
        print(f"\n== latent probe, compose={compose}: {summary['n']} test queries, {wall:.0f} s; "
              f"examples: {figure}")
        report(summary)
    out = Path(args.out) if args.out else gen.parent / "bench_latent_probe.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    main()
