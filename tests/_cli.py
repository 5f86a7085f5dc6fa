"""Helpers for tests that run ``medcf`` commands in-process (``from _cli import run_cli``)."""

from __future__ import annotations

import json

from medcf import cli


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``medcf ARGS`` in-process: (exit code, stdout, stderr)."""
    code = 0  # main returns normally on success and exits (SystemExit) on errors
    try:
        cli.main([str(a) for a in args])
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def strict_json(path):
    """JSON that must not contain NaN/Infinity (a file other tools can read)."""
    def bad(c):
        raise ValueError(f"{path}: non-JSON constant {c}")
    return json.loads(path.read_text(), parse_constant=bad)
