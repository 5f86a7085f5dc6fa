"""Domain-FID snapshots during training (medcf.train.fid_snapshots) in the GAN, diffusion, CycleGAN
and ICAM recipes: tiny 16-32 px models, a few steps, an untrained tiny oracle (the checks are about
which images are compared, when, and what survives a resume, not about image quality)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import Dataset

from _cli import run_cli
from medcf.classifiers import OracleClassifier, ResNetConfig
from medcf.errors import MedcfError
from medcf.eval.fid import FID
from medcf.io import read_header
from medcf.train.fid_snapshots import last_logged_fid, spread_indices


def _oracle(path, resolution: int):
    cfg = ResNetConfig(resolution=resolution, widths=(4, 8), blocks=(1, 1), class_names=("normal", "abnormal"))
    OracleClassifier(cfg, seed=3).save(path)
    return path


def _fid_records(run_dir) -> list[dict]:
    lines = (run_dir / "stats.jsonl").read_text().splitlines()
    return [rec for rec in map(json.loads, lines) if "fid" in rec]


class Squares(Dataset):
    """16 px: a bright square whose side depends on the label (0: 4 px, 1: 8 px), a little noise."""

    class_names = ("normal", "abnormal")

    def __init__(self, n: int = 16):
        g = torch.Generator().manual_seed(0)
        self.labels = [i % 2 for i in range(n)]
        self.x = torch.full((n, 1, 16, 16), -1.0) + 0.1 * torch.rand(n, 1, 16, 16, generator=g)
        for i, y in enumerate(self.labels):
            side = 8 if y else 4
            self.x[i, :, 4:4 + side, 4:4 + side] = 1.0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": torch.tensor(self.labels[i])}


def _synth(n: int = 12, resolution: int = 32):
    from medcf.data.synthetic import SynthConfig, SyntheticDataset

    return SyntheticDataset(SynthConfig(resolution=resolution), n=n, seed=0)


def test_spread_indices_and_the_stats_reader(tmp_path):
    assert spread_indices(10, 4) == [0, 3, 6, 9]
    assert spread_indices(3, 10) == [0, 1, 2] and spread_indices(0, 5) == []
    assert last_logged_fid(tmp_path) is None                       # no stats.jsonl
    (tmp_path / "stats.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "fid": 3.5, '
                                          '"fid_extractor": "domain:X", "fid_n_real": 4, "fid_n_fake": 4}\n'
                                          '{"step": 3, "loss": 0.4}\n{"torn line')
    assert last_logged_fid(tmp_path) == {"fid": 3.5, "extractor": "domain:X", "n_real": 4, "n_fake": 4,
                                         "step": 2}


# ----------------------------------------------------------------------------- diffusion


def test_diffusion_snapshots_are_logged_kept_in_meta_and_survive_resume(tmp_path):
    from medcf.train.diffusion import train_diffusion

    oracle = _oracle(tmp_path / "oracle", 16)
    kw = dict(resolution=16, batch_size=4, widths=(8, 16), layers_per_block=1, attention=False, ema_decay=0.9,
              sample_every=0, grid=(0, 0), checkpoint_every=2, progress=False, cond=True, fid_oracle=oracle,
              fid_every=2, fid_n=6, fid_sample_steps=2)
    straight = train_diffusion(Squares(), tmp_path / "a", steps=4, **kw)
    recs = _fid_records(tmp_path / "a")
    assert [r["step"] for r in recs] == [2, 4]
    assert all(math.isfinite(r["fid"]) and r["fid"] >= 0 and r["fid_extractor"] == "domain:OracleClassifier"
               and r["fid_n_real"] == r["fid_n_fake"] == 6 for r in recs)
    assert straight.fid["step"] == 4 and straight.fid["fid"] == recs[-1]["fid"]
    assert read_header(tmp_path / "a" / "model")["meta"]["fid"] == straight.fid
    # interrupted after step 2, resumed: the same snapshots (the resume is bit-identical)
    train_diffusion(Squares(), tmp_path / "b", steps=2, **kw)
    resumed = train_diffusion(Squares(), tmp_path / "b", steps=4, resume=True, **kw)
    assert [(r["step"], r["fid"]) for r in _fid_records(tmp_path / "b")] == [(r["step"], r["fid"]) for r in recs]
    assert resumed.fid == straight.fid
    # a resume with nothing left to train still reports (and keeps) the last snapshot
    again = train_diffusion(Squares(), tmp_path / "b", steps=4, resume=True, **kw)
    assert again.fid["fid"] == straight.fid["fid"] and again.fid["step"] == 4
    assert read_header(tmp_path / "b" / "model")["meta"]["fid"]["fid"] == straight.fid["fid"]


def test_without_an_oracle_nothing_is_computed(tmp_path):
    from medcf.train.diffusion import train_diffusion

    res = train_diffusion(Squares(), tmp_path / "run", resolution=16, steps=1, batch_size=4, widths=(8, 16),
                          layers_per_block=1, attention=False, sample_every=0, grid=(0, 0), progress=False)
    assert res.fid is None and _fid_records(tmp_path / "run") == []
    assert "fid" not in read_header(tmp_path / "run" / "model")["meta"]


# ----------------------------------------------------------------------------- translation backbones


def test_cyclegan_snapshot_is_the_fid_of_g_ab_of_a_against_real_b(tmp_path):
    from medcf.generators.cyclegan import CycleGAN
    from medcf.train.cyclegan import train_cyclegan

    ds, oracle = _synth(12), _oracle(tmp_path / "oracle", 32)
    kw = dict(batch_size=4, width=4, blocks=1, disc_width=4, disc_layers=2, pool_size=3, progress=False,
              sample_every=0, checkpoint_every=2, fid_oracle=oracle, fid_n=100)   # fid_n > class sizes: all
    res = train_cyclegan(ds, tmp_path / "full", steps=4, **kw)
    assert [r["step"] for r in _fid_records(tmp_path / "full")] == [4]           # fid_every 0: at the end
    # recomputed independently from the saved model: every A image translated vs every real B image
    model = CycleGAN.load(res.model_dir).eval()
    labels = [int(ds[i]["label"]) for i in range(len(ds))]
    x_a = torch.stack([ds[i]["image"] for i, y in enumerate(labels) if y == 0])
    x_b = torch.stack([ds[i]["image"] for i, y in enumerate(labels) if y == 1])
    fid = FID(OracleClassifier.load(oracle))
    fid.update(x_b, real=True)
    with torch.no_grad():
        fid.update(model.g_ab(x_a), real=False)
    assert res.fid["fid"] == pytest.approx(fid.compute().fid, rel=1e-4, abs=1e-6)
    assert (res.fid["n_real"], res.fid["n_fake"]) == (len(x_b), len(x_a))
    assert read_header(res.model_dir)["meta"]["fid"] == res.fid
    train_cyclegan(ds, tmp_path / "part", steps=2, **kw)
    resumed = train_cyclegan(ds, tmp_path / "part", steps=4, resume=True, **kw)
    assert resumed.fid["step"] == 4 and resumed.fid["fid"] == pytest.approx(res.fid["fid"], rel=1e-3, abs=1e-6)
    # the snapshots only read the model: training without them ends with the same weights
    plain = train_cyclegan(ds, tmp_path / "plain", steps=4, **{**kw, "fid_oracle": None})
    assert plain.fid is None and "fid" not in read_header(plain.model_dir)["meta"]
    for (name, p), q in zip(model.state_dict().items(), CycleGAN.load(plain.model_dir).state_dict().values(),
                            strict=True):
        assert torch.equal(p, q), name


def test_icam_snapshots_every_k_steps_and_in_meta(tmp_path):
    from medcf.train.icam import train_icam

    res = train_icam(_synth(12), tmp_path / "run", steps=4, batch_size=4, width=4, blocks=1, attr_dim=4,
                     attr_width=4, disc_width=4, disc_layers=2, progress=False, sample_every=0,
                     checkpoint_every=0, fid_oracle=_oracle(tmp_path / "oracle", 32), fid_every=2, fid_n=4)
    recs = _fid_records(tmp_path / "run")
    assert [r["step"] for r in recs] == [2, 4] and all(math.isfinite(r["fid"]) for r in recs)
    assert all(r["fid_n_real"] == r["fid_n_fake"] == 4 for r in recs)
    meta = read_header(res.model_dir)["meta"]
    assert meta["fid"] == res.fid and res.fid["step"] == 4 and "val" in meta    # beside ICAM's own figures


# ----------------------------------------------------------------------------- GAN (now on the shared hook)


def test_gan_snapshots_on_the_shared_hook(tmp_path):
    from medcf.train.gan import train_gan

    res = train_gan(Squares(), tmp_path / "run", steps=2, n_critic=2, batch_size=4, z_dim=8, base_channels=4,
                    max_channels=8, fid_oracle=_oracle(tmp_path / "oracle", 16), fid_every=2, fid_n=8,
                    progress=False, sample_every=0)
    assert [r["step"] for r in _fid_records(tmp_path / "run")] == [2, 4]          # engine steps
    assert res.fid["n_real"] == res.fid["n_fake"] == 8 and math.isfinite(res.fid["fid"])
    assert read_header(res.model_dir)["meta"]["fid"] == res.fid


# ----------------------------------------------------------------------------- CLI


def test_cli_flags_and_bad_oracles_are_one_line_errors(capsys, tmp_path):
    from medcf.data import write_synthetic
    from medcf.data.synthetic import SynthConfig

    data = tmp_path / "data"
    write_synthetic(SynthConfig(resolution=32), 16, data, progress=False)
    tiny_icam = ["--steps", "2", "--batch-size", "2", "--width", "4", "--blocks", "1", "--attr-dim", "4",
                 "--disc-width", "4", "--disc-layers", "2", "--no-progress", "--sample-every", "0"]
    code, out, err = run_cli(capsys, "train", "icam", "--data", data, "--out", tmp_path / "icam", *tiny_icam,
                             "--fid-oracle", _oracle(tmp_path / "oracle", 32), "--fid-n", "3")
    assert code == 0, err
    assert "FID A->B" in out and "domain:OracleClassifier" in out
    cases = [
        ("cyclegan", tmp_path / "missing", "--fid-oracle not found"),
        ("icam", data, "--fid-oracle"),                                  # a data folder, not a classifier
        ("diffusion", _oracle(tmp_path / "o16", 16), "--fid-oracle does not accept"),   # 16 px vs 32 px data
    ]
    for command, oracle, words in cases:
        extra = ["--resolution", "32", "--widths", "8,16", "--no-attention", "--steps", "1", "--no-progress"] \
            if command == "diffusion" else ["--steps", "1", "--no-progress"]
        code, out, err = run_cli(capsys, "train", command, "--data", data, "--out", tmp_path / f"bad-{command}",
                                 "--fid-oracle", oracle, *extra)
        assert code == 2, (command, out, err)
        assert words in err and len(err.strip().splitlines()) == 1, (command, err)
        assert not (tmp_path / f"bad-{command}" / "train_state.pt").exists()   # refused before training
    code, _, err = run_cli(capsys, "train", "cyclegan", "--data", data, "--out", tmp_path / "neg", "--steps", "1",
                           "--fid-oracle", tmp_path / "oracle", "--fid-n", "1", "--no-progress")
    assert code == 2 and "--fid-n" in err


def test_bad_settings_raise_before_training(tmp_path):
    from medcf.train.cyclegan import train_cyclegan

    with pytest.raises(MedcfError, match="--fid-every"):
        train_cyclegan(_synth(8), tmp_path / "run", steps=1, width=4, blocks=1, disc_width=4, disc_layers=2,
                       progress=False, fid_oracle=_oracle(tmp_path / "oracle", 32), fid_every=-1)
    assert not (tmp_path / "run" / "train_state.pt").exists()
