"""``medcf data inspect PATH``: what ``open_dataset`` makes of a path."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``inspect`` command to the ``medcf data`` group."""

    @app.command("inspect")
    def inspect_command(
        path: Path = typer.Argument(..., help="Synthetic folder, class folders, CSV, .npz, DICOM or image."),
        split: str = typer.Option(None, "--split", help="train | val | test (default: all)."),
        resolution: int = typer.Option(None, "--resolution", help="Resize images to N x N."),
        channels: int = typer.Option(None, "--channels", help="1 or 3 (default: as stored)."),
        verify: bool = typer.Option(False, "--verify", help="Decode every image now (finds corrupt files)."),
        skip_unreadable: bool = typer.Option(False, "--skip-unreadable",
                                             help="Drop missing/corrupt files and count them."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
    ) -> None:
        """Open a dataset the way medcf will and summarise it: type, classes, counts, size.

        Example: medcf data inspect data/cardio --split val --verify
        """
        from medcf.data.dispatch import describe_dataset, open_dataset

        ds = open_dataset(path, split=split, resolution=resolution, channels=channels,
                          skip_unreadable=skip_unreadable)
        facts = {"path": str(path), **describe_dataset(ds, verify=verify, progress=verify)}
        if as_json:
            typer.echo(json.dumps(facts, indent=2))
            return
        for key, value in facts.items():
            typer.echo(f"{key:>17}: {value}")
