"""``medcf train ...``: one subcommand per model family (commands live beside their recipes)."""

from __future__ import annotations

import typer

from medcf.cli import (
    train_autoencoders,
    train_classifiers,
    train_diffusion,
    train_encoder,
    train_gan,
    train_icam_cyclegan,
    train_progressive,
    train_stylegan2,
)

app = typer.Typer(help="Train models on the shared engine.", no_args_is_help=True)
train_classifiers.register(app)
train_autoencoders.register(app)
train_stylegan2.register(app)
train_encoder.register(app)
train_gan.register(app)
train_progressive.register(app)
train_diffusion.register(app)
train_icam_cyclegan.register(app)
