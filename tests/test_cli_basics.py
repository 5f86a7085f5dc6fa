"""The CLI's error contract: one line on stderr, exit code 2, no traceback (in-process runs)."""

from _cli import run_cli


def test_help_lists_command_groups(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for name in ("data", "train", "info", "explain"):
        assert name in out


def test_user_error_is_one_line_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "info", tmp_path / "missing")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "missing" in err and "Traceback" not in err


def test_debug_shows_traceback(tmp_path, capsys):
    from medcf.errors import MedcfError

    try:
        run_cli(capsys, "--debug", "info", tmp_path / "missing")
    except MedcfError as e:  # --debug re-raises instead of printing one line
        assert "missing" in str(e)
    else:
        raise AssertionError("--debug did not re-raise the error")


def test_every_train_command_takes_progress_flags():
    import typer

    from medcf.cli import app

    train = typer.main.get_command(app).commands["train"]
    missing = [name for name, cmd in train.commands.items()
               if "--no-progress" not in [o for p in cmd.params for o in p.secondary_opts]]
    assert not missing, f"medcf train {missing}: no --progress/--no-progress"


def test_train_classifier_passes_no_progress(tmp_path, capsys, monkeypatch):
    from medcf.train import classifiers

    seen = {}

    def fake(data, out, **kw):
        seen.update(kw)
        return classifiers.TrainedClassifier(tmp_path / "o" / "model", kw["role"])

    monkeypatch.setattr(classifiers, "train_classifier", fake)
    (tmp_path / "d").mkdir()
    code, _, err = run_cli(capsys, "train", "oracle", "--data", tmp_path / "d", "--out", tmp_path / "o",
                           "--no-progress")
    assert code == 0 and seen["progress"] is False and seen["role"] == "oracle", err
