"""The benchmark tasks (the one list behind ``medcf benchmark --task``).

``cardiomegaly`` and ``opacity`` are the synthetic tasks of ``medcf.data.synthetic``.
``effusion`` (pleural effusion, the costophrenic-recess metric) and ``shortcut`` (the
shortcut-detection study, ``medcf.benchmark.shortcut.run_shortcut_study``: two
classifiers, its own table, not rows of results.csv) are issue 9 sections 3 and 4;
they are accepted only when this version has their code, otherwise ``check_task``
raises a one-line error before any training starts.

Example:
    >>> from medcf.benchmark.tasks import TASKS, check_task
    >>> TASKS
    ('cardiomegaly', 'opacity', 'effusion', 'shortcut')
    >>> check_task("opacity")
    'opacity'
"""

from __future__ import annotations

import importlib
import importlib.util

from medcf.errors import MedcfError

TASKS: tuple[str, ...] = ("cardiomegaly", "opacity", "effusion", "shortcut")

# the task whose class-relevant factor is the cardiothoracic ratio: ctr_cross applies only there
CTR_TASKS: tuple[str, ...] = ("cardiomegaly",)
# the tasks whose class-relevant factor is the costophrenic recess: cpr_change applies only there
CPR_TASKS: tuple[str, ...] = ("effusion",)


def synthetic_tasks() -> tuple[str, ...]:
    """Tasks the synthetic generator of this version can render."""
    from medcf.data.synthetic import CLASS_NAMES

    return tuple(CLASS_NAMES)


def task_available(task: str) -> tuple[bool, str]:
    """(available, reason when not) for a name of ``TASKS``."""
    if task == "shortcut":
        if importlib.util.find_spec("medcf.benchmark.shortcut") is None or \
                not hasattr(importlib.import_module("medcf.benchmark.shortcut"), "run_shortcut_study"):
            return False, "the shortcut study (medcf.benchmark.shortcut) is not in this version yet"
        return True, ""
    if task not in synthetic_tasks():
        return False, f"the synthetic generator of this version has no {task!r} task yet"
    return True, ""


def check_task(task: str) -> str:
    """``task`` when it is known and available; else a one-line ``MedcfError``."""
    if task not in TASKS:
        raise MedcfError(f"--task: unknown task {task!r}; choose one of {list(TASKS)}")
    ok, why = task_available(task)
    if not ok:
        raise MedcfError(f"--task {task}: not available: {why}")
    return task
