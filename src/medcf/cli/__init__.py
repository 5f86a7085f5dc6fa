"""The ``medcf`` command. Subcommands are thin wrappers around library functions.

Contract (tested in tests/test_cli_usage.py):

- usage errors (unknown command or flag, missing option, bad value, bare ``medcf``)
  and user errors (``MedcfError``, missing/unreadable files) print one line on stderr
  plus at most a hint line, and exit with code 2;
- anything else is a bug: a short message that says ``rerun with --debug``, exit 1;
- ``--debug`` (anywhere on the command line) shows the traceback instead.

Importing this module does not import torch: command modules import heavy libraries
inside their command functions, so ``medcf --help`` is instant.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from medcf.cli import (
    benchmark,
    convert,
    data,
    data_inspect,
    explain,
    generate,
    info,
    train,
    weights,
)
from medcf.errors import MedcfError

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
benchmark.register(app)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _click_exceptions(name: str) -> tuple[type[BaseException], ...]:
    """``NAME`` from every click the installed typer may raise: its vendored copy
    (``typer._click``, typer >= 0.26) and the standalone ``click`` package."""
    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if cls is not None and cls not in found:
            found.append(cls)
    return tuple(found)


_EXIT = _click_exceptions("Exit")
_ABORT = _click_exceptions("Abort")
_USAGE = _click_exceptions("UsageError")
_CLICK = _click_exceptions("ClickException")
_NO_ARGS = _click_exceptions("NoArgsIsHelpError")
_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _usage_error(e) -> None:
    """One line naming the problem, one hint line; exit 2."""
    ctx = getattr(e, "ctx", None)
    path = ctx.command_path if ctx is not None else "medcf"
    if _NO_ARGS and isinstance(e, _NO_ARGS):  # bare `medcf` or `medcf train`
        names = ", ".join(ctx.command.list_commands(ctx)) if ctx is not None else ""
        message = f"missing command (one of: {names})" if names else "missing command"
    else:
        message = _one_line(e.format_message())
    print(f"{path}: error: {message}", file=sys.stderr)
    print(f"Try '{path} --help' for help.", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: ``medcf ARGS`` (``argv`` defaults to ``sys.argv[1:]``).

    Example:  ``medcf.cli.main(["info", "runs/demo/classifier"])``
    """
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    from medcf.threads import configure_threads

    configure_threads()
    try:
        app(args=args, prog_name="medcf", standalone_mode=False)
    except _EXIT as e:
        sys.exit(e.exit_code)
    except _ABORT:
        print("medcf: aborted", file=sys.stderr)
        sys.exit(1)
    except _USAGE as e:
        _usage_error(e)
    except _CLICK as e:  # other click errors (bad file arguments, ...): one line, exit 2
        print(f"medcf: error: {_one_line(e.format_message())}", file=sys.stderr)
        sys.exit(e.exit_code or 2)
    except MedcfError as e:
        if debug:
            raise
        print(f"medcf: error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except _FILE_ERRORS as e:
        if debug:
            raise
        print(f"medcf: error: {e.strerror or _one_line(e)}: {e.filename}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("medcf: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a bug (or an unchecked input): say so, do not hide it as a user error
        if debug:
            raise
        print(f"medcf: internal error: {type(e).__name__}: {_one_line(e)} "
              "(rerun with --debug for the traceback and report it)", file=sys.stderr)
        sys.exit(1)
