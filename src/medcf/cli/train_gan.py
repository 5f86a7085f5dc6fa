"""``medcf train gan``, ``medcf train gan-encoder`` and ``medcf train vagan``."""

from __future__ import annotations

from pathlib import Path

import typer

_COMMON = {
    "out": lambda: typer.Option(..., "--out", help="Run directory (RUN_DIR/model is the result)."),
    "seed": lambda: typer.Option(0, "--seed", help="Initial weights and data order."),
    "resume": lambda: typer.Option(False, "--resume", help="Continue the run in --out exactly."),
    "progress": lambda: typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
}


def register(app: typer.Typer) -> None:
    @app.command("gan")
    def gan(
        data: Path = typer.Option(..., "--data", help="Images (labels unused): synthetic folder, class folders, "
                                  "CSV, .npz."),
        out: Path = _COMMON["out"](),
        loss: str = typer.Option("wgan-gp", "--loss", help="wgan-gp | ns (non-saturating)."),
        steps: int = typer.Option(2000, "--steps", help="Generator updates."),
        n_critic: int = typer.Option(None, "--n-critic", help="Critic updates per generator update "
                                     "(default 5 for wgan-gp, 1 for ns)."),
        batch_size: int = typer.Option(64, "--batch-size", help="Images per step."),
        lr: float = typer.Option(2e-4, "--lr", help="Adam learning rate."),
        z_dim: int = typer.Option(128, "--z-dim", help="Latent size."),
        base_channels: int = typer.Option(32, "--base-channels", help="Channels at full resolution."),
        resolution: int = typer.Option(None, "--resolution", help="Resize images to this size (power of two)."),
        ema_decay: float = typer.Option(0.999, "--ema", help="EMA decay of the exported generator (0 = off)."),
        sample_every: int = typer.Option(1000, "--sample-every", help="Engine steps between sample grids."),
        fid_oracle: Path = typer.Option(None, "--fid-oracle", help="Classifier run: domain-FID snapshots."),
        fid_every: int = typer.Option(0, "--fid-every", help="Engine steps between FID snapshots (0: at the end)."),
        fid_n: int = typer.Option(500, "--fid-n", help="Training images and samples per FID snapshot."),
        seed: int = _COMMON["seed"](),
        resume: bool = _COMMON["resume"](),
        progress: bool = _COMMON["progress"](),
    ) -> None:
        """Train a DCGAN on unlabelled images (the backbone of GVR).

        Example:  medcf train gan --data data/synth64 --out runs/gan --resolution 64 --loss wgan-gp
        """
        from medcf.train.gan import train_gan

        res = train_gan(data, out, loss=loss, steps=steps, n_critic=n_critic, batch_size=batch_size, lr=lr,
                        z_dim=z_dim, base_channels=base_channels, resolution=resolution,
                        ema_decay=ema_decay if ema_decay > 0 else None, sample_every=sample_every,
                        fid_oracle=fid_oracle, fid_every=fid_every, fid_n=fid_n, seed=seed, resume=resume,
                        progress=progress)
        fid = f"; FID {res.fid['fid']:.4g} ({res.fid['extractor']})" if res.fid else ""
        typer.echo(f"gan: {res.model_dir} ({res.steps} engine steps, {res.wall_s:.0f} s{fid})")

    @app.command("gan-encoder")
    def gan_encoder(
        generator: Path = typer.Option(..., "--generator", help="DCGAN run (medcf train gan)."),
        out: Path = _COMMON["out"](),
        data: Path = typer.Option(None, "--data", help="Real images for the real-image reconstruction term."),
        steps: int = typer.Option(2000, "--steps", help="Optimizer steps."),
        batch_size: int = typer.Option(64, "--batch-size", help="Generated pairs (and real images) per step."),
        lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (Adam, warm-up + cosine)."),
        latent_weight: float = typer.Option(1.0, "--latent-weight", help="Weight of MSE(E(G(z)), z)."),
        image_weight: float = typer.Option(1.0, "--image-weight", help="Weight of |G(E(G(z))) - G(z)|."),
        real_weight: float = typer.Option(1.0, "--real-weight", help="Weight of |G(E(x)) - x| on --data."),
        lpips_weight: float = typer.Option(0.0, "--lpips-weight", help="LPIPS through G (0 = off)."),
        ema_decay: float = typer.Option(0.995, "--ema", help="EMA decay of the exported encoder (0 = off)."),
        seed: int = _COMMON["seed"](),
        resume: bool = _COMMON["resume"](),
        progress: bool = _COMMON["progress"](),
    ) -> None:
        """Train the encoder image -> z that inverts a DCGAN (GVR starts from z0 = E(x)).

        Example:  medcf train gan-encoder --generator runs/gan --data data/synth64 --out runs/gan-encoder
        """
        from medcf.train.gan_encoder import train_gan_encoder

        res = train_gan_encoder(generator, out, data=data, steps=steps, batch_size=batch_size, lr=lr,
                                latent_weight=latent_weight, image_weight=image_weight, real_weight=real_weight,
                                lpips_weight=lpips_weight, ema_decay=ema_decay if ema_decay > 0 else None,
                                seed=seed, resume=resume, progress=progress)
        figures = ", ".join(f"{k} {v:.4g}" for k, v in res.val.items() if isinstance(v, float))
        typer.echo(f"gan-encoder: {res.model_dir} ({res.wall_s:.0f} s{'; val ' + figures if figures else ''})")

    @app.command("vagan")
    def vagan(
        data: Path = typer.Option(..., "--data", help="Labelled images of (at least) the two classes."),
        source: str = typer.Option(..., "--source", help="Class whose images are mapped (name or index)."),
        target: str = typer.Option(..., "--target", help="Class x + M(x) should look like (name or index)."),
        out: Path = _COMMON["out"](),
        steps: int = typer.Option(2000, "--steps", help="Map-generator updates."),
        n_critic: int = typer.Option(5, "--n-critic", help="Critic updates per map update."),
        critic_warmup: int = typer.Option(500, "--critic-warmup", help="Critic-only updates before the "
                                          "first map update (see docs/vagan.md)."),
        l1_weight: float = typer.Option(10.0, "--l1-weight", help="Weight of mean|M(x)| (see docs/vagan.md)."),
        gp_weight: float = typer.Option(10.0, "--gp-weight", help="WGAN-GP gradient-penalty weight."),
        batch_size: int = typer.Option(32, "--batch-size", help="Image pairs per step."),
        lr: float = typer.Option(1e-4, "--lr", help="The critic's Adam learning rate."),
        map_lr: float = typer.Option(1e-5, "--map-lr", help="The map generator's Adam learning rate."),
        base_channels: int = typer.Option(16, "--base-channels", help="U-Net channels of the first level."),
        depth: int = typer.Option(3, "--depth", help="U-Net levels."),
        resolution: int = typer.Option(None, "--resolution", help="Resize images to this size."),
        oracle: Path = typer.Option(None, "--oracle", help="Classifier run scoring the snapshots (oracle "
                                    "validity and proximity); without it the last snapshot is kept."),
        snapshot_every: int = typer.Option(0, "--snapshot-every", help="Map updates between snapshots "
                                           "(0: steps / 5)."),
        seed: int = _COMMON["seed"](),
        resume: bool = _COMMON["resume"](),
        progress: bool = _COMMON["progress"](),
    ) -> None:
        """Train VA-GAN's map generator (y = x + M(x)) from --source to --target images.

        Example:  medcf train vagan --data data/opacity64 --source opacity --target clear
        --oracle runs/oracle --out runs/vagan
        """
        from medcf.train.vagan import train_vagan

        res = train_vagan(data, out, source=source, target=target, steps=steps, n_critic=n_critic,
                          critic_warmup=critic_warmup, map_lr=map_lr,
                          l1_weight=l1_weight, gp_weight=gp_weight, batch_size=batch_size, lr=lr,
                          base_channels=base_channels, depth=depth, resolution=resolution, oracle=oracle,
                          snapshot_every=snapshot_every, seed=seed, resume=resume, progress=progress)
        sel = res.selection
        picked = f"; selected {sel['snapshot']} ({sel['rule']})" if sel else ""
        typer.echo(f"vagan: {res.model_dir} ({res.wall_s:.0f} s{picked})")
