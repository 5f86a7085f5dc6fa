"""``medcf convert ...``: import models saved by other tools."""

from __future__ import annotations

import typer

app = typer.Typer(help="Convert checkpoints from other tools into medcf model directories.",
                  no_args_is_help=True)
