"""``medcf info CHECKPOINT``: what a checkpoint is."""

from __future__ import annotations

import json
from pathlib import Path

import typer

_CONFIG_FACTS = ("resolution", "channels", "class_names", "num_classes", "latent_dim", "task")


def describe_checkpoint(path: str | Path) -> dict:
    """A summary dict of a model or run directory: kind, shape facts, training steps."""
    from medcf.io import read_header  # imports torch: not at `medcf --help` time

    header = read_header(path)
    config = header.get("config", {})
    meta = header.get("meta", {})
    facts = {"path": header["path"], "kind": header["kind"], "class": header.get("class")}
    for key in _CONFIG_FACTS:
        if key in config:
            facts[key] = config[key]
        elif key in meta:
            facts[key] = meta[key]
    for key, value in meta.items():
        facts.setdefault(key, value)
    return facts


def register(app: typer.Typer) -> None:
    @app.command("info")
    def info_command(
        checkpoint: Path = typer.Argument(..., help="A model directory or a run directory."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
    ) -> None:
        """Say what a checkpoint is: kind, resolution, channels, classes, training steps.

        Example: medcf info runs/demo/classifier
        """
        facts = describe_checkpoint(checkpoint)
        if as_json:
            typer.echo(json.dumps(facts, indent=2))
            return
        for key, value in facts.items():
            typer.echo(f"{key:>14}: {value}")
