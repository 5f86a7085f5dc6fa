"""``medcf demo``: synthetic data -> models -> Latent Shift GIFs -> evaluation report (``medcf.demo``)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        out: Path = typer.Option(Path("runs/demo"), "--out", help="Demo folder (default runs/demo)."),
        quick: bool = typer.Option(False, "--quick", help="Tiny smoke run (seconds, meaningless figures)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a demo already in --out."),
        generator_kind: str = typer.Option("vae", "--generator-kind", help="Generator: vae or ae."),
        single_gradient: bool = typer.Option(False, "--single-gradient",
                                             help="Cohen's single-gradient Latent Shift (default iterative)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
        workers: int = typer.Option(2, "--workers", help="Processes writing the synthetic data."),
    ) -> None:
        """Run the whole demo on the CPU (about 9 minutes on 2 idle cores; see docs/demo.md).

        Example: medcf demo --out runs/demo
        """
        from dataclasses import replace

        from medcf.demo import QUICK, DemoPlan, run_demo
        from medcf.errors import MedcfError

        if generator_kind not in ("vae", "ae"):
            raise MedcfError(f"--generator-kind: expected vae or ae, got {generator_kind!r}")
        plan = QUICK if quick else DemoPlan()
        plan = replace(plan, generator_kind=generator_kind, iterative=not single_gradient)
        run_demo(out, plan, overwrite=overwrite, progress=progress, workers=1 if quick else workers,
                 echo=typer.echo)
