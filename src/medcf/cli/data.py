"""``medcf data ...``: dataset tools (synthetic benchmark, inspection)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Dataset tools.", no_args_is_help=True)
