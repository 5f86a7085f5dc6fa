"""Score ICAM and CycleGAN counterfactuals on a synthetic test split, with the CycleGAN
hidden-information rate (counterfactuals that flip the classifier but not the oracle).

Runs ``medcf.explain_runner.evaluate_explainer`` (validity, oracle validity, FOP, CTR,
localization, domain FID) for each given method and adds
``medcf.counterfactual.cyclegan.hidden_information`` computed from its per-query rows.
Prints and writes one JSON object.

Example:
    OMP_NUM_THREADS=1 python benchmarks/bench_translation.py --data runs/demo/data \
        --classifier runs/demo/classifier --oracle runs/demo/oracle --fo runs/demo/fo-detector \
        --ctr runs/demo/ctr-regressor --icam runs/icam --cyclegan runs/cyclegan --limit 64 \
        --out docs/results/translation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medcf.classifiers import load_classifier
from medcf.counterfactual.cyclegan import hidden_information
from medcf.data import open_dataset
from medcf.explain_runner import build_explainer, evaluate_explainer, json_safe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--oracle", required=True)
    ap.add_argument("--fo")
    ap.add_argument("--ctr")
    ap.add_argument("--icam")
    ap.add_argument("--cyclegan")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--take-at", type=float, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="METHOD:FIELD=VALUE",
                    help="explainer setting, e.g. icam:attribute=reference or cyclegan:max_steps=6")
    ap.add_argument("--out")
    args = ap.parse_args()

    test = open_dataset(args.data, split="test")
    judges = {"oracle": load_classifier(args.oracle),
              "fo_detector": load_classifier(args.fo) if args.fo else None,
              "ctr_regressor": load_classifier(args.ctr) if args.ctr else None}
    result = {"data": args.data, "limit": args.limit, "take_at": args.take_at, "methods": {}}
    for method, run in (("icam", args.icam), ("cyclegan", args.cyclegan)):
        if not run:
            continue
        opts = {"take_at": args.take_at}
        for s in args.set:
            m, _, kv = s.partition(":")
            k, _, v = kv.partition("=")
            if m == method:
                opts[k] = int(v) if v.isdigit() else float(v) if v.replace(".", "", 1).isdigit() else v
        explainer = build_explainer(method, args.classifier, run, **opts)
        t0 = time.perf_counter()
        summary, rows, _ = evaluate_explainer(explainer, test, limit=args.limit, batch_size=args.batch_size,
                                              fid="domain", fid_reference=500, progress=False, **judges)
        summary["wall_s"] = time.perf_counter() - t0
        summary["hidden_information"] = {k: v for k, v in hidden_information(rows).items() if k != "queries"}
        if method == "icam":
            summary["icam_own_classifier"] = _icam_agreement(explainer, test, args.limit)
        result["methods"][method] = summary
    text = json.dumps(json_safe(result), indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


def _icam_agreement(explainer, dataset, limit: int) -> dict:
    """How often ICAM's own classifier (on the attribute code) agrees with the explained
    classifier and with the label, on the first ``limit`` test images."""
    import torch

    n = min(limit, len(dataset))
    x = torch.stack([dataset[i]["image"] for i in range(n)])
    y = torch.tensor([int(dataset[i]["label"]) for i in range(n)])
    with torch.no_grad():
        icam = explainer.icam.eval()
        own = (icam.classify(icam.encode(x)[1]) > 0).long()
        own = torch.where(own == 1, icam.config.domain_b, icam.config.domain_a)
        clf = explainer.classifier.eval()(x).argmax(1)
    return {"agree_with_classifier": float((own == clf).float().mean()),
            "accuracy": float((own == y).float().mean()), "n": n}


if __name__ == "__main__":
    main()
