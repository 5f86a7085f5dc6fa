"""`medcf benchmark`: micro profile end to end (interrupted, resumed, re-run, one method updated),
one-line errors before any training, the stage cache, captum baselines on closed-form models, and
the report in a real browser (skipped without Chromium)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from _cli import run_cli
from medcf.benchmark import COLUMNS, load_profile, run_benchmark
from medcf.benchmark import runner as bench_runner
from medcf.benchmark.cache import cached_stage, stage_checkpoint_every, stage_record
from medcf.benchmark.profile import builtin_profiles
from medcf.benchmark.results import COUNTERFACTUAL_COLUMNS
from medcf.benchmark.tasks import TASKS, check_task
from medcf.data import open_dataset
from medcf.errors import MedcfError
from medcf.eval.attribution import attribution_maps, map_localization

ROOT = Path(__file__).resolve().parents[1]
METHOD_ROWS = {"latent-shift", "latent-probe"}
BASELINE_ROWS = {"baseline-saliency", "baseline-ig", "baseline-gradcam"}
# the methods this test is about (other methods' prepare hooks bring their own tests and sizes)
METHODS = "latent-shift,latent-probe,baseline-saliency,baseline-ig,baseline-gradcam"


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames or []), list(r)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """The micro profile, interrupted after the first method, then resumed (API)."""
    out = tmp_path_factory.mktemp("bench") / "micro"
    profile = load_profile("micro")
    calls = []
    real = bench_runner._run_baseline

    def crash(name, task, ctx):
        calls.append(name)
        raise KeyboardInterrupt  # as Ctrl-C in the middle of the run

    bench_runner._run_baseline = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            run_benchmark(out, profile, methods=METHODS, progress=False, echo=lambda s: None)
    finally:
        bench_runner._run_baseline = real
    interrupted = json.loads((out / "benchmark.json").read_text())
    with pytest.raises(MedcfError, match="interrupted benchmark; pass --resume"):
        run_benchmark(out, profile, methods=METHODS, progress=False, echo=lambda s: None)
    lines: list[str] = []
    run_benchmark(out, profile, methods=METHODS, progress=False, resume=True, echo=lines.append)
    return SimpleNamespace(out=out, profile=profile, interrupted=interrupted, resume_log=lines, crashed=calls)


def test_resume_continues_where_it_stopped(micro):
    assert micro.crashed == ["baseline-saliency"]
    assert micro.interrupted["state"] == "running"
    done_before = set(k.split("|")[0] for k in micro.interrupted["rows"])
    assert done_before == METHOD_ROWS  # both methods finished before the interruption
    kept = [s for s in micro.resume_log if "done earlier, kept" in s]
    assert {s.split("] ")[1].split(":")[0] for s in kept} == METHOD_ROWS
    assert json.loads((micro.out / "benchmark.json").read_text())["state"] == "done"


def test_results_csv_columns_and_rows(micro):
    header, rows = read_csv(micro.out / "results.csv")
    assert tuple(header) == COLUMNS
    assert {r["method"] for r in rows} == METHOD_ROWS | BASELINE_ROWS
    n = micro.profile.evaluate["n_queries"]
    for r in rows:
        assert r["task"] == "cardiomegaly" and int(r["n_queries"]) == n
        assert r["cpr_change"] == ""  # effusion-only metric
        assert float(r["sec_per_query"]) > 0
        for c in ("validity", "oracle_validity", "fop", "ncc", "auroc", "ctr_cross", "cv_singla"):
            if r[c] != "":
                v = float(r[c])
                assert (-1 <= v <= 1) if c == "ncc" else (0 <= v <= 1), (r["method"], c, v)
        if r["method"] in BASELINE_ROWS:
            assert all(r[c] == "" for c in COUNTERFACTUAL_COLUMNS) and r["train_min"] == ""
            assert r["auroc"] != ""  # the heart-border band is known for every query
        else:
            assert r["validity"] != "" and r["l1"] != "" and float(r["train_min"]) > 0
            assert r["ctr_cross"] != ""  # cardiomegaly: CTR regressor trained


def test_every_method_explains_the_same_queries(micro):
    test = open_dataset(next((micro.out / "cache").glob("data-cardiomegaly-*")), split="test")
    k = micro.profile.evaluate["n_examples"]
    first = torch.stack([test[i]["image"] for i in range(k)])
    for m in METHOD_ROWS | BASELINE_ROWS:
        ex = load_file(str(micro.out / "rows" / "cardiomegaly" / m / "examples.safetensors"))
        assert torch.equal(ex["original"][:k], first), m


def test_results_md_and_report(micro):
    md = (micro.out / "results.md").read_text()
    assert "micro-profile figures" in md and "an attribution map, not a counterfactual" in md
    assert "commit" in md and "machine" in md and "seed" in md
    assert "cardiomegaly / oracle: n " in md  # the judges' test figures
    assert "no prepare hook" in md or "Not benchmarked" not in md  # methods left out are named
    html = (micro.out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<svg" in html and "<script" in html
    assert "http://" not in html and "https://" not in html  # self-contained


def test_methods_updates_only_its_rows(micro, capsys):
    before = read_csv(micro.out / "results.csv")[1]
    code, out, err = run_cli(capsys, "benchmark", "--profile", "micro", "--out", micro.out,
                             "--methods", "baseline-gradcam", "--no-progress")
    assert code == 0, err
    assert "baseline-gradcam: auroc" in out and "latent-shift" not in out
    after = read_csv(micro.out / "results.csv")[1]
    assert [r["method"] for r in after] == [r["method"] for r in before]
    same = lambda r: {k: v for k, v in r.items() if k != "sec_per_query"}  # noqa: E731
    assert [same(r) for r in after] == [same(r) for r in before]  # deterministic maps, same queries


@pytest.mark.parametrize("args, message", [
    (("--methods", "latent-shfit"), "--methods: unknown method 'latent-shfit'"),
    (("--task", "pneumonia"), "--task: unknown task 'pneumonia'"),
    (("--profile", "huge"), "--profile: unknown profile 'huge'"),
    (("--device", "tpu"), "--device: expected cpu or cuda"),
])
def test_bad_input_is_one_line_before_training(tmp_path, capsys, args, message):
    out = tmp_path / "b"
    code, stdout, err = run_cli(capsys, "benchmark", "--profile", "micro", "--out", out, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "cache").exists()  # nothing trained


def test_method_without_prepare_hook_is_refused_and_listed(tmp_path, capsys, monkeypatch):
    from medcf.counterfactual import registry

    spec = registry.MethodSpec(build=lambda *a, **k: None, options=(), backbone="none")  # prepare=None
    monkeypatch.setitem(registry.METHODS, "no-hook", spec)
    code, _, err = run_cli(capsys, "benchmark", "--profile", "micro", "--out", tmp_path / "b",
                           "--methods", "latent-shift,no-hook")
    assert code == 2 and "--methods: no-hook is not benchmarked" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
    sel = bench_runner.select_methods(None)
    assert "no-hook" in sel.not_benchmarked and "no-hook" not in sel.methods


def test_a_profile_runs_the_methods_it_has_tables_for():
    sel = bench_runner.select_methods(None, {"latent-shift": {}})
    assert sel.methods == ("latent-shift",) and not sel.explicit
    assert "no [methods.NAME] table" in sel.not_benchmarked["dissect"]
    assert bench_runner.select_methods("dissect", {"latent-shift": {}}).methods == ("dissect",)


def test_tasks_list_and_unavailable_task():
    assert TASKS == ("cardiomegaly", "opacity", "effusion", "shortcut")
    assert check_task("opacity") == "opacity"
    assert check_task("shortcut") == "shortcut"


def test_stage_checkpoints_every_quarter_capped_at_1000_steps():
    # a quarter of the run, never under 50 steps, never over 1,000 (a killed multi-hour run
    # loses at most 1,000 steps on --resume)
    assert [stage_checkpoint_every(s) for s in (40, 300, 3000, 4000, 12000, 10 ** 6)] == [50, 75, 750, 1000, 1000, 1000]


def test_cached_stage_skips_finished_and_restarts_partial(tmp_path):
    runs = []

    def run(d, resume):
        runs.append((d.name, resume))
        (d / "out.txt").write_text("x")

    a = cached_stage(tmp_path, "s", {"k": 1}, run)
    assert cached_stage(tmp_path, "s", {"k": 1}, run) == a and len(runs) == 1  # finished: skipped
    b = cached_stage(tmp_path, "s", {"k": 2}, run)
    assert b != a and len(runs) == 2  # another config: another folder
    (b / "benchmark-stage.json").write_text(json.dumps({"done": False, "seconds": 5.0}))
    (b / "stray").write_text("partial")
    cached_stage(tmp_path, "s", {"k": 2}, run)
    assert runs[-1] == (b.name, False) and not (b / "stray").exists()  # no checkpoint: restarted clean
    assert stage_record(b)["seconds"] >= 5.0  # wall time adds up over attempts
    (b / "benchmark-stage.json").write_text(json.dumps({"done": False}))
    (b / "train_state.pt").write_bytes(b"")
    cached_stage(tmp_path, "s", {"k": 2}, run)
    assert runs[-1] == (b.name, True)  # a checkpoint: resumed
    # an attempt killed before it could record its seconds: the checkpoint's training time counts
    (b / "benchmark-stage.json").write_text(json.dumps({"done": False, "seconds": 0.0}))
    torch.save({"step": 10, "elapsed": 3600.0}, b / "train_state.pt")
    cached_stage(tmp_path, "s", {"k": 2}, run)
    assert runs[-1] == (b.name, True) and 3600.0 <= stage_record(b)["seconds"] < 3660.0


class _Linear(nn.Module):
    """logits = W @ vec(conv1x1(x)) with the 1x1 conv the identity: closed-form gradients."""

    def __init__(self, w: torch.Tensor):  # w [K, H*W]
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.fc = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(w)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def test_captum_baselines_closed_form():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 36, generator=g)
    model = _Linear(w)
    x = torch.rand(3, 1, 6, 6, generator=g) * 2 - 1
    t = torch.tensor([0, 1, 1])
    sal = attribution_maps(model, x, "saliency", target=t)
    assert torch.allclose(sal, w[t].abs().view(3, 1, 6, 6), atol=1e-6)  # |d logit_t / dx|
    ig = attribution_maps(model, x, "ig", target=t, n_steps=8)
    assert torch.allclose(ig, (x + 1) * w[t].view(3, 1, 6, 6), atol=1e-5)  # linear: exact from -1
    cam = attribution_maps(model, x, "gradcam", target=t)
    # one channel: weight = mean gradient of logit_t over the map; cam = ReLU(weight * activation)
    expected = torch.relu(w[t].mean(1).view(3, 1, 1, 1) * x)
    assert torch.allclose(cam, expected, atol=1e-5)
    default = attribution_maps(model, x, "saliency")  # default target: the decision
    assert torch.allclose(default, w[model(x).argmax(1)].abs().view(3, 1, 6, 6), atol=1e-6)


def test_map_localization_perfect_map():
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 3:6] = 1
    scores = map_localization(mask * 3.0, {"region": mask}, None)
    assert torch.allclose(scores["ncc"], torch.ones(2)) and torch.allclose(scores["auroc"], torch.ones(2))


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium(micro, tmp_path):
    png = tmp_path / "report.png"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_report.py"),
                          str(micro.out / "report.html"), str(png), "--height", "900"],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    from PIL import Image

    img = Image.open(png).convert("L")
    assert img.size == (1400, 900)
    lo, hi = img.getextrema()
    assert hi - lo > 100  # drawn content, not a blank page


def test_data_of_another_task_is_refused_before_training(micro, tmp_path, capsys):
    data = next((micro.out / "cache").glob("data-cardiomegaly-*"))
    out = tmp_path / "b"
    code, _, err = run_cli(capsys, "benchmark", "--profile", "micro", "--out", out, "--data", data,
                           "--task", "opacity")
    assert code == 2 and "holds the cardiomegaly task, not opacity" in err
    assert not out.exists()


def test_task_shortcut_runs_the_study_from_a_user_profile(tmp_path, capsys):
    text = (ROOT / "src/medcf/benchmark/profiles/micro.toml").read_text().replace('name = "micro"',
                                                                                 'name = "mine"')
    text += ("\n[shortcut]\nn_train = 32\nn_test = 16\nn_queries = 4\nmax_steps = 2\n"
             "classifier = [[4, 8], 2, 8]\nctr_regressor = [[4, 8], 2, 8]\nfo_detector = [[4, 8], 2, 8]\n"
             "vae = [[8], 2, 8]\nprogressive = [8, 2, 4]\n")
    config = tmp_path / "mine.toml"
    config.write_text(text)
    out = tmp_path / "b"
    code, stdout, err = run_cli(capsys, "benchmark", "--config", config, "--out", out, "--task", "shortcut",
                                "--no-progress")
    assert code == 0, err
    study = json.loads((out / "shortcut" / "shortcut.json").read_text())
    assert study["plan"]["classifier"] == [[4, 8], 2, 8] and study["explainer"]["queries"]["n"] == 4
    # the profile's progressive table adds the second explainer, judged for both classifiers
    assert set(study["progressive"]) >= {"shortcut", "clean"}
    assert "shortcut study" in (out / "results.md").read_text()
    header, rows = read_csv(out / "results.csv")
    assert tuple(header) == COLUMNS and rows == []  # the study has its own table


def test_task_effusion_scores_the_recess(tmp_path, capsys):
    out = tmp_path / "eff"
    code, stdout, err = run_cli(capsys, "benchmark", "--profile", "micro", "--out", out, "--task", "effusion",
                                "--methods", "latent-shift", "--no-progress")
    assert code == 0, err
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["method"], r["task"]) for r in rows] == [("latent-shift", "effusion")]
    cpr = float(rows[0]["cpr_change"])  # a fraction of the queries, measured by the trained recess scorer
    assert 0.0 <= cpr <= 1.0 and rows[0]["ctr_cross"] == ""
    # localization against the pleural fluid mask, like the heart band / lesion of the other tasks
    # (ncc may stay empty here: the micro profile's VAE barely changes the images, a constant map)
    assert 0.0 <= float(rows[0]["auroc"]) <= 1.0
    loc = json.loads((out / "rows" / "effusion" / "latent-shift" / "summary.json").read_text())["localization"]
    assert loc["region"] == "pleural fluid mask" and loc["n_scored"] >= 1
    assert (out / "cache").glob("cpr-scorer-*").__next__().is_dir()


def test_cpu_profile_shares_the_full_profiles_data_judges_and_queries():
    # The cpu profile's rows compare with the full profile's only if everything but the backbones
    # is the same (and its judges are then the same cached stages).
    full, cpu = load_profile("full"), load_profile("cpu")
    assert "cpu" in builtin_profiles()
    assert (cpu.data, cpu.judges, cpu.evaluate, cpu.seed) == (full.data, full.judges, full.evaluate, full.seed)
    assert cpu.methods["latent-shift"] == full.methods["latent-shift"]
    assert set(cpu.methods) < set(full.methods)


def test_full_profile_carries_the_cpu_recipes_at_no_smaller_size():
    # The full profile is the GPU-sized one: for every method the cpu profile sizes, it must keep the
    # options the cpu rows were fixed with (compose modes, loss terms, recipes) and be no smaller.
    full, cpu = load_profile("full"), load_profile("cpu")
    sizes = ("steps", "width", "widths", "blocks", "disc_width", "base_channels", "encoder_steps")
    for name, table in cpu.methods.items():
        big = full.methods[name]
        for key, value in table.items():
            if key in sizes:
                assert key in big, f"{name}.{key} missing from the full profile"
                lo, hi = (value, big[key]) if key != "widths" else (max(value), max(big[key]))
                assert hi >= lo, f"{name}.{key}: full {big[key]} < cpu {value}"
            elif key == "explain":
                for option in ("compose", "mask_source"):          # how the frames are composed
                    assert big["explain"].get(option) == value.get(option), f"{name}.explain.{option}"
            elif key not in ("batch_size", "n_critic", "critic_warmup", "snapshots", "lr", "map_lr",
                             "l1_weight", "layers_per_block", "attention", "disc_layers", "concepts"):
                assert big.get(key) == value, f"{name}.{key}: full {big.get(key)!r}, cpu {value!r}"
