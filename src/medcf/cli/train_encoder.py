"""``medcf train encoder``: a StyleGAN2 encoder (image -> W+) trained on generated pairs."""

from __future__ import annotations

from pathlib import Path

import typer

from medcf.cli._train_options import CHECKPOINT_EVERY, OVERWRITE, prepare_out


def register(app: typer.Typer) -> None:
    @app.command("encoder")
    def encoder(
        generator: Path = typer.Option(..., "--generator", help="StyleGAN2 generator: model or run directory."),
        out: Path = typer.Option(..., "--out", help="Run directory (RUN_DIR/model is the trained encoder)."),
        steps: int = typer.Option(5000, "--steps", help="Optimizer steps."),
        batch_size: int = typer.Option(32, "--batch-size", help="Generated pairs per step."),
        lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (Adam, warm-up + cosine)."),
        latent_weight: float = typer.Option(1.0, "--latent-weight", help="Weight of the latent MSE to the true w."),
        l1_weight: float = typer.Option(1.0, "--l1-weight", help="Weight of the image L1 through G."),
        lpips_weight: float = typer.Option(0.5, "--lpips-weight",
                                           help="Weight of the image LPIPS through G (0 = off)."),
        truncation: float = typer.Option(1.0, "--trunc", help="Truncation psi of the sampled w."),
        ema_decay: float = typer.Option(0.995, "--ema", help="EMA decay of the exported encoder (0 = off)."),
        seed: int = typer.Option(0, "--seed", help="Initial weights and sampled pairs."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        checkpoint_every: int = CHECKPOINT_EVERY,
        overwrite: bool = OVERWRITE,
    ) -> None:
        """Train an encoder image -> W+ for a StyleGAN2 generator (it seeds `medcf project`).

        Example:  medcf train encoder --generator runs/stylegan2 --out runs/encoder --steps 5000
        """
        from medcf.train.encoder import train_encoder

        prepare_out(out, overwrite=overwrite, resume=resume)
        res = train_encoder(generator, out, steps=steps, batch_size=batch_size, lr=lr,
                            latent_weight=latent_weight, l1_weight=l1_weight, lpips_weight=lpips_weight,
                            truncation_psi=truncation, ema_decay=ema_decay if ema_decay > 0 else None,
                            seed=seed, resume=resume, progress=progress, checkpoint_every=checkpoint_every)
        figures = ", ".join(f"{k} {v:.4g}" for k, v in res.val.items() if isinstance(v, float))
        typer.echo(f"encoder: {res.model_dir} ({res.wall_s:.0f} s{'; val ' + figures if figures else ''})")
