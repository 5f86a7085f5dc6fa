"""The medcf demo: synthetic cardiomegaly data -> models -> Latent Shift GIFs -> evaluation report.

``medcf demo --out runs/demo`` (``make demo``; ``python -m medcf.demo`` is an alias) runs, on
the CPU, the same functions as the commands (``medcf train ...``, ``medcf explain``,
``medcf evaluate``):

1. writes the synthetic 64x64 cardiomegaly benchmark (``OUT/data``);
2. trains the classifier to explain, an independent oracle, a foreign-object
   detector and a CTR regressor (``OUT/classifier`` ...), printing their test figures;
3. trains a VAE (``OUT/vae``) and prints its validation reconstruction figures;
4. explains 16 test images with Latent Shift toward the opposite class
   (``OUT/explain``: a GIF, a frame strip, a difference map and a JSON per image);
5. evaluates Latent Shift on the test split (``OUT/evaluation``: metrics.json,
   queries.csv, report.md with figures) and prints the summary.

``--quick`` is a tiny smoke run (32 px, a few steps; seconds, meaningless figures).
Wall time and peak memory go to ``OUT/demo.json``. See docs/demo.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from medcf.errors import MedcfError


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and steps of every stage (the full plan fits 15 minutes on 2 idle CPU cores)."""

    resolution: int = 64
    n: int = 4000                                  # synthetic images (80/10/10 train/val/test)
    # four narrow stages: cheap at 64 px, with a receptive field wide enough to compare heart
    # and thorax widths; batch 32 halves the cost per step.  (widths, steps, batch size)
    classifier: tuple = ((8, 16, 32, 64), 500, 32)
    oracle: tuple = ((12, 24, 48, 96), 500, 32)
    fo_detector: tuple = ((8, 16, 32, 64), 400, 32)
    ctr_regressor: tuple = ((8, 16, 32, 64), 800, 32)
    generator_kind: str = "vae"                    # "vae" | "ae"
    # (widths, steps, batch size): two halvings -> an 8x16x16 latent, which keeps pacemaker
    # leads, electrodes and the marker (an 8x8 latent blurs them away: FOP 0)
    generator: tuple = ((16, 32), 1500, 32)
    n_explain: int = 16                            # images written as GIFs
    n_evaluate: int = 128                          # test images scored in the report
    iterative: bool = True                         # Latent Shift: iterative (flips more) or single gradient
    # where the counterfactual is taken on the path: the classifier is so confident that p = 0.5
    # sits on a tiny change the oracle does not follow; p >= 0.99999 (log-odds 11.5) is a visible
    # change of the heart (docs/latent-shift-benchmark.md). Validity stays judged at p >= 0.5.
    take_at: float = 0.99999
    # frames: the input plus the decoder's change keeps leads, electrodes and markers the VAE
    # cannot draw (FOP 0.67 -> 0.997 on the benchmark); the library default (docs/defaults.md)
    compose: str = "residual"
    stop_probability: float = 0.999999             # the GIF's path goes on to here
    batch_size: int = 16


QUICK = DemoPlan(resolution=32, n=120, classifier=((4, 8), 6, 16), oracle=((4, 8), 6, 16),
                 fo_detector=((4, 8), 6, 16), ctr_regressor=((4, 8), 6, 16),
                 generator=((4, 8), 6, 16), n_explain=4, n_evaluate=8, batch_size=4)

ROLES = (("classifier", "classifier"), ("oracle", "oracle"), ("fo-detector", "fo_detector"),
         ("ctr-regressor", "ctr_regressor"))




def _peak_rss_mb() -> dict[str, float]:
    """Peak resident memory (MiB) of this process and of its finished children (Linux: KiB units)."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale}


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise MedcfError(f"{out}: --out is not empty; pass --overwrite to replace the demo there")
        for name in ("data", "classifier", "oracle", "fo-detector", "ctr-regressor", "vae", "ae",
                     "explain", "evaluation", "demo.json"):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _figures(d: dict) -> str:
    parts = []
    for k, v in d.items():
        if isinstance(v, float):
            parts.append(f"{k} {v:.4f}")
        elif isinstance(v, dict):
            parts.append(f"{k} {{{_figures(v)}}}")
        elif k != "n":
            parts.append(f"{k} {v}")
    return ", ".join(parts)


def run_demo(out: str | os.PathLike, plan: DemoPlan = DemoPlan(), *, overwrite: bool = False,
             progress: bool = True, workers: int = 2, echo=print) -> dict:
    """Run every stage of the demo into ``out``; returns the figures written to ``OUT/demo.json``.

    Example:
        >>> run_demo("runs/demo_quick", QUICK, overwrite=True)   # doctest: +SKIP
    """
    from medcf.cli.explain import run_evaluation, run_explain
    from medcf.data import SynthConfig, write_synthetic
    from medcf.eval.report_md import HEADLINE, lookup
    from medcf.io import atomic_write_text
    from medcf.train.autoencoders import train_autoencoder
    from medcf.train.classifiers import train_classifier

    out = Path(out)
    _prepare(out, overwrite)
    t_start = time.perf_counter()
    stages: dict[str, float] = {}
    result: dict = {"plan": asdict(plan)}

    # 1. data
    t0 = time.perf_counter()
    summary = write_synthetic(SynthConfig(task="cardiomegaly", resolution=plan.resolution), plan.n,
                              out / "data", seed=0, workers=workers, progress=progress)
    stages["data"] = time.perf_counter() - t0
    echo(f"[1/5] data: {summary.n} synthetic {plan.resolution}px cardiomegaly images "
         f"({stages['data']:.0f} s) -> {out / 'data'}")

    # 2. the four classifier roles
    tests = {}
    for i, (role, field) in enumerate(ROLES):
        widths, steps, batch = getattr(plan, field)
        t0 = time.perf_counter()
        res = train_classifier(out / "data", out / role, role=role, widths=widths,
                               blocks=(1,) * len(widths), steps=steps, batch_size=batch,
                               val_every=0, progress=progress, checkpoint_every=0)
        stages[role] = time.perf_counter() - t0
        tests[role] = res.test
        echo(f"[2/5] {role} ({i + 1}/4, {steps} steps, {stages[role]:.0f} s) test: {_figures(res.test)}")
    result["test"] = tests

    # 3. generator
    kind = plan.generator_kind
    widths, steps, batch = plan.generator
    t0 = time.perf_counter()
    gen = train_autoencoder(out / "data", out / kind, kind=kind, steps=steps, batch_size=batch,
                            widths=widths, val_every=0, progress=progress, checkpoint_every=0)
    stages[kind] = time.perf_counter() - t0
    result["generator_val"] = gen.val
    echo(f"[3/5] {kind} ({steps} steps, {stages[kind]:.0f} s) validation: {_figures(gen.val)}")

    # 4. GIFs for a few test images (what `medcf explain` does)
    t0 = time.perf_counter()
    settings = {"iterative": plan.iterative, "take_at": plan.take_at, "stop_probability": plan.stop_probability,
                "compose": plan.compose}
    quiet = lambda *_: None  # noqa: E731 (the demo prints its own summary lines)
    records = run_explain("latent-shift", out / "classifier", out / kind, out / "data", out / "explain",
                          flags=settings, split="test", limit=plan.n_explain, batch_size=plan.batch_size,
                          overwrite=True, progress=progress, echo=quiet)
    flipped = sum(bool(r["flipped"]) for r in records)
    stages["explain"] = time.perf_counter() - t0
    result["n_explained"] = len(records)
    echo(f"[4/5] explained {len(records)} test images ({flipped} reach the opposite class, "
         f"{stages['explain']:.0f} s) -> {out / 'explain'} (GIF, strip, map, JSON each)")

    # 5. evaluation report (what `medcf evaluate` does)
    t0 = time.perf_counter()
    ev_summary = run_evaluation(
        "latent-shift", out / "classifier", out / kind, out / "data", out / "evaluation", flags=settings,
        split="test", oracle=out / "oracle", fo_detector=out / "fo-detector",
        ctr_regressor=out / "ctr-regressor", limit=plan.n_evaluate, batch_size=plan.batch_size,
        overwrite=True, progress=progress, extra_settings={"demo": True}, echo=quiet)
    stages["evaluate"] = time.perf_counter() - t0
    result["evaluation"] = {label: lookup(ev_summary, key) for key, label, _ in HEADLINE
                            if lookup(ev_summary, key) is not None}
    echo(f"[5/5] evaluation of {ev_summary['n']} test queries ({stages['evaluate']:.0f} s) -> "
         f"{out / 'evaluation' / 'report.md'}")
    for key, value in result["evaluation"].items():
        echo(f"    {key:>26}: {value:.4f}" if isinstance(value, float) else f"    {key:>26}: {value}")

    result["stages_s"] = {k: round(v, 1) for k, v in stages.items()}
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["peak_rss_mb"] = {k: round(v, 1) for k, v in _peak_rss_mb().items()}
    result["machine"] = {"cpu_count": os.cpu_count(), "loadavg_end": list(os.getloadavg()),
                         "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    try:
        import torch

        result["machine"]["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    atomic_write_text(out / "demo.json", json.dumps(result, indent=2, default=str) + "\n")
    echo(f"done in {result['wall_s'] / 60:.1f} min, peak memory {result['peak_rss_mb']['self']:.0f} MiB "
         f"(workers {result['peak_rss_mb']['children']:.0f} MiB); GIFs in {out / 'explain'}, "
         f"report in {out / 'evaluation' / 'report.md'}")
    return result


def main(argv: list[str] | None = None) -> dict:
    """``python -m medcf.demo ARGS`` (the alias of ``medcf demo``); returns the figures."""
    ap = argparse.ArgumentParser(prog="python -m medcf.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo", help="demo folder (default runs/demo)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    ap.add_argument("--overwrite", action="store_true", help="replace a demo already in --out")
    ap.add_argument("--generator-kind", choices=("vae", "ae"), default=None, help="generator (default vae)")
    ap.add_argument("--single-gradient", action="store_true", help="Cohen's single-gradient Latent Shift (default iterative)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--workers", type=int, default=2, help="processes writing the synthetic data")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else DemoPlan()
    if args.generator_kind:
        plan = replace(plan, generator_kind=args.generator_kind)
    if args.single_gradient:
        plan = replace(plan, iterative=False)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_demo(args.out, plan, overwrite=args.overwrite,
                        progress=not args.no_progress, workers=1 if args.quick else args.workers)
    except MedcfError as e:
        print(f"medcf demo: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
