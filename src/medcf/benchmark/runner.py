"""``medcf benchmark``: every explainer on the same data, judges, queries and metrics.

``run_benchmark`` runs, per task of the profile (or ``tasks``):

1. data: the synthetic benchmark (or ``data``, a dataset folder);
2. judges: the classifier to explain, the oracle, the foreign-object detector and
   (cardiomegaly) the CTR regressor (``medcf.train.classifiers``);
3. every benchmarked method: its ``prepare`` hook trains or reuses its backbones
   (``medcf.counterfactual.registry``), ``build`` makes the explainer, and
   ``evaluate_explainer`` explains the first ``n_queries`` test images toward the
   opposite class and scores them (``medcf.eval``);
4. the captum attribution baselines on the same queries (localization only);

then writes ``OUT/results.csv``, ``OUT/results.md`` and ``OUT/report.html``.
Every stage is cached under ``OUT/cache`` by a hash of its configuration
(``medcf.benchmark.cache``); each finished (method, task) row is kept in
``OUT/rows/TASK/METHOD``. A run that was interrupted is continued with
``resume=True`` (interrupted training continues from its last checkpoint, an interrupted
row from its last finished batch: ``medcf.benchmark.journal``).

Example:
    >>> from medcf.benchmark import load_profile, run_benchmark
    >>> rows = run_benchmark("runs/bench", load_profile("quick"))          # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from medcf.benchmark.cache import cached_stage, config_hash, stage_checkpoint_every, stage_seconds
from medcf.benchmark.profile import JUDGE_ROLES, Profile
from medcf.benchmark.results import (
    COLUMNS,
    COUNTERFACTUAL_COLUMNS,
    merge_rows,
    read_results,
    results_markdown,
    write_results_csv,
)
from medcf.benchmark.tasks import CPR_TASKS, CTR_TASKS, check_task
from medcf.errors import MedcfError
from medcf.io import atomic_write_text, read_header

STATE_FILE = "benchmark.json"
BASELINES = {"baseline-saliency": "saliency", "baseline-ig": "ig", "baseline-gradcam": "gradcam"}


@dataclass(frozen=True)
class Selection:
    """Which rows a run makes: methods with a prepare hook, baselines, and those left out (why)."""

    methods: tuple[str, ...]
    baselines: tuple[str, ...]
    not_benchmarked: dict[str, str]
    explicit: bool                          # named with --methods: their rows are recomputed


def select_methods(names: str | list[str] | None, profiled: Iterable[str] | None = None) -> Selection:
    """Check ``--methods`` against the method table and the baselines (one-line error on a typo,
    a method without a prepare hook, or a missing dependency). Without ``--methods`` a run makes
    the rows of the methods the profile has a ``[methods.NAME]`` table for (``profiled``; None:
    every method with a hook), so a profile's budget is the profile's own."""
    from medcf.counterfactual.registry import METHODS

    no_hook = {m: "no prepare hook in the method table yet (medcf.counterfactual.registry)"
               for m, s in METHODS.items() if s.prepare is None}
    known = sorted(METHODS) + list(BASELINES)
    if names is None or names == "" or names == []:
        chosen = [m for m in sorted(METHODS) if METHODS[m].prepare is not None] + list(BASELINES)
        if profiled is not None:
            tables = set(profiled)
            no_hook.update({m: "no [methods.NAME] table in this profile (--methods NAME runs it at its hook's "
                               "defaults)" for m in chosen if m not in BASELINES and m not in tables})
            chosen = [m for m in chosen if m in BASELINES or m in tables]
        explicit = False
    else:
        chosen = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        chosen = [n for n in chosen if n]
        for n in chosen:
            if n not in known:
                raise MedcfError(f"--methods: unknown method {n!r}; choose from {known}")
            if n in no_hook:
                raise MedcfError(f"--methods: {n} is not benchmarked: {no_hook[n]}")
        explicit = True
    for n in chosen:
        if n in BASELINES:
            if importlib.util.find_spec("captum") is None:
                raise MedcfError(f"--methods: {n} needs the 'captum' package (pip install captum)")
            continue
        for mod in getattr(METHODS[n].prepare, "requires", ()):  # optional: modules a hook needs
            if importlib.util.find_spec(mod) is None:
                raise MedcfError(f"--methods: {n} needs the {mod!r} package, which is not installed")
    return Selection(tuple(m for m in chosen if m not in BASELINES), tuple(m for m in chosen if m in BASELINES),
                     {m: why for m, why in no_hook.items() if m not in chosen}, explicit)


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parents[3]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return (out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")) if out.returncode == 0 \
            else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
            f"{torch.get_num_threads()}, load average at start {os.getloadavg()[0]:.1f}, "
            f"CUDA {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    import resource

    return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def _num(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _open_out(out: Path, profile: Profile, resume: bool) -> dict:
    """Create or reopen OUT: refuse foreign folders, another profile, or an unfinished run without resume."""
    state_path = out / STATE_FILE
    if out.exists() and not out.is_dir():
        raise MedcfError(f"{out}: --out exists and is not a folder")
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("profile") != profile.name:
            raise MedcfError(f"{out}: holds a benchmark of another profile ({state.get('profile')}); "
                             "choose another --out")  # changed settings of the same profile: new hashes
        if state.get("state") == "running" and not resume:
            raise MedcfError(f"{out}: holds an interrupted benchmark; pass --resume to continue it")
        return state
    if out.is_dir() and any(out.iterdir()):
        raise MedcfError(f"{out}: --out is not empty and holds no benchmark; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    return {"profile": profile.name}


def _save_state(out: Path, state: dict) -> None:
    atomic_write_text(out / STATE_FILE, json.dumps(state, indent=2, default=str) + "\n")


def _user_data(data: str | os.PathLike, task: str) -> Path:
    """``--data`` for ``task``: DATA/TASK when that folder exists, else DATA; its task must match."""
    from medcf.data import open_dataset
    from medcf.explain_runner import dataset_task

    p = Path(data) / task if (Path(data) / task).is_dir() else Path(data)
    found = dataset_task(open_dataset(p, split="test"))
    if found is not None and found != task:
        raise MedcfError(f"{p}: --data holds the {found} task, not {task}; pass --task {found}")
    return p


def _prepare_data(out: Path, profile: Profile, task: str, data: str | None, progress: bool) -> Path:
    from medcf.data import SynthConfig, write_synthetic

    if data is not None:
        return _user_data(data, task)
    cfg = {"task": task, "resolution": profile.data["resolution"], "n": profile.data["n"],
           "seed": profile.seed}
    return cached_stage(out / "cache", f"data-{task}", cfg, lambda d, resume: write_synthetic(
        SynthConfig(task=task, resolution=cfg["resolution"]), cfg["n"], d, seed=profile.seed, overwrite=True,
        workers=1, progress=progress), resumable=False)


def _prepare_judges(out: Path, profile: Profile, task: str, data_dir: Path, progress: bool) -> dict[str, Path]:
    from medcf.train.classifiers import train_classifier

    dirs = {}
    for role, key in JUDGE_ROLES:
        if role == "ctr-regressor" and task not in CTR_TASKS:
            continue
        j = profile.judges[key]
        cfg = {"data": str(data_dir), "role": role, "widths": list(j["widths"]), "steps": j["steps"],
               "batch_size": j["batch_size"], "seed": profile.seed}
        dirs[role] = cached_stage(out / "cache", role, cfg, lambda d, resume, j=j, role=role: train_classifier(
            data_dir, d, role=role, widths=tuple(j["widths"]), blocks=(1,) * len(j["widths"]),
            steps=j["steps"], batch_size=j["batch_size"], val_every=0, resume=resume, progress=progress,
            checkpoint_every=stage_checkpoint_every(j["steps"])))
    if task in CPR_TASKS:  # the recess scorer: [judges.cpr_scorer], else the CTR regressor's sizes
        j = profile.judges.get("cpr_scorer") or profile.judges["ctr_regressor"]
        cfg = {"data": str(data_dir), "role": "cpr-scorer", "widths": list(j["widths"]), "steps": j["steps"],
               "batch_size": j["batch_size"], "seed": profile.seed}
        dirs["cpr-scorer"] = cached_stage(out / "cache", "cpr-scorer", cfg, lambda d, resume: train_classifier(
            data_dir, d, role="cpr-scorer", widths=tuple(j["widths"]), blocks=(1,) * len(j["widths"]),
            steps=j["steps"], batch_size=j["batch_size"], val_every=0, resume=resume, progress=progress,
            checkpoint_every=stage_checkpoint_every(j["steps"])))
    return dirs


def _save_examples(row_dir: Path, examples: list, kind: str) -> None:
    """The report's grid: inputs, counterfactuals/maps and probabilities along the path."""
    from safetensors.torch import save_file

    from medcf.explain_runner import query_record

    if not examples:
        return
    if kind == "counterfactual":
        tensors = {"original": torch.cat([cf.original.detach().cpu() for cf in examples]).float(),
                   "counterfactual": torch.cat([cf.counterfactual.detach().cpu() for cf in examples]).float(),
                   "difference": torch.cat([cf.difference.detach().cpu() for cf in examples]).float()}
        meta = []
        for cf in examples:
            rec = query_record(cf, 0, name="")
            meta.append({k: rec.get(k) for k in ("target", "target_name", "prob_original",
                                                 "prob_counterfactual", "path_probs")})
    else:
        tensors = {"original": examples[0], "map": examples[1]}
        meta = [{} for _ in range(examples[0].shape[0])]
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(row_dir / "examples.safetensors"))
    atomic_write_text(row_dir / "examples.json", json.dumps({"kind": kind, "queries": meta}, indent=2) + "\n")


def _counterfactual_row(name: str, task: str, summary: dict, seconds: float, train_s: float | None,
                        lpips_note: str) -> tuple[dict, dict]:
    n = int(summary.get("n", 0))
    row = {"method": name, "task": task, "n_queries": n, "validity": _num(summary.get("validity")),
           "cv_singla": _num(_get(summary, "singla_cv.cv")),
           "oracle_validity": _num(summary.get("oracle_validity")), "fop": _num(_get(summary, "fop.fop")),
           "fid_domain": _num(_get(summary, "fid.fid")), "lpips": _num(summary.get("lpips")),
           "l1": _num(summary.get("l1")), "ncc": _num(_get(summary, "localization.ncc")),
           "auroc": _num(_get(summary, "localization.auroc")),
           "ctr_cross": _num(_get(summary, "clinical.crossed")),
           "cpr_change": _num(_get(summary, "clinical_cpr.cpr_change")),
           "sec_per_query": seconds / n if n else None,
           "train_min": train_s / 60 if train_s is not None else None}
    why = {"cv_singla": "no query with f(x) > 0.8 (nothing eligible)",
           "oracle_validity": "no oracle", "fop": "the detector found no foreign object in the queries",
           "fid_domain": "fewer than 2 valid counterfactuals",
           "lpips": lpips_note,
           "ncc": "undefined: the difference maps are constant (no change) or no truth region",
           "auroc": "undefined: no truth region for this task",
           "ctr_cross": "CTR is the class-relevant factor of cardiomegaly only" if task not in CTR_TASKS
           else "no CTR regressor",
           "cpr_change": "no recess scorer" if task in CPR_TASKS else "the recess is the class-relevant factor of "
           "effusion only", "train_min": "not recorded"}
    return row, {c: why.get(c, "not computed") for c in COLUMNS if row.get(c) is None}


def _run_method(name: str, task: str, ctx: dict, *, row_hash: str = "", fresh: bool = True) -> tuple[dict, dict]:
    """One counterfactual row; its explanations are journaled under its row folder (``RowJournal``,
    keyed by ``row_hash``) so that an interrupted row resumes unless ``fresh``."""
    from medcf.benchmark.journal import RowJournal
    from medcf.counterfactual.registry import METHODS
    from medcf.explain_runner import build_explainer, evaluate_explainer

    spec = METHODS[name]
    method_dir = ctx["out"] / "methods" / name / task
    section = dict(ctx["profile"].methods.get(name, {}))
    t0 = time.perf_counter()
    kw = spec.prepare(ctx["data_dir"], method_dir, classifier_dir=ctx["judges"]["classifier"], task=task,
                      profile=section, device=ctx["device"], seed=ctx["profile"].seed, progress=ctx["progress"])
    prepare_s = time.perf_counter() - t0
    kw = dict(kw)
    generator_dir = kw.pop("generator_dir")
    t0 = time.perf_counter()
    explainer = build_explainer(name, ctx["judges"]["classifier"], generator_dir, device=ctx["device"],
                                progress=ctx["progress"], **kw)
    build_s = time.perf_counter() - t0
    # the recorded times of the stages the build uses (paths among its keywords), not stale ones
    used = {str(v) for v in (generator_dir, *kw.values()) if isinstance(v, (str, os.PathLike))}
    recorded = stage_seconds(Path(v) for v in used if Path(v).is_dir())
    train_s = (recorded if recorded > 0 else prepare_s) + build_s
    row_dir = ctx["out"] / "rows" / task / name
    journal = RowJournal(explainer, row_dir / "journal", key=row_hash, fresh=fresh)
    ev = ctx["profile"].evaluate
    summary, _rows, examples = evaluate_explainer(
        explainer, ctx["test"], limit=ev["n_queries"], batch_size=ev["batch_size"], n_examples=ev["n_examples"],
        fid="domain", fid_reference=ev["fid_reference"], lpips=ctx["lpips"], progress=ctx["progress"],
        **ctx["judge_models"])
    if journal.replayed:
        ctx["echo"](f"{name} ({task}): {journal.replayed} batches of the interrupted row taken from {journal.folder}")
    row, notes = _counterfactual_row(name, task, summary, journal.seconds, train_s, ctx["lpips_note"])
    _save_examples(row_dir, examples, "counterfactual")
    atomic_write_text(row_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    journal.close()
    return row, notes


def _run_baseline(name: str, task: str, ctx: dict) -> tuple[dict, dict]:
    import captum.attr  # noqa: F401  (imported before the timed calls)
    from torch.utils.data import DataLoader, Subset

    from medcf.eval.attribution import attribution_maps, map_localization

    ev = ctx["profile"].evaluate
    clf = ctx["classifier"]
    queries = Subset(ctx["test"], range(min(ev["n_queries"], len(ctx["test"]))))
    nccs, aurocs, seconds, kept_x, kept_a = [], [], 0.0, [], []
    for batch in DataLoader(queries, batch_size=ev["batch_size"], shuffle=False):
        x = batch["image"].to(ctx["device"])
        t0 = time.perf_counter()
        a = attribution_maps(clf, x, BASELINES[name], n_steps=int(ctx["profile"].baselines.get("ig_steps", 32)))
        seconds += time.perf_counter() - t0
        loc = map_localization(a, batch, task)
        nccs.append(loc["ncc"])
        aurocs.append(loc["auroc"])
        if sum(k.shape[0] for k in kept_x) < ev["n_examples"]:
            kept_x.append(x.cpu())
            kept_a.append(a.cpu())
    ncc, auroc = torch.cat(nccs), torch.cat(aurocs)
    n = int(ncc.numel())
    mean = lambda t: float(t[~t.isnan()].mean()) if (~t.isnan()).any() else None  # noqa: E731
    row = {"method": name, "task": task, "n_queries": n, "ncc": mean(ncc), "auroc": mean(auroc),
           "sec_per_query": seconds / n if n else None}
    notes = {c: "an attribution map, not a counterfactual" for c in COUNTERFACTUAL_COLUMNS}
    notes["train_min"] = "nothing to train (captum on the explained classifier)"
    for c in ("ncc", "auroc"):
        if row[c] is None:
            notes[c] = "undefined: constant attribution maps or no truth region"
    row_dir = ctx["out"] / "rows" / task / name
    row_dir.mkdir(parents=True, exist_ok=True)
    k = ev["n_examples"]
    _save_examples(row_dir, [torch.cat(kept_x)[:k], torch.cat(kept_a)[:k]], "attribution")
    return row, notes


def _run_shortcut(out: Path, profile: Profile, device: str, progress: bool) -> str:
    """The shortcut-detection study with the profile's ``[shortcut]`` overrides of ``ShortcutPlan``."""
    import dataclasses

    from medcf.benchmark.shortcut import ShortcutPlan, run_shortcut_study

    fields = {f.name: f for f in dataclasses.fields(ShortcutPlan)}
    table = dict(profile.as_dict().get("shortcut") or {})
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise MedcfError(f"{profile.source} [shortcut]: unknown keys {unknown}; known: {sorted(fields)}")
    plan = ShortcutPlan(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list)
                           else v for k, v in table.items()}, seed=profile.seed)
    res = run_shortcut_study(out / "shortcut", plan, device=device, progress=progress)
    return str(res.markdown_path)


def _load_lpips(profile: Profile, echo) -> tuple[object | None, str]:
    """The LPIPS metric when the profile asks for it and its weights are installed, and the note otherwise."""
    if not profile.evaluate.get("lpips"):
        return None, "LPIPS is off in this profile"
    try:
        from medcf.eval import LPIPS

        return LPIPS("alex"), ""
    except MedcfError as e:
        echo(f"LPIPS off: {e}")
        return None, "LPIPS weights not installed (medcf weights import-lpips)"


@dataclass(frozen=True)
class TaskJob:
    """What one task's run needs (picklable: ``medcf.benchmark.parallel`` hands it to a worker process)."""

    out: Path
    profile: Profile
    sel: Selection
    device: str
    data: str | None
    progress: bool
    hashes: dict[str, str]                  # "method|task" -> hash of the row kept from earlier runs
    recompute: bool                         # rows named with --methods are recomputed


def run_task(task: str, tag: str, job: TaskJob, report, echo) -> None:
    """One task of a benchmark: its data, judges and rows (or the shortcut study).

    ``report(kind, payload)`` is told of every result as soon as it exists: ``("judges", (task, tests))``,
    ``("row", (key, entry, why))`` and ``("study", (name, path))``; the caller records them
    (``_Recorder``), in this process or, with ``jobs > 1``, in the parent of a worker.
    """
    from medcf.classifiers import load_classifier
    from medcf.counterfactual.registry import METHODS
    from medcf.data import open_dataset

    out, profile, device, progress = job.out, job.profile, job.device, job.progress
    if task == "shortcut":  # its own study (medcf.benchmark.shortcut): two classifiers, one table
        path = _run_shortcut(out, profile, device, progress)
        report("study", ("shortcut", path))
        echo(f"{tag} shortcut study: {path}")
        return
    lpips, lpips_note = _load_lpips(profile, echo)
    t0 = time.perf_counter()
    data_dir = _prepare_data(out, profile, task, job.data, progress)
    echo(f"{tag} data: {data_dir} ({time.perf_counter() - t0:.0f} s)")
    t0 = time.perf_counter()
    judges = _prepare_judges(out, profile, task, data_dir, progress)
    echo(f"{tag} judges: {', '.join(judges)} ({time.perf_counter() - t0:.0f} s)")
    report("judges", (task, {role: read_header(d).get("meta", {}).get("test") for role, d in judges.items()}))
    judge_models = {"oracle": load_classifier(judges["oracle"], kind="oracle", device=device),
                    "fo_detector": load_classifier(judges["fo-detector"], kind="fo-detector", device=device),
                    "ctr_regressor": load_classifier(judges["ctr-regressor"], kind="ctr-regressor",
                                                     device=device) if "ctr-regressor" in judges else None,
                    "cpr_scorer": load_classifier(judges["cpr-scorer"], kind="cpr-scorer", device=device)
                    if "cpr-scorer" in judges else None}
    ctx = {"out": out, "profile": profile, "data_dir": data_dir, "judges": judges, "device": device, "echo": echo,
           "progress": progress, "lpips": lpips, "lpips_note": lpips_note, "judge_models": judge_models,
           "test": open_dataset(data_dir, split="test"),
           "classifier": load_classifier(judges["classifier"], device=device)}
    for name in job.sel.methods + job.sel.baselines:
        if name in METHODS and task not in METHODS[name].tasks:
            echo(f"{tag} {name}: skipped (the method has no {task} rows)")
            continue
        key = f"{name}|{task}"
        row_hash = config_hash({"data": str(data_dir), "judges": {k: str(v) for k, v in judges.items()},
                                "method": profile.methods.get(name), "evaluate": profile.evaluate,
                                "baselines": profile.baselines if name in BASELINES else None,
                                "device": device, "lpips": lpips is not None})
        if not job.recompute and job.hashes.get(key) == row_hash:
            echo(f"{tag} {name}: done earlier, kept")
            continue
        t0 = time.perf_counter()
        if name in BASELINES:
            row, why = _run_baseline(name, task, ctx)
        else:
            row, why = _run_method(name, task, ctx, row_hash=row_hash, fresh=job.recompute)
        report("row", (key, {"hash": row_hash, "row": row}, why))
        shown = ", ".join(f"{c} {row[c]:.3f}" for c in ("validity", "auroc", "sec_per_query")
                          if row.get(c) is not None)
        echo(f"{tag} {name}: {shown} ({time.perf_counter() - t0:.0f} s)")


class _Recorder:
    """Records results into OUT/benchmark.json as they land, so that an interrupted run resumes."""

    def __init__(self, out: Path, state: dict):
        self.out, self.state = out, state
        self.rows: dict = state.setdefault("rows", {})
        self.notes: dict = state.setdefault("notes", {})
        self.judges: dict = state.setdefault("judges", {})
        self.studies: dict = {}

    def __call__(self, kind: str, payload) -> None:
        if kind == "judges":
            task, tests = payload
            self.judges[task] = tests
        elif kind == "row":
            key, entry, why = payload
            self.rows[key], self.notes[key] = entry, why
        elif kind == "study":
            name, path = payload
            self.studies[name] = path
            return
        else:
            raise ValueError(f"unknown result kind {kind!r}")
        _save_state(self.out, self.state)


def default_jobs(tasks: list[str], device: str) -> int:
    """Tasks run at once by default: one process per task and usable CPU on a CPU run, else one."""
    from medcf.threads import usable_cpus

    if device != "cpu":
        return 1
    return max(1, min(len(tasks), usable_cpus()))


def run_benchmark(out: str | os.PathLike, profile: Profile, *, methods: str | list[str] | None = None,
                  tasks: list[str] | None = None, device: str = "cpu", resume: bool = False,
                  data: str | os.PathLike | None = None, progress: bool = True, echo=print,
                  command: str | None = None, jobs: int | None = None) -> list[dict]:
    """Run the benchmark into ``out``; returns the rows of OUT/results.csv (all of them, merged).

    ``jobs``: tasks run at once, each in its own process with its share of the torch threads
    (``None``: ``default_jobs``); with more than one, progress bars are off and each finished
    stage and row is printed instead.

    Example:
        >>> run_benchmark("runs/bench", load_profile("quick"), methods="latent-shift")   # doctest: +SKIP
    """
    from medcf.benchmark.parallel import run_tasks_in_processes

    # 0. every check before any training
    out = Path(out)
    tasks = [check_task(t) for t in (tasks or profile.tasks)]
    sel = select_methods(methods, profile.methods)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MedcfError("--device cuda: no CUDA device is available here")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise MedcfError(f"--device: expected cpu or cuda, got {device!r}")
    jobs = default_jobs(tasks, device) if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise MedcfError(f"--jobs: expected a whole number >= 1, got {jobs!r}")
    if data is not None:
        if not Path(data).is_dir():
            raise MedcfError(f"{data}: --data folder not found")
        for t in tasks:
            if t != "shortcut":
                _user_data(data, t)
    state = _open_out(out, profile, resume)
    # rows of methods named with --methods are recomputed, except when an interrupted run is resumed
    recompute = sel.explicit and state.get("state") != "running"
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    state.update({"state": "running", "profile_source": profile.source})
    _save_state(out, state)
    t_start, cpu_start = time.perf_counter(), _cpu_seconds()
    jobs = min(jobs, len(tasks))
    record = _Recorder(out, state)
    job = TaskJob(out=out, profile=profile, sel=sel, device=device, data=str(data) if data is not None else None,
                  progress=progress and jobs == 1, recompute=recompute,
                  hashes={k: v.get("hash") for k, v in record.rows.items()})
    tags = {task: f"[{task} {ti + 1}/{len(tasks)}]" for ti, task in enumerate(tasks)}
    if jobs == 1:
        for task in tasks:
            run_task(task, tags[task], job, record, echo)
    else:
        echo(f"{len(tasks)} tasks in {jobs} processes ({max(1, torch.get_num_threads() // jobs)} torch "
             "threads each; progress bars off)")
        run_tasks_in_processes(tasks, tags, job, jobs, record, echo)
    studies, judge_tests = record.studies, record.judges
    notes = {tuple(k.split("|")): v for k, v in record.notes.items()}
    done = record.rows

    # 5. results
    rows = merge_rows(read_results(out / "results.csv"), [done[k]["row"] for k in done])
    rows = [{c: r.get(c) for c in COLUMNS} for r in rows]
    write_results_csv(out / "results.csv", rows)
    elapsed = time.perf_counter() - t_start
    from medcf.eval.report_md import versions

    meta = {"profile": profile.name, "profile_label": profile.label, "profile_source": profile.source,
            "seed": profile.seed, "tasks": ",".join(tasks), "device": device, "jobs": jobs, "commit": _commit(),
            "machine": machine(), "versions": versions(), "wall_s": round(elapsed, 1),
            "cpu_s": round(_cpu_seconds() - cpu_start, 1),
            "started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "not_benchmarked": sel.not_benchmarked, "judges": judge_tests,
            **({"studies": studies} if studies else {})}
    if command:
        meta["command"] = command
    atomic_write_text(out / "results.md", results_markdown(rows, notes, meta))
    from medcf.benchmark.report_html import write_report

    write_report(out, rows, notes, meta)
    state.update({"state": "done", "meta": meta})
    _save_state(out, state)
    echo(f"results: {out / 'results.csv'}, {out / 'results.md'}, {out / 'report.html'} "
         f"({elapsed / 60:.1f} min)")
    return rows
