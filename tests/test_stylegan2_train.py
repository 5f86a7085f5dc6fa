"""StyleGAN2-ADA training recipe: tiny 16 px models, a few steps each."""

from __future__ import annotations

import json
import math

import pytest
import torch
import typer
from PIL import Image
from torch.utils.data import Dataset
from typer.testing import CliRunner

from medcf.errors import DataError, MedcfError
from medcf.generators.stylegan2 import Discriminator, Generator
from medcf.io import load_torch_state
from medcf.train.stylegan2 import ada_adjust, ema_beta, lazy_adam, train_stylegan2


class Blobs(Dataset):
    """16 px grayscale images: a bright square whose side depends on the label (class a/b)."""

    channels, resolution = 1, 16

    def __init__(self, n: int = 24, labelled: bool = True):
        self.n, self.labelled = n, labelled
        self.class_names = ("a", "b") if labelled else ()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        x = torch.full((1, 16, 16), -1.0)
        side = 4 if i % 2 == 0 else 8
        x[:, 4:4 + side, 4:4 + side] = 1.0
        label = i % 2 if self.labelled else -1
        return {"image": x, "label": torch.tensor(label), "index": torch.tensor(i)}


TINY = dict(resolution=16, batch_size=4, z_dim=8, w_dim=8, mapping_layers=1, channel_base=128,
            channel_max=8, grid=(2, 2), progress=False, log_every=1)


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------- closed forms


def test_ada_adjust_closed_form():
    # one adjustment moves p by n_images / (ada_kimg * 1000), toward the target
    assert ada_adjust(0.0, 1.0, 0.6, 128, 100) == pytest.approx(0.00128)
    assert ada_adjust(0.5, 0.9, 0.6, 1000, 1) == pytest.approx(1.5)      # may exceed 1, as in ADA
    assert ada_adjust(0.5, 0.2, 0.6, 250, 1) == pytest.approx(0.25)
    assert ada_adjust(0.1, -1.0, 0.6, 1000, 1) == 0.0                   # clamped at 0


def test_ema_half_life_and_rampup():
    # after ema_kimg * 1000 images the old weights keep half their weight
    beta = ema_beta(10**6, 32, 10.0, None)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)
    assert ema_beta(0, 32, 10.0, 0.05) == 0.0                          # ramp-up: copy at step 0
    # ramp-up: at 100 steps x 32 images the half-life is 0.05 * 3200 = 160 images
    assert ema_beta(100, 32, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 160))


def test_lazy_regularisation_correction():
    opt = lazy_adam([torch.nn.Parameter(torch.zeros(1))], 0.0025, 16)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.0025 * 16 / 17)
    assert group["betas"][0] == 0.0 and group["betas"][1] == pytest.approx(0.99 ** (16 / 17))


# ----------------------------------------------------------------------------- training


def test_few_steps_finite_and_outputs_written(tmp_path):
    res = train_stylegan2(Blobs(), tmp_path / "run", steps=4, r1_every=2, pl_every=2,
                          sample_every=2, **TINY)
    lines = [json.loads(s) for s in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    for key in ("loss_G", "loss_D", "loss_pl", "loss_r1", "D_real", "D_fake"):
        values = [rec[key] for rec in lines if key in rec]
        assert values and all(math.isfinite(v) for v in values), key
    G = Generator.load(res.model_dir)
    x = G.sample(2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 16, 16) and torch.isfinite(x).all()
    assert Discriminator.load(tmp_path / "run" / "discriminator").c_dim == 0
    grid = Image.open(tmp_path / "run" / "samples" / "0000004.png")
    assert grid.size == (32, 32)                                          # 2 x 2 tiles of 16 px
    assert res.steps == 4 and res.kimg == pytest.approx(0.016)


def test_fid_snapshots_use_the_oracle_features(tmp_path):
    from medcf.classifiers import OracleClassifier, ResNetConfig

    cfg = ResNetConfig(resolution=16, widths=(4, 8), blocks=(1, 1), class_names=("a", "b"))
    OracleClassifier(cfg, seed=3).save(tmp_path / "oracle")
    res = train_stylegan2(Blobs(), tmp_path / "run", steps=2, fid_oracle=tmp_path / "oracle",
                          fid_every=1, fid_n=12, **TINY)
    assert res.fid["extractor"] == "domain:OracleClassifier"
    assert res.fid["n_real"] == res.fid["n_fake"] == 12 and res.fid["step"] == 2
    assert math.isfinite(res.fid["fid"]) and res.fid["fid"] >= 0
    fids = [json.loads(s) for s in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in fids if "fid" in rec] == [1, 2]
    # an oracle for other images is refused before training starts
    OracleClassifier(ResNetConfig(resolution=32, widths=(4,), blocks=(1,))).save(tmp_path / "o32")
    with pytest.raises(MedcfError, match="--fid-oracle does not accept"):
        train_stylegan2(Blobs(), tmp_path / "run2", steps=2, fid_oracle=tmp_path / "o32", **TINY)


def _force_real_logits(monkeypatch, sign: float):
    """Make every discriminator output sign * (|logit| + 1)."""
    forward = Discriminator.forward

    def forced(self, img, c=None, **kw):
        return sign * (forward(self, img, c, **kw).abs() + 1)

    monkeypatch.setattr(Discriminator, "forward", forced)


def test_ada_p_rises_when_d_is_confident_then_falls_to_zero_after_resume(tmp_path, monkeypatch):
    # batch 4, interval 2 -> each adjustment moves p by 8 / (0.08 * 1000) = 0.1
    kw = dict(TINY, ada_interval=2, ada_kimg=0.08, ada_target=0.6, pl_weight=0.0, r1_every=0)
    _force_real_logits(monkeypatch, +1.0)                 # r_t = 1 > 0.6: p rises
    res = train_stylegan2(Blobs(), tmp_path / "run", steps=8, **kw)
    assert res.augment_p == pytest.approx(0.4, abs=1e-6)  # 4 adjustments
    _force_real_logits(monkeypatch, -1.0)                 # r_t = -1 < 0.6: p falls, floored at 0
    res = train_stylegan2(Blobs(), tmp_path / "run", steps=14, resume=True, **kw)
    assert res.augment_p == pytest.approx(0.1, abs=1e-6)  # 0.4 - 3 x 0.1: p was resumed
    res = train_stylegan2(Blobs(), tmp_path / "run", steps=18, resume=True, **kw)
    assert res.augment_p == 0.0                           # 0.1 - 0.1, then stays at 0


def test_resume_continues_exactly(tmp_path, monkeypatch):
    _force_real_logits(monkeypatch, +1.0)                 # p > 0 so augmentation runs after resume
    kw = dict(TINY, cond=True, ada_interval=3, ada_kimg=0.05, r1_every=2, pl_every=3,
              checkpoint_every=5, sample_every=100)
    train_stylegan2(Blobs(), tmp_path / "full", steps=10, **kw)
    train_stylegan2(Blobs(), tmp_path / "split", steps=5, **kw)
    mid = load_torch_state(tmp_path / "split" / "train_state.pt")["extra"]
    assert mid["sign_count"] == 8                         # stopped mid ADA window (steps 4, 5)
    train_stylegan2(Blobs(), tmp_path / "split", steps=10, resume=True, **kw)
    full = load_torch_state(tmp_path / "full" / "train_state.pt")
    split = load_torch_state(tmp_path / "split" / "train_state.pt")
    assert full["extra"]["p"] == pytest.approx(3 * 12 / 50, abs=1e-6)  # 3 adjustments of 12 images
    # bit-identical: weights, G_ema, optimizer moments, ADA/PL state and the logged figures
    assert split["extra"] == full["extra"] and full["extra"]["pl_mean"] > 0
    for name in ("G", "D"):
        for k, v in full["models"][name].items():
            assert torch.equal(split["models"][name][k], v), (name, k)
        for i, st in full["optimizers"][name]["state"].items():
            for k in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(split["optimizers"][name]["state"][i][k], st[k]), (name, i, k)
    for k, v in full["ema"]["module"].items():
        assert torch.equal(split["ema"]["module"][k], v), k

    def lines(run):
        skip = ("img_per_s", "elapsed", "samples_png")  # timing; the split run's step-5 grid
        return [{k: v for k, v in json.loads(s).items() if k not in skip}
                for s in (tmp_path / run / "stats.jsonl").read_text().splitlines()]
    assert lines("split") == lines("full")


def test_conditional_refuses_unlabelled_data(tmp_path):
    with pytest.raises(DataError) as info:
        train_stylegan2(Blobs(labelled=False), tmp_path / "run", steps=2, cond=True, **TINY)
    message = str(info.value)
    assert "no labels" in message and "\n" not in message
    assert not (tmp_path / "run").exists()                # refused before anything was written


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(MedcfError, match="exactly one of steps= or kimg="):
        train_stylegan2(Blobs(), tmp_path / "a", steps=2, kimg=1.0, **TINY)
    with pytest.raises(MedcfError, match="aug"):
        train_stylegan2(Blobs(), tmp_path / "b", steps=2, aug="always", **TINY)
    with pytest.raises(DataError, match="expected resolution=32"):
        train_stylegan2(Blobs(), tmp_path / "c", steps=2, **{**TINY, "resolution": 32})


# ----------------------------------------------------------------------------- CLI


@pytest.fixture()
def cli():
    from medcf.cli.train_stylegan2 import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "stylegan2" a subcommand
    return app


def test_cli_help_has_an_example(cli):
    result = CliRunner().invoke(cli, ["stylegan2", "--help"])
    assert result.exit_code == 0 and "medcf train stylegan2 --data" in result.output


def test_cli_errors_are_medcf_errors(cli, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["stylegan2", "--data", str(tmp_path / "missing"), "--out",
                                 str(tmp_path / "run"), "--steps", "2"])
    assert isinstance(result.exception, DataError) and "--data not found" in str(result.exception)
    (tmp_path / "imgs").mkdir()
    result = runner.invoke(cli, ["stylegan2", "--data", str(tmp_path / "imgs"), "--out",
                                 str(tmp_path / "run")])
    assert isinstance(result.exception, MedcfError) and "--kimg or --steps" in str(result.exception)


def test_cli_cond_on_unlabelled_folder(cli, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray((torch.rand(16, 16) * 255).byte().numpy()).save(folder / f"{i}.png")
    result = CliRunner().invoke(cli, ["stylegan2", "--data", str(folder), "--out", str(tmp_path / "run"),
                                      "--resolution", "16", "--steps", "2", "--cond", "--no-progress"])
    assert isinstance(result.exception, DataError) and "no labels" in str(result.exception)


# ----------------------------------------------------------------------------- no per-step host reads


def test_steps_read_nothing_back_from_the_device_except_the_ada_policy(tmp_path, monkeypatch):
    # every device-to-host scalar read (.item(), float(t), int(t), tolist) is an aten
    # _local_scalar_dense call, a synchronisation on a GPU; count them per step of step_fn
    from torch.utils._python_dispatch import TorchDispatchMode

    from medcf.train import engine

    reads: dict[int, int] = {}

    class Count(TorchDispatchMode):
        step = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                reads[Count.step] = reads.get(Count.step, 0) + 1
            return func(*args, **(kwargs or {}))

    init = engine.Trainer.__init__

    def spied_init(self, *a, **k):
        step_fn = k["step_fn"]

        def counted(tr, batch):
            Count.step = tr.step
            with Count():
                return step_fn(tr, batch)

        init(self, *a, **{**k, "step_fn": counted})

    monkeypatch.setattr(engine.Trainer, "__init__", spied_init)
    _force_real_logits(monkeypatch, +1.0)                   # p > 0: augmentation runs
    train_stylegan2(Blobs(), tmp_path / "run", steps=8, r1_every=2, pl_every=2, ada_interval=4,
                    ada_kimg=0.05, **{**TINY, "log_every": 4})
    # style mixing, lazy R1 and PL, augmentation, figures: no reads; the ADA policy
    # reads its sign sum once at the end of each 4-step interval (steps 3 and 7)
    assert reads == {3: 1, 7: 1}
