"""The ``medcf`` command. Subcommands are thin wrappers around library functions.

User errors print one line on stderr and exit with code 2; ``--debug`` (anywhere
on the command line) shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys

import click
import typer

from medcf.cli import convert, data, data_inspect, explain, generate, info, train, weights
from medcf.errors import MedcfError
from medcf.io import first_line

app = typer.Typer(
    name="medcf",
    help="Counterfactual explanations for medical-image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_inspect.register(data.app)
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(convert.app, name="convert")
app.add_typer(weights.app, name="weights")
info.register(app)
explain.register(app)
generate.register(app)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    try:
        app(args=args, prog_name="medcf", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        print("medcf: aborted", file=sys.stderr)
        sys.exit(1)
    except click.exceptions.ClickException as e:  # usage errors: exit 2
        e.show()
        sys.exit(e.exit_code)
    except MedcfError as e:
        if debug:
            raise
        print(f"medcf: error: {first_line(e)}", file=sys.stderr)
        sys.exit(2)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        if debug:
            raise
        print(f"medcf: error: {e.strerror or first_line(e)}: {e.filename}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, KeyError) as e:
        if debug:
            raise
        print(f"medcf: error: {first_line(e)}", file=sys.stderr)
        sys.exit(2)
