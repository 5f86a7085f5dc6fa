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


def test_what_the_readme_promises_of_every_command():
    """README: every command has --help with an example; training runs resume (--resume) and show
    progress bars (--progress/--no-progress); the writing commands replace results only with --overwrite."""
    import typer

    from medcf.cli import app

    root = typer.main.get_command(app)

    def leaves(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from leaves(sub, [*path, name]) if hasattr(sub, "commands") else [(" ".join([*path, name]), sub)]

    def flags(cmd):
        return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}

    problems = [f"{n}: no example in --help" for n, c in leaves(root, ["medcf"]) if "Example:" not in (c.help or "")]
    for name, cmd in leaves(root.commands["train"], ["medcf", "train"]):
        problems += [f"{name}: no {f}" for f in ("--resume", "--no-progress") if f not in flags(cmd)]
    for name in ("generate", "project", "explain", "evaluate"):
        problems += [f"medcf {name}: no --overwrite"] if "--overwrite" not in flags(root.commands[name]) else []
    for group, name in (("convert", "stylegan2-pkl"), ("weights", "import-lpips")):
        cmd = root.commands[group].commands[name]
        problems += [f"medcf {group} {name}: no --overwrite"] if "--overwrite" not in flags(cmd) else []
    assert not problems, problems


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
