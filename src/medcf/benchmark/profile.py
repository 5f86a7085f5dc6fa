"""Benchmark profiles: small TOML files (``profiles/*.toml`` in the package, or a user's file).

A profile fixes everything a benchmark run depends on: the tasks, the synthetic
data, the judge models (classifier to explain, oracle, foreign-object detector,
CTR regressor), how many held-out queries every method explains, and one
``[methods.NAME]`` table per method, handed as is to that method's ``prepare``
hook (``medcf.counterfactual.registry``); its ``explain`` sub-table holds build
options of the explainer (``LatentShiftConfig`` fields, ...).

Example:
    >>> from medcf.benchmark.profile import load_profile
    >>> load_profile("quick").evaluate["n_queries"]
    48
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcf.errors import MedcfError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILE_DIR = Path(__file__).parent / "profiles"
JUDGE_ROLES = (("classifier", "classifier"), ("oracle", "oracle"), ("fo-detector", "fo_detector"),
               ("ctr-regressor", "ctr_regressor"))  # (training role, profile key)
EVALUATE_DEFAULTS = {"n_queries": 48, "batch_size": 16, "n_examples": 4, "lpips": True,
                     "fid_reference": 200}


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped in the package."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


@dataclass(frozen=True)
class Profile:
    """One benchmark profile (the TOML tables, checked)."""

    name: str
    label: str                              # how its figures are labelled in results.md / report.html
    seed: int
    tasks: tuple[str, ...]                  # default tasks (``--task`` overrides)
    data: dict[str, Any]                    # resolution, n
    judges: dict[str, dict[str, Any]]       # role key -> {widths, steps, batch_size}
    evaluate: dict[str, Any]                # n_queries, batch_size, n_examples, lpips, fid_reference
    methods: dict[str, dict[str, Any]]      # method name -> its [methods.NAME] table
    baselines: dict[str, Any] = field(default_factory=dict)
    shortcut: dict[str, Any] = field(default_factory=dict)  # ShortcutPlan overrides (--task shortcut)
    source: str = ""                        # the file it was read from

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "seed": self.seed, "tasks": list(self.tasks),
                "data": self.data, "judges": self.judges, "evaluate": self.evaluate,
                "methods": self.methods, "baselines": self.baselines, "shortcut": self.shortcut}


def _require(table: dict, key: str, kind, where: str):
    if key not in table:
        raise MedcfError(f"{where}: missing '{key}'")
    v = table[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise MedcfError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}, got {v!r}")
    return v


def parse_profile(raw: dict, where: str) -> Profile:
    """A ``Profile`` from parsed TOML; one-line ``MedcfError`` naming ``where`` on a bad value."""
    data = _require(raw, "data", dict, where)
    for key in ("resolution", "n"):
        if _require(data, key, int, f"{where} [data]") < 1:
            raise MedcfError(f"{where} [data]: '{key}' must be >= 1")
    judges = _require(raw, "judges", dict, where)
    for _, key in JUDGE_ROLES:
        j = _require(judges, key, dict, f"{where} [judges]")
        for k in ("widths", "steps", "batch_size"):
            _require(j, k, list if k == "widths" else int, f"{where} [judges.{key}]")
    evaluate = {**EVALUATE_DEFAULTS, **raw.get("evaluate", {})}
    for k in ("n_queries", "batch_size", "n_examples", "fid_reference"):
        if not isinstance(evaluate[k], int) or evaluate[k] < 1:
            raise MedcfError(f"{where} [evaluate]: '{k}' must be an integer >= 1, got {evaluate[k]!r}")
    methods = raw.get("methods", {})
    if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
        raise MedcfError(f"{where}: [methods.NAME] must be tables")
    tasks = raw.get("tasks", ["cardiomegaly"])
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise MedcfError(f"{where}: 'tasks' must be a non-empty list of task names")
    name = str(raw.get("name", Path(where).stem))
    return Profile(name=name, label=str(raw.get("label", name)), seed=int(raw.get("seed", 0)),
                   tasks=tuple(tasks), data=dict(data), judges={k: dict(v) for k, v in judges.items()},
                   evaluate=evaluate, methods={k: dict(v) for k, v in methods.items()},
                   baselines=dict(raw.get("baselines", {})), shortcut=dict(raw.get("shortcut", {})),
                   source=where)


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """A shipped profile by name (``quick``, ``full``, ``cpu``, ``micro``) or a TOML file (``--config``).

    Example:
        >>> load_profile("micro").data["resolution"]
        32
    """
    p = Path(name_or_path)
    if p.suffix != ".toml" and not p.exists():
        if str(name_or_path) not in builtin_profiles():
            raise MedcfError(f"--profile: unknown profile {str(name_or_path)!r}; choose one of "
                             f"{builtin_profiles()} or pass --config FILE")
        p = PROFILE_DIR / f"{name_or_path}.toml"
    if not p.is_file():
        raise MedcfError(f"{p}: --config file not found")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise MedcfError(f"{p}: not a valid TOML profile ({e})") from None
    return parse_profile(raw, str(p))
