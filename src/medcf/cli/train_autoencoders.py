"""``medcf train ae|vae``."""

from __future__ import annotations

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


def _train(kind: str, data: Path, out: Path, steps: int, batch_size: int, lr: float, latent_dim: int | None,
           latent_size: int, kl_weight: float, perceptual: float, ema_decay: float, seed: int, resolution: int | None,
           resume: bool, progress: bool, *, split: str | None = None, split_seed: int = 0, fit: str = "pad",
           checkpoint_every: int = 500, overwrite: bool = False) -> None:
    from medcf.train.autoencoders import train_autoencoder

    source = data_path(data, split, split_seed, fit)
    prepare_out(out, overwrite=overwrite, resume=resume)
    res = train_autoencoder(source, out, kind=kind, steps=steps, batch_size=batch_size, lr=lr,
                            latent_dim=latent_dim, latent_size=latent_size, kl_weight=kl_weight, perceptual=perceptual,
                            ema_decay=ema_decay if ema_decay > 0 else None, seed=seed,
                            resolution=resolution, resume=resume, progress=progress,
                            checkpoint_every=checkpoint_every)
    figures = ", ".join(f"{k} {v:.4g}" for k, v in res.val.items() if isinstance(v, float))
    typer.echo(f"{kind}: {res.model_dir} ({res.wall_s:.0f} s{'; val ' + figures if figures else ''})")


def register(app: typer.Typer) -> None:
    def make(kind: str, title: str):
        def command(
            data: Path = typer.Option(..., "--data", help="Dataset: medcf synthetic folder, class folders, CSV, .npz."),
            out: Path = typer.Option(..., "--out", help="Run directory (RUN_DIR/model is the trained model)."),
            steps: int = typer.Option(1500, "--steps", help="Optimizer steps."),
            batch_size: int = typer.Option(32, "--batch-size", help="Images per step."),
            lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (Adam, warm-up + cosine)."),
            latent_dim: int | None = typer.Option(None, "--latent-dim",
                                                  help="Latent channels (default 8 for a 16x16 or larger latent, else 16)."),
            latent_size: int = typer.Option(16, "--latent-size", help="Latent side: 16 -> [latent-dim, 16, 16]."),
            kl_weight: float = typer.Option(1e-3, "--kl-weight", help="VAE: weight of the KL term per image value."),
            perceptual: float = typer.Option(0.0, "--perceptual",
                                             help="LPIPS loss weight (0 = off; needs `medcf weights` LPIPS)."),
            ema_decay: float = typer.Option(0.995, "--ema", help="EMA decay of the exported model (0 = off)."),
            seed: int = typer.Option(0, "--seed", help="Initial weights and data order."),
            resolution: int | None = typer.Option(None, "--resolution", help="Resize images to this size."),
            resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly."),
            progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
            split: str = SPLIT,
            split_seed: int = SPLIT_SEED,
            fit: str = FIT,
            checkpoint_every: int = CHECKPOINT_EVERY,
            overwrite: bool = OVERWRITE,
        ) -> None:
            _train(kind, data, out, steps, batch_size, lr, latent_dim, latent_size, kl_weight, perceptual, ema_decay,
                   seed, resolution, resume, progress, split=split, split_seed=split_seed, fit=fit,
                   checkpoint_every=checkpoint_every, overwrite=overwrite)

        command.__doc__ = (f"Train {title} (kind '{kind}') for Latent Shift.\n\n"
                           f"Example:  medcf train {kind} --data data/synth64 --out runs/{kind} --steps 1500")
        return command

    app.command("vae", help=None)(make("vae", "a variational autoencoder"))
    app.command("ae", help=None)(make("ae", "a convolutional autoencoder"))
