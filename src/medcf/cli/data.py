"""``medcf data ...``: dataset tools (synthetic benchmark, inspection)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Dataset tools.", no_args_is_help=True)


@app.command("synth")
def synth_command(
    out: Path = typer.Option(..., "--out", help="Output folder (must be empty unless --overwrite)."),
    task: str = typer.Option("cardiomegaly", "--task", help="cardiomegaly | opacity | effusion."),
    n: int = typer.Option(5000, "--n", help="Number of images."),
    resolution: int = typer.Option(64, "--resolution", help="Image size in pixels (32..256)."),
    seed: int = typer.Option(0, "--seed", help="Benchmark seed; sample i depends only on (seed, i)."),
    spurious_rate: float = typer.Option(0.0, "--spurious-rate",
                                        help="Fraction of positive images carrying the spurious token (0 = off)."),
    spurious_negative_rate: float = typer.Option(0.0, "--spurious-negative-rate",
                                                 help="Fraction of negative images carrying the token."),
    pacemaker_rate: float = typer.Option(0.15, "--pacemaker-rate", help="P(pacemaker)."),
    electrodes_rate: float = typer.Option(0.3, "--electrodes-rate", help="P(ECG electrodes)."),
    marker_rate: float = typer.Option(0.5, "--marker-rate", help="P(laterality marker)."),
    workers: int = typer.Option(1, "--workers", help="Processes rendering and saving images."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write the synthetic chest-radiograph benchmark (images, masks, metadata.csv, dataset.json).

    Example: medcf data synth --task cardiomegaly --n 5000 --resolution 64 --out data/cardio
    """
    from medcf.data.synthetic import SynthConfig
    from medcf.data.synthetic_writer import write_synthetic

    config = SynthConfig(task=task, resolution=resolution, spurious_rate=spurious_rate,
                         spurious_negative_rate=spurious_negative_rate,
                         pacemaker_rate=pacemaker_rate, electrodes_rate=electrodes_rate,
                         marker_rate=marker_rate)
    summary = write_synthetic(config, n, out, seed=seed, overwrite=overwrite, workers=workers,
                              progress=progress)
    balance = ", ".join(f"{name} {count} ({count / summary.n:.1%})"
                        for name, count in zip(config.class_names, summary.label_counts, strict=True))
    typer.echo(f"wrote {summary.n} images ({task}, {resolution}px, seed {seed}) to {summary.out_dir}")
    typer.echo(f"labels: {balance}")
    typer.echo(f"time: {summary.seconds:.1f} s ({summary.n / max(summary.seconds, 1e-9):.0f} images/s)")
