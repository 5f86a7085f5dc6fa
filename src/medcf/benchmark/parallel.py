"""Benchmark tasks in worker processes (``medcf benchmark --jobs N``).

The tasks of a profile (cardiomegaly, opacity, ...) share nothing but the output
folder: each has its own data, judges, backbones and rows under OUT. A small model
on one CPU core gains little from a second torch thread, so a 2-core machine runs
two tasks at once in two processes (one thread each) much faster than one task after
the other with two threads. Workers report every result to the parent over a queue;
the parent alone writes ``OUT/benchmark.json`` (``runner._Recorder``), so an
interrupted run resumes exactly as a sequential one does.

Example:
    >>> from medcf.benchmark import load_profile, run_benchmark
    >>> rows = run_benchmark("runs/bench", load_profile("quick"), jobs=2)      # doctest: +SKIP
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import signal
import traceback

import torch

from medcf.errors import MedcfError

POLL_S = 1.0  # how often the parent looks for workers that died without a word


def _stop(signum, frame):  # a kill stops a worker like Ctrl-C: stage times and checkpoints are recorded
    raise KeyboardInterrupt


def _worker(task: str, tag: str, job, threads: int, results) -> None:
    """Run one task in this (spawned) process; every result and line goes to ``results``."""
    from medcf.benchmark.runner import run_task

    signal.signal(signal.SIGTERM, _stop)
    torch.set_num_threads(threads)
    try:
        run_task(task, tag, job, lambda kind, payload: results.put((kind, task, payload)),
                 lambda line: results.put(("echo", task, line)))
        results.put(("done", task, None))
    except MedcfError as e:
        results.put(("error", task, f"{tag} {e}"))
    except KeyboardInterrupt:
        results.put(("error", task, f"{tag} interrupted"))
    except BaseException as e:  # noqa: BLE001  (reported to the parent, which raises)
        results.put(("error", task, f"{tag} {type(e).__name__}: {e}\n{traceback.format_exc()}"))


def run_tasks_in_processes(tasks: list[str], tags: dict[str, str], job, jobs: int, record, echo,
                           target=_worker) -> None:
    """Run ``tasks`` in up to ``jobs`` worker processes; ``record(kind, payload)`` gets each result.

    ``target(task, tag, job, threads, results)`` is the worker (``_worker``; tests pass their own).

    Raises MedcfError naming every task that failed, after the others have finished (their rows are
    recorded, so ``--resume`` redoes only what failed).
    """
    ctx = mp.get_context("spawn")  # no fork: torch's thread pools and open files stay in the parent
    results = ctx.Queue()
    threads = max(1, torch.get_num_threads() // jobs)
    pending, running, errors = list(tasks), {}, []

    def handle(kind: str, task: str, payload) -> None:
        if kind == "echo":
            echo(payload)
        elif kind in ("done", "error"):
            if kind == "error":
                errors.append(payload)
            running.pop(task).join()
        else:
            record(kind, payload)

    try:
        while pending or running:
            while pending and len(running) < jobs:
                task = pending.pop(0)
                running[task] = ctx.Process(target=target, args=(task, tags[task], job, threads, results),
                                            name=f"medcf-benchmark-{task}")
                running[task].start()
            try:
                handle(*results.get(timeout=POLL_S))
            except queue_module.Empty:
                for task, proc in list(running.items()):
                    if not proc.is_alive():  # its last words may still be in the queue
                        try:
                            while task in running:
                                handle(*results.get(timeout=POLL_S))
                        except queue_module.Empty:
                            running.pop(task).join()
                            errors.append(f"{tags[task]} the worker process ended with exit code "
                                          f"{proc.exitcode} (out of memory?)")
    except BaseException:
        for proc in running.values():
            proc.terminate()
        for proc in running.values():
            proc.join()
        raise
    if errors:
        raise MedcfError("; ".join(errors))
