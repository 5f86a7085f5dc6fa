"""CLI usage errors, the bug/user-error split, lazy imports and thread settings.

Usage errors go through ``medcf.cli.main`` (the console-script entry point) in-process,
and once through the installed ``medcf`` executable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from _cli import run_cli
from medcf import cli
from medcf.errors import DataError
from medcf.threads import configure_threads, usable_cpus

USAGE_CASES = {
    "typo_flag": (["train", "vae", "--data", "d", "--out", "o", "--step", "5"], "--step"),
    "missing_out": (["train", "vae", "--data", "d"], "--out"),
    "bad_value": (["train", "vae", "--data", "d", "--out", "o", "--steps", "abc"], "--steps"),
    "unknown_command": (["trian"], "trian"),
    "bare": ([], "missing command"),
}


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_error_is_one_line_plus_hint_exit_2(case, capsys, tmp_path):
    args, needle = USAGE_CASES[case]
    code, _, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 2 and "Traceback" not in err, err
    assert needle in lines[0] and lines[0].startswith("medcf") and "error:" in lines[0]
    assert lines[1].startswith("Try 'medcf") and "--help" in lines[1]
    assert not (tmp_path / "o").exists()


def test_usage_error_through_the_installed_executable():
    exe = Path(sys.executable).with_name("medcf")
    if not exe.exists():
        pytest.skip(f"no console script next to {sys.executable} (package not pip-installed)")
    out = subprocess.run([str(exe), "trian"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "medcf: error: No such command 'trian'. Did you mean 'train'?",
        "Try 'medcf --help' for help."]


def _raise(exc):
    def describe(path):
        raise exc
    return describe


def test_user_errors_are_one_line_but_bugs_ask_for_debug(monkeypatch, capsys):
    monkeypatch.setattr(cli.info, "describe_checkpoint", _raise(DataError("--data x: no images")))
    code, _, err = run_cli(capsys, "info", "x")
    assert code == 2 and err == "medcf: error: --data x: no images\n"

    monkeypatch.setattr(cli.info, "describe_checkpoint", _raise(FileNotFoundError(2, "No such file", "x.json")))
    code, _, err = run_cli(capsys, "info", "x")
    assert code == 2 and err == "medcf: error: No such file: x.json\n"

    # A ValueError/KeyError from inside medcf is a bug, not a user error: exit 1, say --debug.
    for exc in (ValueError("bad shape\nmore detail"), KeyError("weight")):
        monkeypatch.setattr(cli.info, "describe_checkpoint", _raise(exc))
        code, _, err = run_cli(capsys, "info", "x")
        assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
        assert type(exc).__name__ in err and "rerun with --debug" in err
        with pytest.raises(type(exc)):
            cli.main(["--debug", "info", "x"])


def test_help_does_not_import_torch():
    code = ("import sys; import medcf.cli; "
            "from medcf.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert not e.code\n"
            "print(sorted(m for m in ('torch', 'numpy', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_weights_nets_match_the_library():
    from medcf.cli import weights
    from medcf.eval.lpips_weights import NETS

    assert weights.NETS == NETS


def test_usable_cpus_respects_affinity_and_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == affinity  # no cgroup files: the affinity mask
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one thread
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")  # cgroup v1: 1 CPU
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1


def test_configure_threads_keeps_user_settings(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("OMP_WAIT_POLICY")
        assert configure_threads() == usable_cpus()
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        assert os.environ["OMP_NUM_THREADS"] == str(usable_cpus())
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", ["classifier", "oracle", "ae", "vae", "encoder", "stylegan2"])
def test_training_commands_take_checkpoint_every_and_overwrite(command):
    import typer.main

    group = typer.main.get_command(cli.app).commands["train"]
    params = {p.name: p for p in group.commands[command].params}
    assert params["checkpoint_every"].default == 500 and params["overwrite"].default is False
    assert params["overwrite"].is_flag
