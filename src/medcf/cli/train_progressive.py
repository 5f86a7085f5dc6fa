"""``medcf train progressive|dissect``: a generator trained for one classifier."""

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


def register(app: typer.Typer) -> None:
    def make(name: str, default_concepts: int):
        def command(
            data: Path = typer.Option(..., "--data", help="Dataset: medcf synthetic folder, class folders, CSV, .npz."),
            out: Path = typer.Option(..., "--out", help="Run directory (RUN_DIR/model is the generator)."),
            classifier: Path = typer.Option(..., "--classifier", help="The classifier to explain (run or model dir)."),
            bins: int = typer.Option(10, "--bins", help="Posterior bins of [0, 1]."),
            concepts: int = typer.Option(default_concepts, "--concepts", help="Concept channels K (DISSECT)."),
            steps: int = typer.Option(3000, "--steps", help="Optimizer steps."),
            batch_size: int = typer.Option(16, "--batch-size", help="Images per step."),
            lr: float = typer.Option(2e-4, "--lr", help="Adam learning rate (G, D and disentangler)."),
            width: int = typer.Option(32, "--width", help="Generator/discriminator width."),
            cls_weight: float = typer.Option(20.0, "--cls-weight", help="Classifier-consistency weight."),
            rec_weight: float = typer.Option(10.0, "--rec-weight", help="Reconstruction + cycle weight."),
            fo_weight: float = typer.Option(100.0, "--fo-weight",
                                            help="Foreign-object preservation weight (uses the data's object masks; 0 = off)."),
            dis_weight: float | None = typer.Option(
                None, "--dis-weight", help="DISSECT: weight of the disentangler term [default: the recipe's, 30]."),
            tv_weight: float = typer.Option(0.0, "--tv-weight", help="Total variation of the change (0 = off)."),
            delta_scale: int = typer.Option(1, "--delta-scale",
                                            help="Make the change at resolution / N, upsampled (1, 2, 4, 8, 16)."),
            bin_targets: str = typer.Option("centre", "--bin-targets",
                                            help="Consistency target per bin: 'centre' or 'data' (the classifier's "
                                                 "mean probability over the training images in the bin)."),
            consistency_aug: str = typer.Option(
                "none", "--consistency-aug", help="Perturb G's output where the classifier judges it, e.g. "
                                                  "'shift=2,noise=0.02,blur=0.5' (translation px, noise std, "
                                                  "blur probability; 'none' = off)."),
            target_scale: float = typer.Option(1.0, "--target-scale",
                                               help="Multiply the bin targets' log-odds (> 1: more confident ends)."),
            adv_weight: float = typer.Option(1.0, "--adv-weight", help="Adversarial (realism) weight."),
            d_steps: int = typer.Option(1, "--d-steps", help="Discriminator updates per generator update (1..10)."),
            d_width: int | None = typer.Option(None, "--d-width", help="Discriminator width [default: --width]."),
            d_lr: float | None = typer.Option(None, "--d-lr", help="Discriminator learning rate [default: --lr]."),
            seed: int = typer.Option(0, "--seed", help="Initial weights and data order."),
            resolution: int | None = typer.Option(None, "--resolution", help="Resize images to this size."),
            resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly."),
            progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
            split: str | None = SPLIT,
            split_seed: int = SPLIT_SEED,
            fit: str = FIT,
            checkpoint_every: int = CHECKPOINT_EVERY,
            overwrite: bool = OVERWRITE,
        ) -> None:
            from medcf.errors import MedcfError
            from medcf.train.progressive import train_progressive

            if name == "dissect" and concepts < 2:
                raise MedcfError(f"--concepts: DISSECT needs at least 2 concepts, got {concepts}")
            source = data_path(data, split, split_seed, fit)
            prepare_out(out, overwrite=overwrite, resume=resume)
            res = train_progressive(source, out, classifier=classifier, bins=bins, concepts=concepts, steps=steps,
                                    batch_size=batch_size, lr=lr, width=width, cls_weight=cls_weight, rec_weight=rec_weight,
                                    fo_weight=fo_weight, delta_scale=delta_scale, adv_weight=adv_weight, bin_targets=bin_targets, tv_weight=tv_weight, d_steps=d_steps,
                                    consistency_aug=consistency_aug, target_scale=target_scale,
                                    d_width=d_width, d_lr=d_lr, seed=seed, resolution=resolution, resume=resume,
                                    progress=progress, checkpoint_every=checkpoint_every,
                                    **({} if dis_weight is None else {"dis_weight": dis_weight}))
            typer.echo(f"{name}: {res.model_dir} (for classifier {res.classifier_hash}; {res.wall_s:.0f} s)")

        what = ("a concept-disentangled generator (DISSECT, Ghandeharioun et al.)" if name == "dissect"
                else "a progressive-exaggeration generator (Singla et al.)")
        command.__doc__ = (f"Train {what} for one classifier.\n\n"
                           f"Example:  medcf train {name} --data data/synth64 --classifier runs/classifier "
                           f"--out runs/{name}" + (" --concepts 2" if name == "dissect" else ""))
        return command

    app.command("progressive")(make("progressive", 1))
    app.command("dissect")(make("dissect", 2))
