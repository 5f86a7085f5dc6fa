"""Data the way users have it: --fit for non-square images, --split fractions for plain
class folders, `medcf data inspect` verifying by default, and training flags
(--checkpoint-every, --overwrite, a re-run after a failure before the first checkpoint)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from _cli import run_cli
from medcf.data import DataOptions, load_image, open_dataset
from medcf.errors import DataError, MedcfError


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


@pytest.fixture()
def wide(tmp_path):
    """40 wide x 20 high: the left half white, the right half black."""
    a = np.zeros((20, 40), np.uint8)
    a[:, :20] = 255
    return _png(tmp_path / "wide.png", a)


def test_fit_pad_crop_squash_on_a_non_square_image(wide):
    pad = load_image(wide, resolution=20)  # default: pad
    assert pad.shape == (1, 20, 20)
    # 40x20 -> 20x10 centred: rows 0-4 and 15-19 are black borders, the content keeps its aspect
    assert (pad[0, :5] == -1).all() and (pad[0, 15:] == -1).all()
    assert (pad[0, 6:14, :9] > 0.99).all() and (pad[0, 6:14, 11:] < -0.99).all()
    crop = load_image(wide, resolution=20, fit="crop")  # 40x20 stays, centre columns 10..29 kept
    assert (crop[0, :, :9] > 0.99).all() and (crop[0, :, 11:] < -0.99).all()
    squash = load_image(wide, resolution=20, fit="squash")  # stretched: no borders, halves at column 10
    assert (squash[0, :, :9] > 0.99).all() and (squash[0, :, 11:] < -0.99).all()
    assert (pad[0, :5] != squash[0, :5]).any()  # squash has no borders
    with pytest.raises(DataError, match="fit must be one of pad, crop, squash"):
        load_image(wide, resolution=20, fit="stretch")


def test_fit_reaches_folder_datasets_and_the_not_square_error_names_the_flags(tmp_path, wide):
    with pytest.raises(DataError, match="--resolution N.*--fit pad|crop|squash"):
        open_dataset(wide)
    ds = open_dataset(wide, resolution=20, fit="crop")
    assert torch.equal(ds[0]["image"], load_image(wide, resolution=20, fit="crop"))
    assert torch.equal(open_dataset(DataOptions(str(wide), fit="squash"), resolution=20)[0]["image"],
                       load_image(wide, resolution=20, fit="squash"))


def _class_folders(root, counts=(10, 20), size=32):
    rng = np.random.default_rng(0)
    for name, n in zip(("healthy", "sick"), counts, strict=True):
        for i in range(n):
            _png(root / name / f"{name}_{i:03d}.png", rng.integers(0, 256, (size, size)))
    return root


def test_class_folders_split_by_fractions_stratified_and_seeded(tmp_path):
    root = _class_folders(tmp_path / "cls")
    with pytest.raises(DataError, match=r"no 'train' split folder.*--split 0\.8,0\.1,0\.1"):
        open_dataset(root, split="train")
    parts = {s: open_dataset(root, split=s, split_fractions=(0.8, 0.1, 0.1)) for s in ("train", "val", "test")}
    counts = {s: (ds.labels.count(0), ds.labels.count(1)) for s, ds in parts.items()}
    assert counts == {"train": (8, 16), "val": (1, 2), "test": (1, 2)}  # per class: stratified
    files = [set(map(str, ds.files)) for ds in parts.values()]
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    assert len(set.union(*files)) == 30
    again = open_dataset(DataOptions(str(root), split_fractions=(0.8, 0.1, 0.1)), split="val")
    assert again.files == parts["val"].files  # the same seed: the same split
    other = open_dataset(root, split="val", split_fractions=(0.8, 0.1, 0.1), split_seed=1)
    assert other.files != parts["val"].files
    assert str(DataOptions(str(root), split_fractions=(0.8, 0.1, 0.1))) == f"{root} (split 0.8,0.1,0.1 by class, seed 0)"
    with pytest.raises(DataError, match="sum to 1"):
        open_dataset(root, split="train", split_fractions=(0.5, 0.1, 0.1))
    (tmp_path / "x.csv").write_text("path,label\n")
    with pytest.raises(DataError, match="class folders only"):
        open_dataset(tmp_path / "x.csv", split="train", split_fractions=(0.8, 0.1, 0.1))


def test_inspect_verifies_by_default_and_quick_skips(tmp_path, capsys):
    root = _class_folders(tmp_path / "cls", counts=(3, 3))
    code, out, err = run_cli(capsys, "data", "inspect", root, "--fractions", "0.34,0.33,0.33", "--split", "val",
                             "--json", "--no-progress")
    assert code == 0, err
    facts = json.loads(out)
    assert facts["items"] == 2 and facts["verified"] is True and facts["label_counts"] == {"healthy": 1, "sick": 1}
    (root / "sick" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, _, err = run_cli(capsys, "data", "inspect", root, "--no-progress")
    assert code == 2 and "broken.png" in err and err.count("\n") == 1
    code, out, err = run_cli(capsys, "data", "inspect", root, "--quick", "--json")
    assert code == 0 and json.loads(out)["verified"] is False


def _train_ae(capsys, data, out, *extra):
    return run_cli(capsys, "train", "ae", "--data", data, "--out", out, "--steps", "4", "--batch-size", "4",
                   "--latent-size", "8", "--latent-dim", "2", "--no-progress", *extra)


def test_train_on_plain_class_folders_with_split_checkpoint_every_and_overwrite(tmp_path, capsys):
    root = _class_folders(tmp_path / "cls")
    out = tmp_path / "run"
    code, _, err = _train_ae(capsys, root, out)
    assert code == 2 and "--split 0.8,0.1,0.1" in err and err.count("\n") == 1
    assert not (out / "model").exists()
    code, _, err = _train_ae(capsys, root, out, "--split", "0.8,0.1,0.1", "--checkpoint-every", "2")
    assert code == 0, err
    run = json.loads((out / "run.json").read_text())
    assert run["run_info"]["data"] == f"{root} (split 0.8,0.1,0.1 by class, seed 0)"  # recorded in the run
    assert run["config"]["checkpoint_every"] == 2
    (out / "notes.txt").write_text("mine")
    code, _, err = _train_ae(capsys, root, out, "--split", "0.8,0.1,0.1")
    assert code == 2 and "--overwrite" in err and "--resume" in err
    code, _, err = _train_ae(capsys, root, out, "--split", "0.8,0.1,0.1", "--overwrite", "--resume")
    assert code == 2 and "give one of them" in err
    code, _, err = _train_ae(capsys, root, out, "--split", "0.8,0.1,0.1", "--overwrite", "--seed", "3")
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["run_info"]["seed"] == 3
    assert (out / "notes.txt").read_text() == "mine"  # only the engine's files were replaced
    code, _, err = _train_ae(capsys, root, out, "--split", "0,5")
    assert code == 2 and "--split" in err


def test_a_run_that_failed_before_its_first_checkpoint_can_be_rerun(tmp_path):
    from torch.utils.data import TensorDataset

    from medcf.train.engine import TrainConfig, Trainer

    class Items(TensorDataset):
        def __getitem__(self, i):
            return {"x": self.tensors[0][i]}

    data = Items(torch.randn(16, 3))

    def run(fail_at=None):
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)

        def step(tr, batch):
            if tr.step == fail_at:
                raise RuntimeError("out of memory (simulated)")
            loss = model(batch["x"]).pow(2).mean()
            opt.zero_grad()
            tr.backward(loss)
            opt.step()
            return {"loss": loss.item()}

        cfg = TrainConfig(out_dir=str(tmp_path / "r"), steps=6, batch_size=4, log_every=1, checkpoint_every=4,
                          progress=False)
        return Trainer(cfg, models={"m": model}, optimizers={"m": opt}, dataset=data, step_fn=step,
                       export=None).fit()

    with pytest.raises(RuntimeError, match="simulated"):
        run(fail_at=2)  # before the first checkpoint (step 4)
    assert (tmp_path / "r" / "run.json").exists() and not (tmp_path / "r" / "train_state.pt").exists()
    run()  # a plain re-run starts over instead of refusing the folder
    lines = [json.loads(s) for s in (tmp_path / "r" / "stats.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if "loss" in r]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 6  # no stale lines of the failed run
    with pytest.raises(MedcfError, match="--resume.*--overwrite"):  # a finished run is never started over
        run()
