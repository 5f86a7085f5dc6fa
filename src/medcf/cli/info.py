"""``medcf info CHECKPOINT``: what a checkpoint is.

The weights header is checked too (a truncated ``model.safetensors`` is an
error), and text from the files is printed without terminal control characters:
anything a file could use to move the cursor, recolour or retitle the terminal
(C0/C1 controls, ESC sequences, bidi overrides) is shown as a visible escape.
"""

from __future__ import annotations

import json
import unicodedata
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
    from medcf.io import read_weights_header

    # every weights file of the model (model.safetensors, or e.g. diffusers' file name):
    # a truncated or corrupt one is a one-line error here
    files = sorted(Path(header["path"]).glob("*.safetensors"))
    specs = [read_weights_header(f) for f in files]
    facts.setdefault("weights", ", ".join(f.name for f in files) or "none found")
    facts.setdefault("tensors", sum(len(w.tensors) for w in specs))
    facts.setdefault("parameters", sum(w.parameters for w in specs))
    facts.setdefault("weights_bytes", sum(w.file_bytes for w in specs))
    return facts


def printable(text: str) -> str:
    """``text`` with control and format characters (ESC, CSI, BEL, bidi overrides ...) made visible."""
    return "".join(c if unicodedata.category(c)[0] != "C" else c.encode("unicode_escape").decode("ascii")
                   for c in text)


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
            typer.echo(f"{printable(str(key)):>14}: {printable(str(value))}")
