"""``medcf train classifier|oracle|fo-detector|ctr-regressor|cpr-scorer``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from medcf.cli._train_options import (
    CHECKPOINT_EVERY,
    FIT,
    OVERWRITE,
    SPLIT,
    SPLIT_SEED,
    data_path,
    prepare_out,
)

_HELP = {
    "classifier": ("Train the classifier to explain (ResNet, cross-entropy on the label).",
                   "medcf train classifier --data data/synth64 --out runs/classifier"),
    "oracle": ("Train an independent oracle classifier (other seed, wider) to judge counterfactuals.",
               "medcf train oracle --data data/synth64 --out runs/oracle"),
    "fo-detector": ("Train the foreign-object detector (one sigmoid per object in fo_flags).",
                    "medcf train fo-detector --data data/synth64 --out runs/fo-detector"),
    "ctr-regressor": ("Train the cardiothoracic-ratio regressor (synthetic data with ctr).",
                      "medcf train ctr-regressor --data data/synth64 --out runs/ctr-regressor"),
    "cpr-scorer": ("Train the costophrenic-recess scorer (sharp vs blunted; synthetic effusion data).",
                   "medcf train cpr-scorer --data data/effusion --out runs/cpr-scorer"),
}


def _format_figures(test: dict, prefix: str = "") -> list[str]:
    lines = []
    for key, value in test.items():
        if isinstance(value, dict):
            lines += _format_figures(value, prefix=f"{prefix}{key}.")
        elif isinstance(value, float):
            lines.append(f"{prefix}{key}: {value:.4f}")
        else:
            lines.append(f"{prefix}{key}: {value}")
    return lines


def _make_command(role: str):
    summary, example = _HELP[role]

    def command(
        data: Path = typer.Option(..., "--data", help="Dataset: a medcf synthetic folder or any "
                                  "path medcf.data.open_dataset reads (splits train/val/test)."),
        out: Path = typer.Option(..., "--out", help="Run directory; the model lands in OUT/model."),
        steps: int = typer.Option(None, "--steps", help="Optimizer steps (role default)."),
        batch_size: int = typer.Option(64, "--batch-size", help="Batch size."),
        lr: float = typer.Option(None, "--lr", help="Peak learning rate (role default)."),
        seed: int = typer.Option(None, "--seed", help="Seed for init and data order (role default)."),
        resolution: int = typer.Option(None, "--resolution", help="Resize the data to this size."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
        device: str = typer.Option("auto", "--device", help="auto (the engine's choice: a GPU "
                                   "when visible), cpu or cuda."),
        as_json: bool = typer.Option(False, "--json", help="Print the test figures as JSON."),
        split: str = SPLIT,
        split_seed: int = SPLIT_SEED,
        fit: str = FIT,
        checkpoint_every: int = CHECKPOINT_EVERY,
        overwrite: bool = OVERWRITE,
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ) -> None:
        from medcf.train.classifiers import train_classifier

        source = data_path(data, split, split_seed, fit)
        prepare_out(out, overwrite=overwrite, resume=resume)
        if device == "cpu":  # accelerate reads this when the engine creates its Accelerator
            os.environ["ACCELERATE_USE_CPU"] = "1"
        result = train_classifier(source, out, role=role, steps=steps, batch_size=batch_size, lr=lr,
                                  seed=seed, resolution=resolution, resume=resume, device=device,
                                  checkpoint_every=checkpoint_every, progress=progress)
        if as_json:
            typer.echo(json.dumps({"model_dir": str(result.model_dir), "role": role,
                                   "test": result.test, "wall_s": result.wall_s}, indent=2))
            return
        typer.echo(f"{role} saved to {result.model_dir} ({result.wall_s:.0f} s)")
        if result.test:
            typer.echo("test figures:")
            for line in _format_figures(result.test):
                typer.echo(f"  {line}")

    command.__doc__ = f"{summary}\n\nExample: {example}"
    command.__name__ = f"train_{role.replace('-', '_')}"
    return command


def register(app: typer.Typer) -> None:
    for role in _HELP:
        app.command(role)(_make_command(role))
