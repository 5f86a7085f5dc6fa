"""``medcf benchmark --jobs``: tasks in worker processes give the rows a sequential run gives."""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import pytest

from medcf.benchmark import load_profile, run_benchmark
from medcf.benchmark.parallel import run_tasks_in_processes
from medcf.benchmark.runner import default_jobs
from medcf.errors import MedcfError

# figures that do not depend on timing (all but sec_per_query and train_min)
FIGURES = ("n_queries", "validity", "oracle_validity", "fop", "l1", "ncc", "auroc", "ctr_cross")


def _rows(path):
    with open(path, newline="") as f:
        return {(r["method"], r["task"]): r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def two_tasks():
    """The micro profile on two tasks (one cheap method and one baseline)."""
    return dataclasses.replace(load_profile("micro"), tasks=("cardiomegaly", "opacity"))


def test_two_processes_give_the_sequential_rows(tmp_path, two_tasks):
    methods = "latent-shift,baseline-saliency"
    run_benchmark(tmp_path / "seq", two_tasks, methods=methods, progress=False, echo=lambda s: None, jobs=1)
    lines: list[str] = []
    run_benchmark(tmp_path / "par", two_tasks, methods=methods, progress=False, echo=lines.append, jobs=2)
    seq, par = _rows(tmp_path / "seq" / "results.csv"), _rows(tmp_path / "par" / "results.csv")
    assert set(par) == set(seq) == {(m, t) for m in methods.split(",") for t in two_tasks.tasks}
    for key in seq:
        assert {c: par[key][c] for c in FIGURES} == {c: seq[key][c] for c in FIGURES}, key
    assert lines[0].startswith("2 tasks in 2 processes")
    assert any(s.startswith("[opacity 2/2] latent-shift: validity") for s in lines)
    state = json.loads((tmp_path / "par" / "benchmark.json").read_text())
    assert state["state"] == "done" and state["meta"]["jobs"] == 2
    assert set(state["judges"]) == {"cardiomegaly", "opacity"}
    assert all(v.get("hash") for v in state["rows"].values()) and len(state["rows"]) == 4


def test_jobs_is_checked_before_any_work(tmp_path, two_tasks):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(MedcfError, match="--jobs: expected a whole number >= 1"):
            run_benchmark(tmp_path / "b", two_tasks, methods="latent-shift", echo=lambda s: None, jobs=bad)
    assert not (tmp_path / "b").exists()


def test_default_jobs(monkeypatch):
    monkeypatch.setattr("medcf.threads.usable_cpus", lambda: 2)
    assert default_jobs(["cardiomegaly", "opacity"], "cpu") == 2
    assert default_jobs(["cardiomegaly"], "cpu") == 1
    assert default_jobs(["cardiomegaly", "opacity"], "cuda") == 1
    monkeypatch.setattr("medcf.threads.usable_cpus", lambda: 1)
    assert default_jobs(["cardiomegaly", "opacity", "effusion"], "cpu") == 1


# workers for the failure test (module level: a spawned process imports them by name)
def _fake_worker(task, tag, job, threads, results):
    if task == "good":
        results.put(("echo", task, f"{tag} working with {threads} thread(s)"))
        results.put(("row", task, (f"m|{task}", {"hash": "h", "row": {"method": "m"}}, {})))
        results.put(("done", task, None))
    elif task == "fails":
        results.put(("error", task, f"{tag} --data: something is wrong"))
    else:  # dies without a word
        os._exit(3)


def test_failed_and_dead_workers_are_named_and_the_others_recorded():
    recorded, lines = [], []
    tags = {t: f"[{t}]" for t in ("good", "fails", "dies")}
    with pytest.raises(MedcfError) as err:
        run_tasks_in_processes(["good", "fails", "dies"], tags, job=None, jobs=2,
                               record=lambda kind, payload: recorded.append((kind, payload)), echo=lines.append,
                               target=_fake_worker)
    msg = str(err.value)
    assert "[fails] --data: something is wrong" in msg
    assert "[dies] the worker process ended with exit code 3" in msg
    assert "[good]" not in msg
    assert recorded == [("row", ("m|good", {"hash": "h", "row": {"method": "m"}}, {}))]
    assert lines and lines[0].startswith("[good] working with")
