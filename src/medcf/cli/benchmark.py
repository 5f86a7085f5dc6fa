"""``medcf benchmark``: a thin wrapper over ``medcf.benchmark.run_benchmark``."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("benchmark")
    def benchmark_command(
        out: Path = typer.Option(..., "--out", help="Benchmark folder: results.csv, results.md, report.html, "
                                 "and the cached data and models (re-runs reuse them)."),
        profile: str = typer.Option("quick", "--profile", help="Shipped profile: quick | full | cpu | micro."),
        config: Path = typer.Option(None, "--config", help="Your own profile TOML (instead of --profile)."),
        methods: str = typer.Option(None, "--methods", help="Comma-separated methods (default: every "
                                    "benchmarked method and baseline); their rows are recomputed and "
                                    "updated in an existing results.csv."),
        task: str = typer.Option(None, "--task", help="One task: cardiomegaly | opacity | effusion | "
                                 "shortcut (default: the profile's tasks)."),
        device: str = typer.Option("cpu", "--device", help="cpu | cuda: where explainers and metrics run "
                                   "(training uses the engine's device)."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted benchmark in --out (finished rows and stages kept; training from its last checkpoint, a row from its last finished batch)."),
        data: Path = typer.Option(None, "--data", help="Use this synthetic dataset folder (or DIR/TASK) "
                                  "instead of rendering one."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
        jobs: int = typer.Option(None, "--jobs", help="Tasks run at once, each in its own process (default: "
                                 "one per task and usable CPU on --device cpu, else 1; with more than one, "
                                 "progress bars are off)."),
    ) -> None:
        """Every explainer and attribution baseline on the same data, judges and queries.

        Example: medcf benchmark --profile quick --out runs/bench

        Update one method's rows: medcf benchmark --profile quick --out runs/bench --methods latent-shift

        One task after the other: medcf benchmark --profile quick --out runs/bench --jobs 1
        """
        import signal

        from medcf.benchmark import load_profile, run_benchmark

        def _stop(signum, frame):  # a kill stops it like Ctrl-C: stage times and state are recorded
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        prof = load_profile(config if config is not None else profile)
        run_benchmark(out, prof, methods=methods, tasks=[task] if task else None, device=device,
                      resume=resume, data=data, progress=progress, echo=typer.echo, jobs=jobs,
                      command=_command_line(out, profile, config, methods, task, device, data, jobs))


def _command_line(out, profile, config, methods, task, device, data, jobs) -> str:
    """The command as recorded in results.md (from the parsed options)."""
    parts = ["medcf", "benchmark", "--config" if config else "--profile", str(config or profile), "--out", str(out)]
    for flag, v in (("--methods", methods), ("--task", task), ("--data", data), ("--jobs", jobs)):
        if v is not None:
            parts += [flag, str(v)]
    if device != "cpu":
        parts += ["--device", device]
    return " ".join(shlex.quote(p) for p in parts)
