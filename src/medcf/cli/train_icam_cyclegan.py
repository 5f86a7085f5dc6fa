"""``medcf train icam`` and ``medcf train cyclegan``: translation backbones between two classes."""

from __future__ import annotations

from pathlib import Path

import typer

DATA = typer.Option(..., "--data", help="Labelled dataset: medcf synthetic folder, class folders, CSV, .npz.")
OUT = typer.Option(..., "--out", help="Run directory (RUN_DIR/model is the trained model).")
DOMAIN_A = typer.Option(None, "--domain-a", help="Class (name or index) of domain A (default: class 0).")
DOMAIN_B = typer.Option(None, "--domain-b", help="Class (name or index) of domain B (default: class 1).")
STEPS = typer.Option(3000, "--steps", help="Optimizer steps (each: one generator and one discriminator step).")
BATCH = typer.Option(8, "--batch-size", help="Image pairs (one of each domain) per step.")
LR = typer.Option(2e-4, "--lr", help="Adam learning rate (constant, then linear decay over the second half).")
WIDTH = typer.Option(32, "--width", help="Generator / content-encoder channels at full resolution.")
DISC_WIDTH = typer.Option(32, "--disc-width", help="Discriminator channels of the first layer.")
DISC_LAYERS = typer.Option(3, "--disc-layers", help="Stride-2 layers of the patch discriminator.")
SEED = typer.Option(0, "--seed", help="Initial weights, data pairing and order.")
RESOLUTION = typer.Option(None, "--resolution", help="Resize images to this size.")
SAMPLE_EVERY = typer.Option(500, "--sample-every", help="Steps between sample grids (RUN_DIR/samples).")
CHECKPOINT_EVERY = typer.Option(500, "--checkpoint-every", help="Steps between checkpoints.")
FID_ORACLE = typer.Option(None, "--fid-oracle", help="Classifier run: domain-FID snapshots of the translation "
                          "A -> B against real B images (off without it).")
FID_EVERY = typer.Option(0, "--fid-every", help="Steps between FID snapshots (0: at the end).")
FID_N = typer.Option(500, "--fid-n", help="A images translated and real B images per FID snapshot.")
RESUME = typer.Option(False, "--resume", help="Continue the run in --out exactly.")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")


def register(app: typer.Typer) -> None:
    @app.command("cyclegan")
    def cyclegan_command(
        data: Path = DATA, out: Path = OUT, domain_a: str | None = DOMAIN_A, domain_b: str | None = DOMAIN_B,
        steps: int = STEPS, batch_size: int = BATCH, lr: float = LR, width: int = WIDTH,
        blocks: int = typer.Option(6, "--blocks", help="Residual blocks of each generator."),
        disc_width: int = DISC_WIDTH, disc_layers: int = DISC_LAYERS,
        lambda_cycle: float = typer.Option(10.0, "--lambda-cycle", help="Weight of the cycle L1 loss."),
        lambda_identity: float = typer.Option(0.5, "--lambda-identity",
                                              help="Weight of the identity L1 loss (times --lambda-cycle)."),
        pool_size: int = typer.Option(50, "--pool-size", help="Image pool of generated images (0 = off)."),
        seed: int = SEED, resolution: int | None = RESOLUTION, sample_every: int = SAMPLE_EVERY,
        fid_oracle: Path | None = FID_ORACLE, fid_every: int = FID_EVERY, fid_n: int = FID_N,
        checkpoint_every: int = CHECKPOINT_EVERY, resume: bool = RESUME, progress: bool = PROGRESS,
    ) -> None:
        """Train a CycleGAN between two classes (for --method cyclegan).

        Example:  medcf train cyclegan --data data/synth64 --domain-a normal --domain-b cardiomegaly --out runs/cyclegan
        """
        from medcf.train.cyclegan import train_cyclegan

        res = train_cyclegan(data, out, domain_a=domain_a, domain_b=domain_b, steps=steps, batch_size=batch_size,
                             lr=lr, width=width, blocks=blocks, disc_width=disc_width, disc_layers=disc_layers,
                             lambda_cycle=lambda_cycle, lambda_identity=lambda_identity, pool_size=pool_size,
                             seed=seed, resolution=resolution, sample_every=sample_every, fid_oracle=fid_oracle,
                             fid_every=fid_every, fid_n=fid_n, checkpoint_every=checkpoint_every, resume=resume,
                             progress=progress)
        typer.echo(f"cyclegan ({res.domains[0]} <-> {res.domains[1]}): {res.model_dir} ({res.wall_s:.0f} s"
                   f"{_fid_text(res.fid)})")

    @app.command("icam")
    def icam_command(
        data: Path = DATA, out: Path = OUT, domain_a: str | None = DOMAIN_A, domain_b: str | None = DOMAIN_B,
        steps: int = STEPS, batch_size: int = BATCH, lr: float = LR, width: int = WIDTH,
        blocks: int = typer.Option(2, "--blocks", help="Residual blocks on the content code."),
        attr_dim: int = typer.Option(8, "--attr-dim", help="Size of the class-relevant attribute code "
                                     "(channels of the map with --attr-map)."),
        attr_map: int = typer.Option(0, "--attr-map", help="Spatial attribute code: an --attr-dim x K x K map "
                                     "(ICAM's design; K a power of two); 0: a vector."),
        fam: float = typer.Option(0.0, "--fam", help="Weight of ICAM's feature-attribution-map L1 term "
                                  "|G(c_a, z_b) - G(c_a, z_a)| (0: off)."),
        content_noise: float = typer.Option(0.0, "--content-noise", help="Std of the Gaussian noise on the "
                                            "content code in training (ICAM's noise layer: 1; 0: off)."),
        disc_width: int = DISC_WIDTH, disc_layers: int = DISC_LAYERS,
        seed: int = SEED, resolution: int | None = RESOLUTION, sample_every: int = SAMPLE_EVERY,
        fid_oracle: Path | None = FID_ORACLE, fid_every: int = FID_EVERY, fid_n: int = FID_N,
        checkpoint_every: int = CHECKPOINT_EVERY, resume: bool = RESUME, progress: bool = PROGRESS,
    ) -> None:
        """Train ICAM (disentangled class-relevant / class-irrelevant codes) for --method icam.

        Example:  medcf train icam --data data/synth64 --out runs/icam --steps 3000
        """
        from medcf.errors import MedcfError
        from medcf.generators.icam import ICAMWeights
        from medcf.train.icam import train_icam

        if not fam >= 0:
            raise MedcfError(f"--fam must be >= 0, got {fam}")
        if not content_noise >= 0:
            raise MedcfError(f"--content-noise must be >= 0, got {content_noise}")
        res = train_icam(data, out, domain_a=domain_a, domain_b=domain_b, steps=steps, batch_size=batch_size,
                         lr=lr, width=width, blocks=blocks, attr_dim=attr_dim, attr_map=attr_map,
                         content_noise=content_noise, weights=ICAMWeights(fam=fam), attr_width=width,
                         disc_width=disc_width, disc_layers=disc_layers, seed=seed, resolution=resolution,
                         sample_every=sample_every, fid_oracle=fid_oracle, fid_every=fid_every, fid_n=fid_n,
                         checkpoint_every=checkpoint_every, resume=resume, progress=progress)
        figures = ", ".join(f"{k} {v:.3g}" for k, v in res.val.items() if isinstance(v, float))
        typer.echo(f"icam ({res.domains[0]} <-> {res.domains[1]}): {res.model_dir} ({res.wall_s:.0f} s"
                   f"{'; val ' + figures if figures else ''}{_fid_text(res.fid)})")


def _fid_text(fid: dict | None) -> str:
    return f"; FID A->B {fid['fid']:.4g} ({fid['extractor']})" if fid else ""
