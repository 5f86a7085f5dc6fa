"""``medcf convert ...``: import models saved by other tools."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Convert checkpoints from other tools into medcf model directories.",
                  no_args_is_help=True)


@app.command("stylegan2-pkl")
def stylegan2_pkl(
    pkl: Path = typer.Argument(..., help="Official stylegan2-ada-pytorch snapshot (network-snapshot-*.pkl)."),
    out_dir: Path = typer.Argument(..., help="Output directory (must not exist or be empty)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT_DIR."),
) -> None:
    """Convert an official StyleGAN2-ADA snapshot into medcf checkpoints, without running its code.

    Writes G, G_ema, D, augment_pipe (those present), training_set_kwargs.json and snapshot.json.

    The pickle is read with a restricted unpickler; its embedded source code never runs.

    Example: medcf convert stylegan2-pkl network-snapshot-000400.pkl runs/sg2-import
    """
    from medcf.generators.stylegan2.official_pickle import convert_stylegan2_pkl

    out = convert_stylegan2_pkl(pkl, out_dir, overwrite=overwrite)
    for name in ("G_ema", "G", "D", "augment_pipe"):
        if (out / name).is_dir():
            typer.echo(f"wrote {out / name}")
    typer.echo(f"wrote {out / 'training_set_kwargs.json'}")
