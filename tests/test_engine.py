"""Tests for the shared training engine (medcf.train.engine, sampler, ema, rng)."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from medcf.errors import CheckpointError, MedcfError
from medcf.io import SavableModule, read_header
from medcf.train import EMA, Hook, TrainConfig, Trainer
from medcf.train.rng import capture_rng_state, restore_rng_state
from medcf.train.sampler import ResumableBatchSampler

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


# ----------------------------------------------------------------------------- tiny fixtures


@dataclass(frozen=True)
class ScalarConfig:
    init: float = 0.0


class Scalar(SavableModule):
    """One parameter ``w``; the model's output is irrelevant to these tests."""

    kind = "test-scalar"
    config_class = ScalarConfig

    def __init__(self, config: ScalarConfig):
        super().__init__(config)
        self.w = nn.Parameter(torch.tensor([config.init]))

    def forward(self, x):  # [B, ...] -> [B, 1]
        return self.w * x.flatten(1).mean(1, keepdim=True)


class IndexData(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": torch.full((1, 2, 2), float(i)), "label": torch.tensor(i % 2),
                "index": torch.tensor(i)}


def make_trainer(out, *, steps=10, batch_size=4, n=12, step_fn=None, hooks=(), **cfg):
    net = Scalar(ScalarConfig(init=0.0))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def default_step(tr, batch):
        loss = (tr.models["model"](batch["image"]) - 1.0).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        tr.backward(loss)
        tr.optimizers["model"].step()
        return {"loss": loss.item()}

    config = TrainConfig(out_dir=str(out), steps=steps, batch_size=batch_size, progress=False,
                         **cfg)
    return Trainer(config, models={"model": net}, optimizers={"model": opt},
                   dataset=IndexData(n), step_fn=step_fn or default_step, hooks=hooks,
                   run_info={"recipe": "test"})


# ----------------------------------------------------------------------------- sampler


def test_sampler_stream_is_concatenated_epoch_permutations():
    n, b = 10, 4
    s = ResumableBatchSampler(n, b, seed=5)
    it = iter(s)
    stream = [i for _ in range(10) for i in next(it)]  # 40 items = 4 epochs
    for e in range(4):  # every epoch is a permutation of range(n), batches cross boundaries
        assert sorted(stream[e * n:(e + 1) * n]) == list(range(n))
    assert stream[:n] != stream[n:2 * n]  # a fresh order per epoch
    # resuming at batch k yields exactly the rest of the stream
    rest = iter(ResumableBatchSampler(n, b, seed=5, start_batch=3))
    assert [i for _ in range(7) for i in next(rest)] == stream[12:]
    assert s.position(3) == {"epoch": 1, "offset": 2, "batches": 3}
    assert s.global_batch(2).tolist() == stream[8:12]


def test_sampler_ranks_shard_the_global_batch():
    full = iter(ResumableBatchSampler(13, 6, seed=1))
    shards = [iter(ResumableBatchSampler(13, 6, seed=1, rank=r, world_size=3)) for r in range(3)]
    for _ in range(5):
        parts = [next(s) for s in shards]
        assert all(len(p) == 2 for p in parts)
        assert sum(parts, []) == next(full)
    with pytest.raises(MedcfError, match="multiple"):
        ResumableBatchSampler(13, 5, world_size=2)


# ----------------------------------------------------------------------------- EMA and RNG


def test_ema_matches_closed_form():
    net = Scalar(ScalarConfig(init=2.0))
    ema = EMA(net, decay=0.75)
    values = [4.0, 8.0, 0.0]
    for v in values:
        with torch.no_grad():
            net.w.fill_(v)
        ema.update(net)
    # e0 = 2; e_k = 0.75 e_{k-1} + 0.25 v_k  ->  2 -> 2.5 -> 3.875 -> 2.90625
    assert ema.module.w.item() == pytest.approx(2.90625)
    assert not ema.module.w.requires_grad
    assert net.w.item() == 0.0  # the live model is untouched
    with pytest.raises(MedcfError, match="ema_decay"):
        EMA(net, decay=1.0)


def test_ema_foreach_update_is_bit_identical_to_the_per_parameter_loop():
    # random weights and decays that change per step (as the StyleGAN2 ramp-up does);
    # a half-precision parameter and a batch-norm buffer take the other paths
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(4, 5))
    net[2].half()
    ema = EMA(net, decay=0.9)
    reference = {k: v.clone() for k, v in ema.module.state_dict().items()}
    for step, decay in enumerate((0.0, 0.3, 0.91, 0.999, 0.5)):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net[1].running_mean.add_(1.0)
            net[1].num_batches_tracked.add_(1)
        ema.decay = decay
        ema.update(net)
        for name, p in net.named_parameters():  # the loop EMA.update replaced
            reference[name].lerp_(p.detach(), 1.0 - decay)
        for name, b in net.named_buffers():
            reference[name].copy_(b)
        got = ema.module.state_dict()
        for k, v in reference.items():
            assert got[k].dtype == v.dtype and torch.equal(got[k], v), (step, k)
    assert ema.num_updates == 5 and int(got["1.num_batches_tracked"]) == 5
    # a parameter replaced by a new object is still tracked (the cached lists are rebuilt)
    net[0].bias = nn.Parameter(torch.full((8,), 4.0))
    before = ema.module[0].bias.clone()
    ema.decay = 0.75
    ema.update(net)
    assert torch.equal(ema.module[0].bias, before.lerp(torch.full((8,), 4.0), 0.25))


def test_rng_state_survives_weights_only_roundtrip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leave numpy with a cached gaussian
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.randn(3), [random.random() for _ in range(3)])
    torch.save(state, tmp_path / "rng.pt")
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.randn(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


# ----------------------------------------------------------------------------- config validation


@pytest.mark.parametrize("kwargs, field", [
    ({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size"),
    ({"mixed_precision": "fp8"}, "mixed_precision"), ({"log_every": 0}, "log_every"),
    ({"checkpoint_every": -1}, "checkpoint_every"), ({"ema_decay": 1.5}, "ema_decay"),
])
def test_trainconfig_rejects_bad_values(kwargs, field):
    base = {"out_dir": "x", "steps": 5}
    with pytest.raises(MedcfError, match=f"TrainConfig.{field}") as e:
        TrainConfig(**{**base, **kwargs})
    assert "\n" not in str(e.value)


def test_trainer_rejects_unsavable_export_and_unknown_export(tmp_path):
    lin = nn.Linear(2, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    cfg = TrainConfig(out_dir=str(tmp_path / "r"), steps=1)
    with pytest.raises(MedcfError, match="SavableModule"):
        Trainer(cfg, models={"model": lin}, optimizers={"model": opt}, dataset=IndexData(4),
                step_fn=lambda tr, b: {})
    with pytest.raises(MedcfError, match="export='gen'"):
        Trainer(cfg, models={"model": lin}, optimizers={"model": opt}, dataset=IndexData(4),
                step_fn=lambda tr, b: {}, export="gen")


# ----------------------------------------------------------------------------- a full run


def test_stats_average_each_key_over_the_steps_that_returned_it(tmp_path):
    """A loss returned only on even steps (lazy regularisers) is averaged over those steps."""

    def step_fn(tr, batch):
        out = {"loss": float(tr.step)}
        if tr.step % 2 == 0:
            out["reg"] = float(tr.step)
        return out

    run = tmp_path / "run"
    make_trainer(run, steps=6, batch_size=4, n=12, step_fn=step_fn, log_every=6,
                 checkpoint_every=0).fit()
    line = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()][-1]
    assert line["loss"] == pytest.approx((0 + 1 + 2 + 3 + 4 + 5) / 6)
    assert line["reg"] == pytest.approx((0 + 2 + 4) / 3)


def test_fit_writes_run_layout_stats_hooks_and_ema(tmp_path):
    """step_fn sets w := step+1 and reports loss := step, so every logged number is known."""
    seen = []

    def step_fn(tr, batch):
        seen.append(batch["index"].tolist())
        with torch.no_grad():
            tr.unwrap("model").w.fill_(tr.step + 1)
        return {"loss": float(tr.step)}

    hooks = [Hook(every=4, fn=lambda tr: {"hook_step": tr.step, "note": "hi"})]
    run = tmp_path / "run"
    tr = make_trainer(run, steps=10, batch_size=4, n=12, step_fn=step_fn, hooks=hooks,
                      log_every=5, checkpoint_every=3, ema_decay=0.5, seed=11)
    model_dir = tr.fit()
    assert model_dir == run / "model"

    # data: 10 batches of 4 from n=12 -> epochs [0..3), [3..6), [6..9), then 1 batch of epoch 3
    for e in range(3):
        assert sorted(sum(seen[3 * e:3 * e + 3], [])) == list(range(12))

    # stats: loss averaged over each interval of 5 steps (tr.step = 0..4 and 5..9)
    lines = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    by_step = {}
    for line in lines:
        by_step.setdefault(line["step"], {}).update(line)
    assert by_step[5]["loss"] == pytest.approx(2.0)
    assert by_step[10]["loss"] == pytest.approx(7.0)
    assert by_step[10]["lr"] == pytest.approx(0.1)
    assert by_step[5]["img_per_s"] > 0 and by_step[10]["elapsed"] >= by_step[5]["elapsed"]
    assert by_step[4]["hook_step"] == 4 and by_step[8]["note"] == "hi"
    assert by_step[10]["hook_step"] == 10  # at_end

    # exported model = EMA: e_k = 0.5 e_{k-1} + 0.5 k, e_0 = 0  ->  closed form below
    ema = sum(0.5 ** (10 - k) * 0.5 * k for k in range(1, 11))
    header = read_header(run)
    assert header["meta"]["steps"] == 10 and header["kind"] == "test-scalar"
    assert Scalar.load(run).w.item() == pytest.approx(ema)
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert state["step"] == 10 and state["models"]["model"]["w"].item() == 10.0
    assert state["sampler"] == {"epoch": 3, "offset": 4, "batches": 10}
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["steps"] == 10 and info["run_info"] == {"recipe": "test"}


def test_tensor_stats_log_exactly_like_floats_including_across_a_resume(tmp_path):
    """A step_fn may return 0-dim tensors (summed on the device, read every log_every steps):
    stats.jsonl equals the one of the same step_fn returning floats, resumed mid-interval too."""

    def step_fn_of(as_tensor, crash_at=None):
        def step_fn(tr, batch):
            if tr.step == crash_at:
                raise KeyboardInterrupt  # a kill after the checkpoint at step 6
            loss = (tr.models["model"](batch["image"]) - 1.0).pow(2).mean()
            tr.optimizers["model"].zero_grad(set_to_none=True)
            tr.backward(loss)
            tr.optimizers["model"].step()
            out = {"loss": loss.detach(), "third": loss.detach() / 3}
            if tr.step % 2:
                out["odd"] = torch.tensor(float(tr.step), dtype=torch.float32)  # logged on some steps
            return out if as_tensor else {k: v.item() for k, v in out.items()}
        return step_fn

    def records(run):
        return [{k: v for k, v in json.loads(s).items() if k not in ("img_per_s", "elapsed")}
                for s in (run / "stats.jsonl").read_text().splitlines()]

    make_trainer(tmp_path / "f", steps=9, log_every=4, step_fn=step_fn_of(False)).fit()
    make_trainer(tmp_path / "t", steps=9, log_every=4, step_fn=step_fn_of(True)).fit()
    floats, tensors = records(tmp_path / "f"), records(tmp_path / "t")
    assert [r["step"] for r in floats] == [4, 8, 9] and "odd" in floats[0]
    assert tensors == floats                                   # exact, not approximately
    # killed after the checkpoint at step 6 (mid interval 5..8), resumed: the interval's sums
    # were saved as plain floats and the step-8 line still covers steps 5..8
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "r", steps=9, log_every=4, checkpoint_every=6,
                     step_fn=step_fn_of(True, crash_at=6)).fit()
    saved = torch.load(tmp_path / "r" / "train_state.pt", weights_only=True)["log"]
    assert all(type(v) is float for v in saved["sums"].values()) and saved["steps"] == 2
    make_trainer(tmp_path / "r", steps=9, log_every=4, checkpoint_every=6,
                 step_fn=step_fn_of(True)).fit(resume=True)
    assert records(tmp_path / "r") == floats


def test_fit_refuses_existing_run_and_resume_without_state(tmp_path):
    run = tmp_path / "run"
    make_trainer(run, steps=2).fit()
    before = (run / "model" / "model.safetensors").read_bytes()
    with pytest.raises(MedcfError, match="already holds a training run") as e:
        make_trainer(run, steps=2).fit(resume=False)
    assert "\n" not in str(e.value)
    assert (run / "model" / "model.safetensors").read_bytes() == before
    with pytest.raises(CheckpointError, match="no training state to resume") as e:
        make_trainer(tmp_path / "empty", steps=2).fit(resume=True)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="batch_size=4"):
        make_trainer(run, steps=4, batch_size=2).fit(resume=True)


def test_resume_extends_a_finished_run_like_one_long_run(tmp_path):
    """10 steps, then resume to 20, equals 20 straight steps (Adam state, RNG via dropout)."""

    def run(out, steps, resume):
        torch.manual_seed(0)
        net = Scalar(ScalarConfig(init=0.5))
        opt = torch.optim.Adam(net.parameters(), lr=0.05)

        def step_fn(tr, batch):
            x = F.dropout(batch["image"], 0.5)  # global torch RNG
            noise = torch.randn(1, generator=tr.generator, device=tr.device)
            loss = (tr.models["model"](x) - noise).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            tr.backward(loss)
            opt.step()
            return {"loss": loss.item()}

        cfg = TrainConfig(out_dir=str(out), steps=steps, batch_size=3, checkpoint_every=4,
                          log_every=1, ema_decay=0.9, progress=False)
        tr = Trainer(cfg, models={"model": net}, optimizers={"model": opt},
                     dataset=IndexData(7), step_fn=step_fn)
        tr.fit(resume=resume)
        return torch.load(out / "train_state.pt", weights_only=True)

    straight = run(tmp_path / "a", 20, False)
    run(tmp_path / "b", 10, False)
    with (tmp_path / "b" / "stats.jsonl").open("a") as f:  # as if killed mid-write
        f.write('{"step": 11, "lo')
    (tmp_path / "b" / ".train_state.pt.abc.tmp").write_bytes(b"partial")
    resumed = run(tmp_path / "b", 20, True)
    lines = [json.loads(x) for x in (tmp_path / "b" / "stats.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 21))  # log_every=1: one line per step
    assert not (tmp_path / "b" / ".train_state.pt.abc.tmp").exists()
    assert resumed["step"] == 20
    assert torch.equal(straight["models"]["model"]["w"], resumed["models"]["model"]["w"])
    assert torch.equal(straight["ema"]["module"]["w"], resumed["ema"]["module"]["w"])
    assert straight["models"]["model"]["w"].item() != 0.5  # it trained
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["resumed"][0]["step"] == 10


def test_bf16_on_cpu_falls_back_with_a_warning(tmp_path, caplog):
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    with caplog.at_level(logging.WARNING, logger="medcf.train.engine"):
        tr = make_trainer(tmp_path / "r", steps=2, mixed_precision="bf16")
    assert tr.accelerator.mixed_precision == "no"
    assert "needs a GPU" in caplog.text
    tr.fit()
    assert (tmp_path / "r" / "model" / "model.safetensors").is_file()


def test_tensorboard_events_and_missing_package_error(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    hook = Hook(every=2, fn=lambda tr: {"grid": torch.zeros(2, 1, 4, 4), "acc": 0.5})
    make_trainer(tmp_path / "tb", steps=2, tensorboard=True, log_every=1, hooks=[hook]).fit()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb" / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2]
    assert [e.value for e in events.Scalars("acc")] == [0.5]
    assert "grid" in events.Tags()["images"]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    with pytest.raises(MedcfError, match="needs the 'tensorboard' package"):
        make_trainer(tmp_path / "tb2", steps=1, tensorboard=True)
    assert not (tmp_path / "tb2").exists()  # refused before writing anything


# ----------------------------------------------------------------------------- subprocess tests


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def _worker(*args, check=True):
    proc = subprocess.run([PY, str(ROOT / "tests" / "_resume_worker.py"), *map(str, args)],
                          env=_env(), capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _final(run: Path):
    state = torch.load(run / "train_state.pt", weights_only=True)
    steps = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    losses = [(s["step"], s.get("loss"), s.get("extra_total")) for s in steps]
    return load_file(str(run / "model" / "model.safetensors")), state, losses


@pytest.mark.slow
def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path):
    """One run killed twice: right after a checkpoint, then between checkpoints (mid-step)."""
    _worker(tmp_path / "base")
    base_weights, base_state, base_losses = _final(tmp_path / "base")
    run = tmp_path / "killed"
    segments = [  # (extra args, step of the last checkpoint when SIGKILL lands); ckpt every 5
        (["--kill-at", 10, "--kill-mode", "start"], 10),  # before step 11 starts
        (["--resume", "--kill-at", 17, "--kill-mode", "mid", "--workers", 2], 15),  # in step 18
    ]
    for args, saved_step in segments:
        proc = _worker(run, *args, check=False)
        assert proc.returncode == -9, proc.stderr[-2000:]  # died by SIGKILL
        assert torch.load(run / "train_state.pt", weights_only=True)["step"] == saved_step
        with pytest.raises(MedcfError, match="already holds"):
            make_trainer(run, steps=24, batch_size=8).fit()
    _worker(run, "--resume")
    weights, state, losses = _final(run)
    assert state["step"] == 24
    for k in base_weights:  # exported EMA weights
        torch.testing.assert_close(weights[k], base_weights[k], rtol=1e-6, atol=1e-7)
    for k, v in base_state["models"]["model"].items():  # raw weights
        torch.testing.assert_close(state["models"]["model"][k], v, rtol=1e-6, atol=1e-7)
    assert state["extra"]["total"] == pytest.approx(base_state["extra"]["total"], rel=1e-6)
    assert [s for s, _, _ in losses] == [s for s, _, _ in base_losses]  # no duplicate lines
    for got, want in zip(losses, base_losses, strict=True):  # same logged losses
        assert [x is None for x in got] == [x is None for x in want]
        assert [x for x in got if x is not None] == pytest.approx(
            [x for x in want if x is not None], rel=1e-6)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_global_batch(tmp_path):
    """torchrun with 2 gloo processes x 4 samples == 1 process x 8 samples, across a resume."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import _ddp_worker
    finally:
        sys.path.remove(str(ROOT / "tests"))
    _ddp_worker.main([str(tmp_path / "one")])  # the single-process reference, in this process
    ddp = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                          "2", str(ROOT / "tests" / "_ddp_worker.py"), str(tmp_path / "two"),
                          "--split", "2"],  # 2 steps, then a distributed resume to 3
                         env=_env(), capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = torch.load(tmp_path / "one" / "grads_rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / "two" / f"grads_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert one["world_size"] == 1 and all(r["world_size"] == 2 for r in ranks)
    for step in range(3):
        # each rank saw its half of the single process's batch
        halves = torch.cat([ranks[0]["indices"][step], ranks[1]["indices"][step]])
        assert halves.tolist() == one["indices"][step].tolist()
        for name, g in one["grads"][step].items():  # all-reduced mean == full-batch gradient
            for r in ranks:
                torch.testing.assert_close(r["grads"][step][name], g, rtol=1e-5, atol=1e-6)
    w1 = load_file(str(tmp_path / "one" / "run" / "model" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "run" / "model" / "model.safetensors"))
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6)
    state = torch.load(tmp_path / "two" / "run" / "train_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2  # one RNG state per rank
    info = json.loads((tmp_path / "two" / "run" / "run.json").read_text())
    assert info["resumed"][0]["step"] == 2 and info["world_size"] == 2


def test_hook_eval_mode_is_undone_and_hooks_see_the_step(tmp_path):
    modes, hook_steps = [], []

    def step_fn(tr, batch):
        modes.append(tr.models["model"].training)
        return {}

    def hook(tr):
        hook_steps.append(tr.step)
        tr.unwrap("model").eval()

    make_trainer(tmp_path / "r", steps=5, step_fn=step_fn,
                 hooks=[Hook(every=2, fn=hook, at_end=False)]).fit()
    assert modes == [True] * 5
    assert hook_steps == [2, 4]  # at_end=False: no extra call at step 5


def test_engine_tolerates_an_accelerator_state_with_other_settings(tmp_path):
    """Another library (or an earlier run) initialised accelerate with bf16 in this process."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # earlier tests initialised it with "no"
    Accelerator(mixed_precision="bf16", cpu=not torch.cuda.is_available())
    tr = make_trainer(tmp_path / "r", steps=2)
    tr.fit()
    assert tr.accelerator.mixed_precision == "no"
    assert read_header(tmp_path / "r")["meta"]["steps"] == 2


def test_resume_recovers_model_dir_from_an_interrupted_swap(tmp_path):
    """A kill between atomic_write_dir's two renames leaves only .model.*.old; resume restores it."""
    run = tmp_path / "run"
    make_trainer(run, steps=3).fit()
    weights = (run / "model" / "model.safetensors").read_bytes()
    os.replace(run / "model", run / ".model.x1.old")
    (run / ".model.x2.tmp").mkdir()  # the half-filled new copy
    assert make_trainer(run, steps=3).fit(resume=True) == run / "model"
    assert (run / "model" / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in run.iterdir()) == ["model", "run.json", "stats.jsonl",
                                                    "train_state.pt"]
