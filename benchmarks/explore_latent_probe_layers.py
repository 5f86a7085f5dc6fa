"""Exploration: does moving only some W+ layers help the latent probe? (docs/inversion.md)

Scores the latent probe of ``benchmarks/bench_latent_probe.py`` (same runs, probe
loaded from ``runs/bench_sg2/probe``) on the first ``--limit`` test images for
several ``LatentProbeConfig.layers`` choices, both frame compositions, taken at
p = 0.99999, max λ 20 σ.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/explore_latent_probe_layers.py --limit 100
"""

from __future__ import annotations

import argparse
import time

from medcf.classifiers import load_classifier
from medcf.counterfactual.latent_probe import LatentProbe, LatentProbeConfig
from medcf.data import open_dataset
from medcf.encoders import load_stylegan2_generator, load_stylegan_encoder
from medcf.explain_runner import evaluate_explainer

LAYER_CHOICES = (None, (0, 1, 2, 3), (0, 1, 2, 3, 4, 5), (2, 3, 4, 5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="runs/demo")
    ap.add_argument("--runs", default="runs/bench_sg2", help="folder with sg2/, encoder/ and probe/")
    ap.add_argument("--limit", type=int, default=100)
    args = ap.parse_args()
    G = load_stylegan2_generator(f"{args.runs}/sg2")
    enc = load_stylegan_encoder(f"{args.runs}/encoder", generator=G)
    clf = load_classifier(f"{args.demo}/classifier")
    judges = {"oracle": load_classifier(f"{args.demo}/oracle", kind="oracle"),
              "fo_detector": load_classifier(f"{args.demo}/fo-detector", kind="fo-detector"),
              "ctr_regressor": load_classifier(f"{args.demo}/ctr-regressor", kind="ctr-regressor")}
    test = open_dataset(f"{args.demo}/data", split="test")
    for layers in LAYER_CHOICES:
        for compose in ("generated", "residual"):
            config = LatentProbeConfig(compose=compose, take_at=0.99999, layers=layers, max_lambda=20.0)
            probe = LatentProbe.load_probe(f"{args.runs}/probe", generator=G, classifier=clf, encoder=enc,
                                           config=config)
            t0 = time.perf_counter()
            s, _, _ = evaluate_explainer(probe, test, limit=args.limit, fid="domain", progress=False, **judges)
            fid = s["fid"]["fid"] if s.get("fid") else float("nan")
            print(f"layers {layers or 'all'}, {compose}: validity {s['validity']:.3f}, oracle "
                  f"{s['oracle_validity']:.3f}, FOP {s['fop']['fop']:.3f}, CTR crosses "
                  f"{s['clinical']['crossed']:.3f}, AUROC {s['localization']['auroc']:.3f}, "
                  f"domain FID {fid:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
