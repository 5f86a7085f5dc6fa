"""The synthetic chest-radiograph benchmark: ground truth consistency, determinism, writer, CLI."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from medcf.cli import main as cli_main
from medcf.data.synthetic import (
    CLASS_NAMES,
    FO_NAMES,
    NUISANCE_NAMES,
    SynthConfig,
    SyntheticDataset,
    render_sample,
)
from medcf.data.synthetic_writer import save_sample_grid, write_synthetic
from medcf.errors import DataError

# no pose, blur or noise: pixel-exact comparisons between renders
CLEAN = dict(rotation_range=(0.0, 0.0), shift_range=(0.0, 0.0), noise_range=(0.0, 0.0),
             blur_range=(0.0, 0.0))


def test_sample_dict_contract_and_range():
    for res in (32, 128):
        ds = SyntheticDataset(SynthConfig(task="opacity", resolution=res), n=3, seed=0)
        assert ds.channels == 1 and ds.resolution == res and ds.class_names == ("clear", "opacity")
        s = ds[1]
        shapes = {"image": (1, res, res), "label": (), "index": (), "ctr": (), "heart_mask": (1, res, res),
                  "lesion": (), "lesion_mask": (1, res, res), "fo_flags": (3,), "fo_masks": (3, res, res),
                  "spurious": (), "nuisance": (len(NUISANCE_NAMES),), "blunted": (),
                  "effusion_mask": (1, res, res)}
        assert set(s) == set(shapes)
        for key, shape in shapes.items():
            assert tuple(s[key].shape) == shape, key
            want = torch.int64 if key in ("label", "index") else torch.float32
            assert s[key].dtype == want, key
        assert s["image"].min() >= -1.0 and s["image"].max() <= 1.0
        assert s["image"].std() > 0.1  # not a blank image
        for key in ("heart_mask", "lesion_mask", "fo_masks", "effusion_mask"):
            assert set(torch.unique(s[key]).tolist()) <= {0.0, 1.0}
        assert int(s["index"]) == 1


def test_deterministic_per_seed_and_index_in_any_order():
    cfg = SynthConfig(resolution=32, pacemaker_rate=0.5, electrodes_rate=0.5)
    ds = SyntheticDataset(cfg, n=6, seed=3)
    forward = [ds[i] for i in range(6)]
    backward = [ds[i] for i in reversed(range(6))][::-1]
    shifted = SyntheticDataset(cfg, n=3, seed=3, offset=3)
    for a, b in zip(forward, backward, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    for i in range(3):
        assert torch.equal(shifted[i]["image"], forward[3 + i]["image"])
        assert int(shifted[i]["index"]) == 3 + i
    other = SyntheticDataset(cfg, n=1, seed=4)[0]
    assert not torch.equal(other["image"], forward[0]["image"])
    with pytest.raises(IndexError):
        ds[6]


def test_cardiomegaly_label_is_exactly_ctr_above_half():
    cfg = SynthConfig(resolution=32)
    samples = [render_sample(cfg, 0, i) for i in range(300)]
    labels = np.array([s.label for s in samples])
    ctr = np.array([s.ctr for s in samples], np.float32)
    assert np.array_equal(labels, (ctr > 0.5).astype(int))
    assert np.all(np.abs(ctr - 0.5) >= cfg.ctr_gap - 1e-6)  # documented gap around the threshold
    assert 0.4 < labels.mean() < 0.6
    assert ctr.min() >= cfg.ctr_range[0] - 1e-6 and ctr.max() <= cfg.ctr_range[1] + 1e-6


def test_heart_mask_width_matches_ctr():
    # The mask of a shape whose horizontal extent is w pixels spans w +- 1 pixel columns,
    # so width_px / thorax_px may differ from CTR by at most 1 / thorax_px (+ rounding).
    for cfg, slack_px in ((SynthConfig(resolution=128, rotation_range=(0.0, 0.0)), 1.0),
                          (SynthConfig(resolution=64), 1.5)):  # +-5 deg changes extents < 0.3 %
        res = cfg.resolution
        for i in range(40):
            s = render_sample(cfg, 1, i)
            cols = np.flatnonzero(s.heart_mask.any(0))
            width_px = cols[-1] - cols[0] + 1
            assert len(cols) == width_px  # one connected horizontal span
            thorax_px = s.nuisance[NUISANCE_NAMES.index("thorax_width")] * res
            assert abs(width_px / thorax_px - s.ctr) <= (slack_px + 0.05) / thorax_px


def test_opacity_lesion_mask_iff_label_and_localises_the_change():
    cfg = SynthConfig(task="opacity", resolution=48, **CLEAN)
    no_lesion_cfg = replace(cfg, lesion_intensity_range=(0.0, 0.0))
    seen = 0
    for i in range(60):
        s = render_sample(cfg, 0, i)
        assert s.lesion == bool(s.label) == s.lesion_mask.any()
        if not s.lesion:
            continue
        seen += 1
        base = render_sample(no_lesion_cfg, 0, i)
        diff = s.image - base.image
        # anti-aliased edges reach at most one pixel beyond the mask
        near = s.lesion_mask.copy()
        near[1:] |= s.lesion_mask[:-1]
        near[:-1] |= s.lesion_mask[1:]
        near[:, 1:] |= near[:, :-1].copy()
        near[:, :-1] |= near[:, 1:].copy()
        assert np.all(diff[~near] == 0)
        assert diff[s.lesion_mask].mean() > 0.1  # the opacity brightens its region
    assert seen > 15


def test_foreign_object_flags_match_masks_and_are_independent_of_label():
    cfg = SynthConfig(resolution=32, pacemaker_rate=0.5, electrodes_rate=0.5, marker_rate=0.5)
    flags, labels = [], []
    for i in range(400):
        s = render_sample(cfg, 2, i)
        assert np.array_equal(s.fo_flags, s.fo_masks.reshape(3, -1).any(1))
        flags.append(s.fo_flags)
        labels.append(s.label)
    flags, labels = np.array(flags, float), np.array(labels)
    for k, name in enumerate(FO_NAMES):
        p1, p0 = flags[labels == 1, k].mean(), flags[labels == 0, k].mean()
        # ~200 samples per class: 3 standard deviations of the difference is about 0.15
        assert abs(p1 - p0) < 0.15, name
        assert 0.4 < flags[:, k].mean() < 0.6, name


def test_spurious_token_rate_and_location():
    cfg = SynthConfig(resolution=32, spurious_rate=0.7)
    s = [render_sample(cfg, 0, i) for i in range(400)]
    spur = np.array([x.spurious for x in s], float)
    lab = np.array([x.label for x in s])
    assert spur[lab == 0].sum() == 0
    assert abs(spur[lab == 1].mean() - 0.7) < 0.1
    off = SynthConfig(resolution=32, spurious_rate=0.0)
    assert not any(render_sample(off, 0, i).spurious for i in range(100))
    # the token is the only change, and it sits in the lower-right corner of the detector
    on, none = SynthConfig(resolution=32, spurious_rate=1.0, **CLEAN), SynthConfig(resolution=32, **CLEAN)
    i = next(i for i in range(20) if render_sample(none, 0, i).label == 1)
    diff = np.abs(render_sample(on, 0, i).image - render_sample(none, 0, i).image)
    assert diff[24:, 24:].max() > 0.2 and diff[:20].max() == 0 and diff[:, :20].max() == 0


def test_spurious_negative_rate_makes_the_token_independent_of_the_label():
    base = SynthConfig(resolution=32)
    both = replace(base, spurious_rate=0.5, spurious_negative_rate=0.5)
    tokens = {0: [], 1: []}
    for i in range(200):
        a, b = render_sample(base, 0, i), render_sample(both, 0, i)
        assert not a.spurious and a.label == b.label  # default: no token; the label draw is unchanged
        tokens[b.label].append(b.spurious)
    for label in (0, 1):
        assert 0.35 < np.mean(tokens[label]) < 0.65, label


def test_config_errors_are_one_line():
    for kwargs, word in (({"task": "pneumonia"}, "task"), ({"resolution": 16}, "resolution"),
                         ({"spurious_rate": 1.5}, "spurious_rate"), ({"ctr_gap": 0.3}, "ctr")):
        with pytest.raises(DataError, match=word) as e:
            SynthConfig(**kwargs)
        assert "\n" not in str(e.value)


def test_writer_folder_format(tmp_path):
    cfg = SynthConfig(task="opacity", resolution=32, pacemaker_rate=0.5, electrodes_rate=0.5)
    out = tmp_path / "synth"
    summary = write_synthetic(cfg, 12, out, seed=5, progress=False)
    assert summary.n == 12 and sum(summary.label_counts) == 12
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == "medcf-synthetic" and meta["version"] == 1
    assert (meta["task"], meta["resolution"], meta["n"], meta["seed"]) == ("opacity", 32, 12, 5)
    assert meta["class_names"] == list(CLASS_NAMES["opacity"]) and meta["fo_names"] == list(FO_NAMES)
    assert meta["nuisance_names"] == list(NUISANCE_NAMES) and meta["config"]["pacemaker_rate"] == 0.5
    with open(out / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
        fh.seek(0)
        header = fh.readline().strip().split(",")
    assert header == (["index", "split", "image", "label", "ctr", "lesion", "pacemaker", "electrodes",
                       "marker", "spurious"] + list(NUISANCE_NAMES)
                      + ["heart_mask", "lesion_mask", "fo_mask", "blunted", "effusion_mask"])
    assert [int(r["index"]) for r in rows] == list(range(12))
    assert [r["split"] for r in rows][7:10] == ["train", "val", "test"]
    ds = SyntheticDataset(cfg, n=12, seed=5)
    files = set()
    for r in rows:
        s = ds[int(r["index"])]
        img = np.array(Image.open(out / r["image"]))
        assert img.dtype == np.uint8 and img.shape == (32, 32)
        assert np.array_equal(img, np.round((s["image"][0].numpy() + 1) / 2 * 255).astype(np.uint8))
        assert np.array_equal(np.array(Image.open(out / r["heart_mask"])), s["heart_mask"][0].numpy() * 255)
        fo = np.array(Image.open(out / r["fo_mask"]))
        for k in range(3):
            assert np.array_equal((fo >> k) & 1, s["fo_masks"][k].numpy())
            assert int(r[FO_NAMES[k]]) == int(s["fo_flags"][k])
        assert int(r["label"]) == int(s["label"]) and np.float32(r["ctr"]) == s["ctr"].numpy()
        assert int(r["lesion"]) == int(s["lesion"])
        if int(r["lesion"]):
            les = np.array(Image.open(out / r["lesion_mask"]))
            assert np.array_equal(les, s["lesion_mask"][0].numpy() * 255)
        else:
            assert r["lesion_mask"] == ""
        assert int(r["blunted"]) == 0 and r["effusion_mask"] == ""  # opacity task: recesses sharp
        files |= {r["image"], r["heart_mask"], r["fo_mask"]} | ({r["lesion_mask"]} - {""})
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert on_disk == files | {"dataset.json", "metadata.csv"}


def test_writer_refuses_non_empty_dir_unless_overwrite(tmp_path):
    cfg = SynthConfig(resolution=32)
    write_synthetic(cfg, 3, tmp_path, progress=False)
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty") as e:
        write_synthetic(cfg, 2, tmp_path, progress=False)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    write_synthetic(cfg, 2, tmp_path, overwrite=True, progress=False)
    assert len(list((tmp_path / "images").iterdir())) == 2  # old images are gone
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_writer_workers_match_single_process(tmp_path):
    from medcf.data import synthetic

    cfg = SynthConfig(resolution=32)
    synthetic.write_synthetic(cfg, 6, tmp_path / "a", progress=False)  # the interface's alias
    write_synthetic(cfg, 6, tmp_path / "b", workers=2, progress=False)
    assert (tmp_path / "a/metadata.csv").read_text() == (tmp_path / "b/metadata.csv").read_text()
    assert (tmp_path / "a/images/000005.png").read_bytes() == (tmp_path / "b/images/000005.png").read_bytes()


def test_sample_grid_png(tmp_path):
    path = save_sample_grid(SynthConfig(resolution=32), tmp_path / "grid.png", n=2)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_cli_synth_and_error_paths(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["data", "synth", "--task", "opacity", "--n", "10", "--resolution", "32", "--out", str(out),
            "--no-progress"]
    cli_main(args)
    text = capsys.readouterr().out
    assert "wrote 10 images" in text and "clear" in text and "opacity" in text
    assert len(list((out / "images").iterdir())) == 10
    for bad, word in ((args, "not empty"), (args[:-1] + ["--overwrite", "--resolution", "8"], "resolution")):
        with pytest.raises(SystemExit) as e:
            cli_main(bad)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and word in err and "Traceback" not in err


# ----------------------------------------------------------------------------- pleural effusion


def test_effusion_label_is_blunted_and_fluid_fills_a_lateral_recess():
    cfg = SynthConfig(task="effusion", resolution=64, **CLEAN)
    assert cfg.class_names == ("sharp", "blunted")
    labels = []
    for i in range(40):
        s = render_sample(cfg, 0, i)
        labels.append(s.label)
        assert s.blunted == bool(s.label) == bool(s.effusion_mask.any())
        assert not s.lesion and not s.lesion_mask.any()
        if not s.blunted:
            continue
        # the same anatomy without fluid: equal outside the fluid (its anti-aliased rim, up to
        # 2 px at the thin lateral lung edge, aside), brighter inside (fluid replaces air), and
        # the fluid lies low and lateral in the lung field
        sharp = render_sample(replace(cfg, positive_rate=0.0), 0, i)
        assert sharp.label == 0 and not sharp.effusion_mask.any()
        diff = s.image - sharp.image
        near = s.effusion_mask.copy()
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                near |= np.roll(s.effusion_mask, (dy, dx), axis=(0, 1))
        assert np.abs(diff[~near]).max() < 1e-6
        assert diff[s.effusion_mask].mean() > 0.3
        rows, cols = np.nonzero(s.effusion_mask)
        assert rows.min() > 24 and rows.mean() > 34, "fluid sits low in the lung field"
        centre = np.abs(cols + 0.5 - 32) / 32  # 0 at the midline, 1 at the image edge
        assert centre.min() > 0.25, "fluid is lateral: none near the midline (heart, spine)"
    assert 10 < sum(labels) < 30  # positive_rate 0.5


def test_effusion_height_grows_the_fluid_and_other_tasks_stay_sharp():
    lo = SynthConfig(task="effusion", resolution=64, positive_rate=1.0, effusion_height_range=(0.08, 0.08), **CLEAN)
    hi = replace(lo, effusion_height_range=(0.2, 0.2))
    for i in range(6):
        a, b = render_sample(lo, 1, i), render_sample(hi, 1, i)
        assert a.blunted and b.blunted
        assert a.effusion_mask.sum() < b.effusion_mask.sum() and not (a.effusion_mask & ~b.effusion_mask).any()
    for task in ("cardiomegaly", "opacity"):
        for i in range(10):
            s = render_sample(SynthConfig(task=task, resolution=32), 0, i)
            assert not s.blunted and not s.effusion_mask.any()
    with pytest.raises(DataError, match="effusion_height_range"):
        SynthConfig(task="effusion", effusion_height_range=(0.3, 0.1))


def test_effusion_writer_and_folder_round_trip(tmp_path, capsys):
    from medcf.data import open_dataset

    cfg = SynthConfig(task="effusion", resolution=32)
    cli_main(["data", "synth", "--task", "effusion", "--n", "10", "--resolution", "32", "--seed", "2",
              "--out", str(tmp_path / "eff"), "--no-progress"])
    assert "blunted" in capsys.readouterr().out
    with open(tmp_path / "eff" / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    mem = SyntheticDataset(cfg, n=10, seed=2)
    disk = open_dataset(tmp_path / "eff")
    assert disk.class_names == ("sharp", "blunted") and any(int(r["blunted"]) for r in rows)
    for k, r in enumerate(rows):
        a, b = disk[k], mem[int(r["index"])]
        assert a.keys() == b.keys()
        assert int(r["blunted"]) == int(r["label"]) == int(b["blunted"]) == int(a["blunted"])
        assert (r["effusion_mask"] != "") == bool(int(r["blunted"]))
        assert torch.equal(a["effusion_mask"], b["effusion_mask"])
