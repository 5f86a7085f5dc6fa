"""The CLI's error contract: one line on stderr, exit code 2, no traceback."""

import subprocess
import sys


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "medcf", *args], capture_output=True, text=True)


def test_help_lists_command_groups():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in ("data", "train", "info"):
        assert name in out.stdout


def test_user_error_is_one_line_exit_2(tmp_path):
    out = run_cli("info", str(tmp_path / "missing"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "missing" in out.stderr and "Traceback" not in out.stderr


def test_debug_shows_traceback(tmp_path):
    out = run_cli("--debug", "info", str(tmp_path / "missing"))
    assert out.returncode != 0 and "Traceback" in out.stderr
