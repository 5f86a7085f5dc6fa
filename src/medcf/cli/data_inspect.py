"""``medcf data inspect PATH``: what ``open_dataset`` makes of a path."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medcf.cli._train_options import FIT, SPLIT_SEED, parse_fractions


def register(app: typer.Typer) -> None:
    """Add the ``inspect`` command to the ``medcf data`` group."""

    @app.command("inspect")
    def inspect_command(
        path: Path = typer.Argument(..., help="Synthetic folder, class folders, CSV, .npz, DICOM or image."),
        split: str = typer.Option(None, "--split", help="train | val | test (default: all)."),
        fractions: str = typer.Option(None, "--fractions", help="Class folders without split folders: "
                                      "train,val,test fractions (as `medcf train --split`), e.g. 0.8,0.1,0.1."),
        split_seed: int = SPLIT_SEED,
        resolution: int = typer.Option(None, "--resolution", help="Resize images to N x N."),
        fit: str = FIT,
        channels: int = typer.Option(None, "--channels", help="1 or 3 (default: as stored)."),
        verify: bool = typer.Option(True, "--verify/--quick", help="Decode every image (default; finds "
                                    "corrupt files) or only list them (--quick)."),
        skip_unreadable: bool = typer.Option(False, "--skip-unreadable",
                                             help="Drop missing/corrupt files and count them."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ) -> None:
        """Open a dataset the way medcf will and summarise it: type, classes, counts, size.

        Every image is decoded (corrupt files are reported); --quick only lists them.

        Example: medcf data inspect data/cardio --split val
        """
        from medcf.data.dispatch import describe_dataset, open_dataset

        ds = open_dataset(path, split=split, resolution=resolution, channels=channels,
                          skip_unreadable=skip_unreadable, fit=fit, split_fractions=parse_fractions(fractions),
                          split_seed=split_seed)
        facts = {"path": str(path), **describe_dataset(ds, verify=verify, progress=verify and progress)}
        if as_json:
            typer.echo(json.dumps(facts, indent=2))
            return
        for key, value in facts.items():
            typer.echo(f"{key:>17}: {value}")
