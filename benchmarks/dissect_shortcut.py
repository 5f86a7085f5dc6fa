"""DISSECT on the shortcut task: does one concept carry the spurious marker and another the heart?

Reuses the shortcut study's models (``medcf.benchmark.shortcut``, default ``ShortcutPlan``:
the shortcut classifier trained where a token sits on every positive and the heart cue is
subtle, so it learned the token only; the foreign-object detector with a
``spurious`` output, the CTR regressor; trained first if ``--study`` does not hold them),
trains a DISSECT generator with K concepts FOR the shortcut classifier on the shortcut
data, explains the study's held-out queries toward the opposite class and prints the
concept purity matrix (``medcf.eval.purity``): per concept, the share of queries whose
counterfactual flips the marker and the share whose CTR moves toward the target.

Target (issue 13): a concept changing the marker in >= 80 % of queries while another
changes the CTR in >= 80 %.

    python benchmarks/dissect_shortcut.py --study runs/shortcut --out runs/dissect_shortcut --steps 3000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch


@torch.no_grad()
def token_route(classifier, shortcut_cfg, plan, n: int = 256) -> dict:
    """Is the token alone enough for the classifier? The study's queries rendered again with the
    token switched off / on (same draws: only ``spurious_rate`` changes), and how often that
    flips the classifier's decision: positives that carry the token, negatives that do not."""
    from medcf.benchmark.shortcut import QUERY_OFFSET
    from medcf.data.synthetic import SyntheticDataset

    def render(off: bool | None):
        cfg = shortcut_cfg if off is None else dataclasses.replace(
            shortcut_cfg, spurious_rate=0.0 if off else 1.0, spurious_negative_rate=0.0 if off else 1.0)
        ds = SyntheticDataset(cfg, n=n, seed=plan.seed, offset=QUERY_OFFSET)
        items = [ds[i] for i in range(n)]
        return (torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items]),
                torch.stack([it["spurious"] for it in items]))

    def positive(images):                                                  # [B] bool: called class 1
        return classifier.probabilities(images)[:, 1] > 0.5

    def rate(flips, sel):
        return float(flips[sel].float().mean()) if sel.any() else float("nan")

    x, y, tok = render(None)
    before = positive(x)
    pos_tok, neg_free = (y == 1) & (tok > 0), (y == 0) & (tok == 0)
    removed, added = positive(render(True)[0]), positive(render(False)[0])
    return {"positives_with_token": int(pos_tok.sum()), "negatives_without_token": int(neg_free.sum()),
            "removing_flips_positive": rate(before & ~removed, pos_tok),
            "adding_flips_negative": rate(~before & added, neg_free)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, required=True, help="shortcut study folder (made if missing)")
    ap.add_argument("--out", type=Path, required=True, help="DISSECT run folder (resumed when present)")
    ap.add_argument("--concepts", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--dis-weight", type=float, default=None,
                    help="weight of the disentangler term (default: the recipe's, DIS_WEIGHT)")
    ap.add_argument("--adv-weight", type=float, default=None,
                    help="weight of the conditional adversarial term (default: train_progressive's)")
    ap.add_argument("--d-steps", type=int, default=None,
                    help="discriminator updates per generator update (default: train_progressive's)")
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from medcf.benchmark.runner import machine
    from medcf.benchmark.shortcut import (
        QUERY_OFFSET,
        ShortcutPlan,
        _batches,
        _configs,
        _token_present,
        run_shortcut_study,
    )
    from medcf.classifiers import load_classifier
    from medcf.counterfactual.dissect import Dissect
    from medcf.data.synthetic import SyntheticDataset
    from medcf.eval.purity import concept_purity
    from medcf.generators.progressive import load_progressive
    from medcf.train.progressive import DIS_WEIGHT, train_progressive

    study_plan = ShortcutPlan()
    if (args.study / "plan.json").is_file():  # the study's own data settings, not today's defaults
        stored = json.loads((args.study / "plan.json").read_text())
        stored = {"ctr_range": [0.36, 0.66], "ctr_gap": 0.02} | stored  # older plans: the generator's defaults
        known = {f.name for f in dataclasses.fields(ShortcutPlan)}
        study_plan = ShortcutPlan(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
                                     if isinstance(v, list) else v for k, v in stored.items() if k in known})
    if not (args.study / "shortcut.json").is_file():
        run_shortcut_study(args.study, study_plan)
    plan = dataclasses.replace(study_plan, n_queries=args.queries)
    if args.dis_weight is None:
        args.dis_weight = DIS_WEIGHT
    cfg = _configs(plan)
    t0 = time.perf_counter()
    done = (args.out / "model" / "config.json").is_file()
    resume = (args.out / "train_state.pt").is_file()
    if not done or resume:
        train_progressive(SyntheticDataset(cfg["shortcut"], n=plan.n_train, seed=plan.seed), args.out,
                          classifier=args.study / "shortcut", concepts=args.concepts, steps=args.steps,
                          batch_size=args.batch_size, width=args.width, dis_weight=args.dis_weight,
                          resume=resume, **{k: v for k, v in (("adv_weight", args.adv_weight),
                                                              ("d_steps", args.d_steps)) if v is not None})
    train_s = time.perf_counter() - t0
    clf = load_classifier(args.study / "shortcut", kind="classifier").eval()
    det = load_classifier(args.study / "fo_detector", kind="fo-detector").eval()
    ctr = load_classifier(args.study / "ctr_regressor", kind="ctr-regressor").eval()
    ex = Dissect(generator=load_progressive(args.out), classifier=clf)
    queries = SyntheticDataset(cfg["shortcut"], n=plan.n_queries, seed=plan.seed, offset=QUERY_OFFSET)
    rows, n, valid = [], 0, 0.0
    for b in _batches(queries, 16):
        cf = ex.explain(b["image"])
        m = concept_purity(cf, marker_present=lambda x: _token_present(det, x), ctr=ctr)
        rows.append(m)
        n += m["n"]
        valid += float(cf.flipped.float().sum())
    K = args.concepts
    marker = [sum(r["marker"][k] * r["n"] for r in rows) / n for k in range(K)]
    heart = [sum(r["heart"][k] * r["n"] for r in rows) / n for k in range(K)]
    result = {"study_plan": dataclasses.asdict(plan), "concepts": K, "n_queries": n, "validity": valid / n, "marker": marker, "heart": heart,
              "train_s": train_s, "steps": args.steps, "width": args.width, "dis_weight": args.dis_weight,
              "adv_weight": args.adv_weight, "d_steps": args.d_steps,
              "machine": machine()}
    result["token_route"] = route = token_route(clf, cfg["shortcut"], plan)
    (args.out / "purity.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| concept | marker flipped | CTR toward target |\n| --- | --- | --- |")
    for k in range(K):
        print(f"| {k} | {marker[k]:.3f} | {heart[k]:.3f} |")
    print(f"token route (queries re-rendered with the token switched): removing it flips "
          f"{route['removing_flips_positive']:.3f} of {route['positives_with_token']} positives with a token, "
          f"adding it flips {route['adding_flips_negative']:.3f} of {route['negatives_without_token']} negatives")
    print(f"validity {valid / n:.3f} over {n} queries; {args.steps} steps, width {args.width}, "
          f"disentangler weight {args.dis_weight}; training {train_s / 60:.1f} min; {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
