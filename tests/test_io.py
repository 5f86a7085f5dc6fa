"""Model-directory save/load, atomic writes and error paths of medcf.io."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from medcf.errors import CheckpointError
from medcf.io import SavableModule, atomic_write_dir, json_safe, load_of_kind, read_header


@dataclass(frozen=True)
class TinyConfig:
    width: int = 3
    sizes: tuple[int, ...] = (1, 2)


class Tiny(SavableModule):
    kind = "tiny"
    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__(config)
        self.lin = nn.Linear(config.width, 2)


class Other(Tiny):
    kind = "other"


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = Tiny(TinyConfig(width=4, sizes=(3, 5)))
    model.save(tmp_path / "m", meta={"steps": 7})
    loaded = Tiny.load(tmp_path / "m")
    assert loaded.config == model.config  # tuples survive JSON
    x = torch.randn(2, 4)
    assert torch.equal(loaded.lin(x), model.lin(x))
    assert read_header(tmp_path / "m")["meta"]["steps"] == 7


def test_run_directory_resolves_to_model(tmp_path):
    Tiny(TinyConfig()).save(tmp_path / "run" / "model")
    assert isinstance(Tiny.load(tmp_path / "run"), Tiny)


def test_wrong_kind_is_refused_with_one_line(tmp_path):
    Other(TinyConfig()).save(tmp_path / "m")
    with pytest.raises(CheckpointError, match="is a 'other' checkpoint, expected 'tiny'"):
        Tiny.load(tmp_path / "m")


def test_load_of_kind_names_the_command_that_makes_the_right_kind(tmp_path):
    Other(TinyConfig()).save(tmp_path / "o")
    with pytest.raises(CheckpointError) as e:
        load_of_kind(Tiny, tmp_path / "o", made_by="medcf train tiny")
    assert str(e.value) == f"{tmp_path / 'o'}: is a 'other' checkpoint, expected a 'tiny' (medcf train tiny)"
    model = Tiny(TinyConfig(width=2))
    model.save(tmp_path / "run" / "model")
    loaded = load_of_kind(Tiny, tmp_path / "run", made_by="medcf train tiny")  # a run directory too
    assert type(loaded) is Tiny and not loaded.training
    assert torch.equal(loaded.lin.weight, model.lin.weight)

def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Tiny.load(tmp_path / "nope")
    Tiny(TinyConfig()).save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt weights"):
        Tiny.load(tmp_path / "m")


def test_failed_directory_write_keeps_previous(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")

    def boom(tmp):
        (tmp / "half.txt").write_text("new")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write_dir(target, boom)
    assert (target / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_json_safe_gives_strict_json_values():
    import json
    import math

    obj = {"fid": math.nan, 3: (1, -math.inf), "nested": [{"x": math.inf, "ok": 0.5}], "s": "a", "n": None,
           "flag": True}
    out = json_safe(obj)
    assert out == {"fid": None, "3": [1, None], "nested": [{"x": None, "ok": 0.5}], "s": "a", "n": None,
                   "flag": True}
    json.dumps(out, allow_nan=False)  # strict JSON accepts it
    assert obj["fid"] != obj["fid"]  # the input is left as it was

