"""Benchmark: Latent Shift (single gradient vs iterative) on the synthetic 64x64 cardiomegaly test split.

Uses the demo's models (``python -m medcf.demo --out runs/demo`` first): the
classifier to explain, the VAE, and as judges the oracle, the foreign-object
detector and the CTR regressor. Every test image is explained toward the class
opposite to the classifier's decision and scored with
``medcf.eval.evaluate_counterfactuals`` (definitions in docs/metrics.md):

- validity (classifier reaches the target, p >= 0.5), oracle validity,
- FOP (detector-based foreign-object preservation),
- fraction whose CTR (regressor) crosses 0.5 toward the target (``clinical.crossed``),
- localization AUROC of |difference| against the heart-border band (3 px),
- median seconds per explanation, measured one image at a time (batch size 1)
  on the first ``--latency-n`` images; the batched figure is printed too.

Targets from the issue: validity >= 0.95, oracle validity >= 0.90, FOP >= 0.95,
CTR crosses 0.5 in >= 90 %, localization AUROC >= 0.85, median time <= 0.5 s on
2 CPU cores.

Usage:
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_latent_shift.py --demo runs/demo --limit 400
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import latency, machine

from medcf.classifiers import load_classifier
from medcf.data import open_dataset
from medcf.eval.report_md import lookup
from medcf.explain_runner import build_latent_shift, evaluate_explainer

TARGETS = (  # (label, summary key, comparison, bar)
    ("validity", "validity", ">=", 0.95),
    ("oracle validity", "oracle_validity", ">=", 0.90),
    ("FOP", "fop.fop", ">=", 0.95),
    ("CTR crosses 0.5", "clinical.crossed", ">=", 0.90),
    ("localization AUROC", "localization.auroc", ">=", 0.85),
    ("median s / explanation (batch 1)", "latency_median_s", "<=", 0.5),
)





def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default="runs/demo", help="demo folder with data/ and the models")
    ap.add_argument("--generator", default=None, help="generator run (default DEMO/vae, else DEMO/ae)")
    ap.add_argument("--limit", type=int, default=400, help="test images scored per variant")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--latency-n", type=int, default=40, help="images timed one at a time")
    ap.add_argument("--variants", default="single,iterative", help="single, iterative or both")
    ap.add_argument("--threshold", type=float, default=None,
                    help="LatentShiftConfig.threshold: where the counterfactual is taken on the path "
                         "(default 0.5); the metrics judge validity at the same threshold")
    ap.add_argument("--compose", default="generated", choices=("generated", "residual"),
                    help="frames: the decoder's images (Cohen et al.) or input + the decoder's change")
    ap.add_argument("--take-at", type=float, default=None,
                    help="take the counterfactual at this probability (LatentShiftConfig.take_at); "
                         "validity is still judged at the threshold, as in the demo")
    ap.add_argument("--out", default=None, help="write results JSON here (default DEMO/bench_latent_shift.json)")
    args = ap.parse_args()

    demo = Path(args.demo)
    gen = Path(args.generator) if args.generator else (demo / "vae" if (demo / "vae").exists() else demo / "ae")
    test = open_dataset(demo / "data", split="test")
    judges = {"oracle": load_classifier(demo / "oracle", kind="oracle"),
              "fo_detector": load_classifier(demo / "fo-detector", kind="fo-detector"),
              "ctr_regressor": load_classifier(demo / "ctr-regressor", kind="ctr-regressor")}
    info = machine()
    print(f"machine: {info}")
    results = {"machine": info, "demo": str(demo), "generator": str(gen), "limit": args.limit,
               "threshold": args.threshold, "take_at": args.take_at, "compose": args.compose, "variants": {}}
    for variant in args.variants.split(","):
        taken = args.take_at or args.threshold
        explainer = build_latent_shift(demo / "classifier", gen, iterative=(variant == "iterative"),
                                       threshold=args.threshold, take_at=args.take_at, compose=args.compose,
                                       stop_probability=max(0.9, taken or 0.0))
        t0 = time.perf_counter()
        summary, rows, _ = evaluate_explainer(explainer, test, limit=args.limit,
                                              batch_size=args.batch_size, fid="domain",
                                              progress=False, **judges)
        wall = time.perf_counter() - t0
        times = latency(explainer, test, args.latency_n)
        summary["latency_median_s"] = statistics.median(times)
        summary["latency_p90_s"] = sorted(times)[int(0.9 * (len(times) - 1))]
        summary["eval_wall_s"] = wall
        results["variants"][variant] = summary
        print(f"\n== {variant} gradient Latent Shift, {args.compose} frames: {summary['n']} test queries, "
              f"{wall:.0f} s")
        for label, key, op, bar in TARGETS:
            v = lookup(summary, key)
            ok = v is not None and (v >= bar if op == ">=" else v <= bar)
            gap = "" if ok or v is None else f"  (misses by {abs(v - bar):.3f})"
            shown = "n/a" if v is None else f"{v:.3f}"
            print(f"  {label:>34}: {shown:>7}  target {op} {bar}  {'OK' if ok else 'MISSED'}{gap}")
        print(f"  {'batched s / explanation':>34}: {summary['seconds_per_explanation']:.3f} "
              f"(batch {args.batch_size})")
        print(f"  {'not found':>34}: {summary['not_found_rate']:.3f}")
        if summary.get("fid"):
            print(f"  {'FID (' + str(summary['fid']['extractor']) + ')':>34}: {summary['fid']['fid']}")
    out = Path(args.out) if args.out else demo / "bench_latent_shift.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    main()
