"""Options every ``medcf train`` command shares: data fitting/splitting, checkpoints, overwrite.

Typer reads these ``OptionInfo`` objects; sharing them keeps one help text. The helpers
turn the flags into what the recipes take (a ``DataOptions`` path) and apply
``--overwrite`` before a recipe starts (only the engine's own files are removed).
"""

from __future__ import annotations

from pathlib import Path

import typer

from medcf.errors import DataError, MedcfError

SPLIT = typer.Option(None, "--split", help="Class folders without train/val/test folders: split them "
                     "train,val,test by these fractions, per class (e.g. 0.8,0.1,0.1; seeded by "
                     "--split-seed, recorded in the run).")
SPLIT_SEED = typer.Option(0, "--split-seed", help="Seed of the --split shuffle.")
FIT = typer.Option("pad", "--fit", help="Non-square images with --resolution: pad (keep the whole "
                   "image, black borders), crop (centre square) or squash (stretch).")
CHECKPOINT_EVERY = typer.Option(500, "--checkpoint-every", help="Steps between checkpoints that "
                                "--resume continues from (0: only at the end).")
OVERWRITE = typer.Option(False, "--overwrite", help="Start over in an --out that holds a run "
                         "(its checkpoints, logs and model are removed; other files are kept).")


def parse_fractions(value: str | None) -> tuple[float, float, float] | None:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1); one-line ``DataError`` naming --split otherwise."""
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(not 0 <= v <= 1 for v in parts) or abs(sum(parts) - 1) > 1e-6 or parts[0] == 0:
        raise DataError(f"--split/--fractions: expected three fractions train,val,test that sum to 1 "
                        f"(e.g. 0.8,0.1,0.1), got {value!r}")
    return parts  # type: ignore[return-value]


def data_path(data: Path, split: str | None, split_seed: int, fit: str):
    """``--data`` plus the data flags, as the recipes take it (a path or a ``DataOptions``)."""
    from medcf.data import DataOptions
    from medcf.data.images import FITS

    if not data.exists():
        raise DataError(f"{data}: --data not found")
    if fit not in FITS:
        raise DataError(f"--fit: expected one of {', '.join(FITS)}, got {fit!r}")
    fractions = parse_fractions(split)
    if fractions is None and fit == "pad":
        return data
    return DataOptions(str(data), split_fractions=fractions, split_seed=split_seed, fit=fit)


def prepare_out(out: Path, *, overwrite: bool, resume: bool) -> None:
    """Apply ``--overwrite`` (refused together with ``--resume``) before training starts."""
    if overwrite and resume:
        raise MedcfError("--overwrite and --resume: give one of them (start over, or continue)")
    if overwrite:
        from medcf.train.engine import clear_run_dir

        clear_run_dir(out)
