"""``medcf train stylegan2``: StyleGAN2-ADA on the shared engine (thin wrapper of train_stylegan2)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medcf.cli._train_options import CHECKPOINT_EVERY, OVERWRITE, prepare_out
from medcf.errors import DataError, MedcfError


def train_stylegan2_command(
    data: Path = typer.Option(..., "--data", help="Dataset: a medcf synthetic folder, class folders, "
                              "CSV, .npz (its train split when it has splits)."),
    out: Path = typer.Option(..., "--out", help="Run directory; G_ema lands in OUT/model."),
    resolution: int = typer.Option(64, "--resolution", help="Train at this size (power of two)."),
    cond: bool = typer.Option(False, "--cond", help="Label-conditional G and D (needs labelled data)."),
    aug: str = typer.Option("ada", "--aug", help="ada (adaptive augmentation) or none."),
    target: float = typer.Option(0.6, "--target", help="ADA target for E[sign(D(real))]."),
    kimg: float = typer.Option(None, "--kimg", help="Length in thousands of real images (or --steps)."),
    steps: int = typer.Option(None, "--steps", help="Length in optimizer steps (or --kimg)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Global batch size."),
    lr: float = typer.Option(0.0025, "--lr", help="Learning rate of G and D."),
    gamma: float = typer.Option(None, "--gamma", help="R1 weight (default 0.0002 * res^2 / batch)."),
    pl_weight: float = typer.Option(2.0, "--pl-weight", help="Path-length regularisation weight (0 = off)."),
    channel_base: int = typer.Option(4096, "--channel-base", help="Channels at res r: "
                                     "min(channel_base // r, channel_max)."),
    channel_max: int = typer.Option(128, "--channel-max", help="Maximum channels per layer."),
    seed: int = typer.Option(0, "--seed", help="Initial weights, data order and noise."),
    sample_every: int = typer.Option(500, "--sample-every", help="Steps between sample grids "
                                     "(OUT/samples/*.png)."),
    fid_oracle: Path = typer.Option(None, "--fid-oracle", help="Classifier/oracle run whose features "
                                    "give FID snapshots (domain FID)."),
    fid_every: int = typer.Option(2000, "--fid-every", help="Steps between FID snapshots."),
    fid_n: int = typer.Option(1000, "--fid-n", help="Images per FID snapshot."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    checkpoint_every: int = CHECKPOINT_EVERY,
    overwrite: bool = OVERWRITE,
) -> None:
    """Train StyleGAN2-ADA (G_ema exported to OUT/model; samples and FID logged).

    Example:  medcf train stylegan2 --data data/synth64 --out runs/sg2 --resolution 64 --kimg 200
    --fid-oracle runs/oracle
    """
    from medcf.train.stylegan2 import train_stylegan2

    if not data.exists():
        raise DataError(f"{data}: --data not found")
    if (kimg is None) == (steps is None):
        raise MedcfError("give exactly one of --kimg or --steps")
    if fid_oracle is not None and not fid_oracle.exists():
        raise DataError(f"{fid_oracle}: --fid-oracle not found")
    prepare_out(out, overwrite=overwrite, resume=resume)
    res = train_stylegan2(data, out, resolution=resolution, cond=cond, aug=aug, ada_target=target,
                          kimg=kimg, steps=steps, batch_size=batch_size, lr=lr, r1_gamma=gamma,
                          pl_weight=pl_weight, channel_base=channel_base, channel_max=channel_max,
                          seed=seed, sample_every=sample_every, fid_oracle=fid_oracle,
                          fid_every=fid_every, fid_n=fid_n, resume=resume, progress=progress,
                          checkpoint_every=checkpoint_every)
    if as_json:
        typer.echo(json.dumps({"model_dir": str(res.model_dir), "steps": res.steps, "kimg": res.kimg,
                               "augment_p": res.augment_p, "fid": res.fid, "wall_s": res.wall_s},
                              indent=2))
        return
    typer.echo(f"stylegan2: {res.model_dir} ({res.steps} steps, {res.kimg:.1f} kimg, "
               f"ADA p {res.augment_p:.3f}, {res.wall_s:.0f} s)")
    if res.fid:
        typer.echo(f"FID ({res.fid['extractor']}, {res.fid['n_fake']} images): {res.fid['fid']:.2f}")


def register(app: typer.Typer) -> None:
    app.command("stylegan2")(train_stylegan2_command)
