"""medcf.benchmark: every explainer on the same data, judges, queries and metrics (``medcf benchmark``).

Example:
    >>> from medcf.benchmark import load_profile, run_benchmark
    >>> rows = run_benchmark("runs/bench", load_profile("quick"))      # doctest: +SKIP
"""

from medcf.benchmark.profile import Profile, builtin_profiles, load_profile
from medcf.benchmark.results import COLUMNS
from medcf.benchmark.runner import BASELINES, run_benchmark, select_methods
from medcf.benchmark.tasks import TASKS, check_task

__all__ = ["BASELINES", "COLUMNS", "TASKS", "Profile", "builtin_profiles", "check_task", "load_profile",
           "run_benchmark", "select_methods"]
