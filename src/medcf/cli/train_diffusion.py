"""``medcf train diffusion``: a DDPM (diffusers UNet2DModel) on the shared engine."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medcf.errors import DataError, MedcfError


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise MedcfError(f"--widths: expected comma-separated integers like 32,64,128, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise MedcfError(f"--widths: expected positive integers, got {text!r}")
    return widths


def train_diffusion_command(
    data: Path = typer.Option(..., "--data", help="Dataset: a medcf synthetic folder, class folders, "
                              "CSV, .npz (its train split when it has splits)."),
    out: Path = typer.Option(..., "--out", help="Run directory; the EMA UNet lands in OUT/model "
                             "(diffusers layout: UNet2DModel.from_pretrained(OUT/model) loads it)."),
    resolution: int = typer.Option(64, "--resolution", help="Train at this size."),
    cond: bool = typer.Option(False, "--cond", help="Class-conditional UNet (needs labelled data)."),
    steps: int = typer.Option(4000, "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(32, "--batch-size", help="Global batch size."),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate (Adam, warm-up + cosine)."),
    widths: str = typer.Option("32,64,128", "--widths", help="UNet channels per level, comma-separated."),
    layers_per_block: int = typer.Option(2, "--layers-per-block", help="ResNet layers per UNet block."),
    attention: bool = typer.Option(True, "--attention/--no-attention", help="Self-attention at the lowest "
                                   "level and in the mid block."),
    timesteps: int = typer.Option(1000, "--timesteps", help="Length of the noise schedule."),
    beta_schedule: str = typer.Option("linear", "--beta-schedule", help="linear | scaled_linear | "
                                      "squaredcos_cap_v2."),
    ema_decay: float = typer.Option(0.999, "--ema", help="EMA decay of the exported model (0 = off)."),
    seed: int = typer.Option(0, "--seed", help="Initial weights, data order and noise."),
    sample_every: int = typer.Option(1000, "--sample-every", help="Steps between sample grids "
                                     "(OUT/samples/*.png)."),
    sample_steps: int = typer.Option(50, "--sample-steps", help="DDIM steps of the sample grids."),
    fid_oracle: Path = typer.Option(None, "--fid-oracle", help="Classifier run: domain-FID snapshots "
                                    "(off without it)."),
    fid_every: int = typer.Option(0, "--fid-every", help="Steps between FID snapshots (0: at the end)."),
    fid_n: int = typer.Option(500, "--fid-n", help="Training images and DDIM samples per FID snapshot."),
    fid_sample_steps: int = typer.Option(20, "--fid-sample-steps", help="DDIM steps of the FID samples."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train a DDPM for diffusion counterfactuals (EMA UNet exported to OUT/model).

    Example:  medcf train diffusion --data data/synth64 --out runs/ddpm --resolution 64 --steps 4000
    """
    from medcf.train.diffusion import train_diffusion

    if not data.exists():
        raise DataError(f"{data}: --data not found")
    res = train_diffusion(data, out, resolution=resolution, cond=cond, steps=steps, batch_size=batch_size,
                          lr=lr, widths=_widths(widths), layers_per_block=layers_per_block, attention=attention,
                          train_timesteps=timesteps, beta_schedule=beta_schedule,
                          ema_decay=ema_decay if ema_decay > 0 else None, seed=seed, sample_every=sample_every,
                          sample_steps=sample_steps, fid_oracle=fid_oracle, fid_every=fid_every, fid_n=fid_n,
                          fid_sample_steps=fid_sample_steps, resume=resume, progress=progress)
    if as_json:
        typer.echo(json.dumps({"model_dir": str(res.model_dir), "steps": res.steps, "loss": res.last_loss,
                               "wall_s": res.wall_s, "fid": res.fid}, indent=2))
        return
    loss = f", loss {res.last_loss:.4g}" if res.last_loss is not None else ""
    fid = f"; FID {res.fid['fid']:.4g} ({res.fid['extractor']})" if res.fid else ""
    typer.echo(f"diffusion: {res.model_dir} ({res.steps} steps{loss}, {res.wall_s:.0f} s{fid})")


def register(app: typer.Typer) -> None:
    app.command("diffusion")(train_diffusion_command)
