"""RowJournal: a benchmark row's explanations kept batch by batch (medcf.benchmark.journal), so that
an interrupted row continues; end to end through `run_benchmark` on the micro profile."""

from __future__ import annotations

import csv
import dataclasses
import logging

import pytest
import torch

from medcf.benchmark import load_profile, run_benchmark
from medcf.benchmark.journal import RowJournal
from medcf.types import Counterfactual


class Doubler:
    """A deterministic explainer: counterfactual 2x, a per-query list and a tensor in info."""

    def __init__(self, fail_at: int | None = None):
        self.calls, self.fail_at = 0, fail_at

    def explain(self, x, target):
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the row
        self.calls += 1
        b = x.shape[0]
        return Counterfactual(
            original=x, counterfactual=2 * x, difference=x.mean(1, keepdim=True), target=target,
            prob_original=x.flatten(1).mean(1), prob_counterfactual=torch.ones(b),
            path=torch.stack([x, 2 * x]), threshold=0.25,
            info={"found": [True] * b, "variance_map": x[:, :1] ** 2, "seconds": 0.5})


def batches(n=3, b=2):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(b, 1, 4, 4, generator=g), torch.tensor([1, 0])) for _ in range(n)]


def explain_all(explainer, data):
    return [explainer.explain(x, t) for x, t in data]


def same_cf(a: Counterfactual, b: Counterfactual) -> bool:
    for f in dataclasses.fields(a):
        u, v = getattr(a, f.name), getattr(b, f.name)
        if f.name == "info":
            if u.keys() != v.keys() or any(
                    not torch.equal(u[k], v[k]) if torch.is_tensor(u[k]) else u[k] != v[k] for k in u):
                return False
        elif torch.is_tensor(u) or torch.is_tensor(v):
            if not (torch.is_tensor(u) and torch.is_tensor(v) and u.dtype == v.dtype and torch.equal(u, v)):
                return False
        elif u != v:
            return False
    return True


def test_interrupted_row_resumes_with_the_batches_it_had(tmp_path):
    data, folder = batches(), tmp_path / "journal"
    reference = explain_all(Doubler(), data)
    first = Doubler(fail_at=2)
    j1 = RowJournal(first, folder, key="k")
    explain_all(first, data[:2])
    recorded = j1.seconds
    with pytest.raises(KeyboardInterrupt):
        first.explain(*data[2])
    assert sorted(p.name for p in folder.glob("batch-*")) == ["batch-00000.safetensors",
                                                              "batch-00001.safetensors"]
    second = Doubler()
    j2 = RowJournal(second, folder, key="k")
    out = explain_all(second, data)
    assert second.calls == 1 and j2.replayed == 2                 # only the third batch explained again
    assert all(same_cf(a, b) for a, b in zip(out, reference, strict=True))
    assert j2.seconds >= recorded > 0                             # replayed batches bring their seconds
    j2.close()
    assert not folder.exists()


@pytest.mark.parametrize("change", ["key", "fresh", "input"])
def test_journal_is_not_replayed_for_another_row_or_input(tmp_path, change):
    data, folder = batches(), tmp_path / "journal"
    RowJournal(first := Doubler(), folder, key="k")
    explain_all(first, data)
    again = Doubler()
    RowJournal(again, folder, key="other" if change == "key" else "k", fresh=change == "fresh")
    if change == "input":                                          # batch 1 differs: it and later ones redone
        data[1] = (data[1][0] + 1, data[1][1])
    out = explain_all(again, data)
    assert again.calls == (2 if change == "input" else 3)
    assert torch.equal(out[1].counterfactual, 2 * data[1][0])


def test_unreadable_batch_is_explained_again(tmp_path, caplog):
    data, folder = batches(), tmp_path / "journal"
    RowJournal(first := Doubler(), folder, key="k")
    explain_all(first, data)
    (folder / "batch-00001.safetensors").write_bytes(b"not a safetensors file")
    again = Doubler()
    RowJournal(again, folder, key="k")
    with caplog.at_level(logging.WARNING):
        explain_all(again, data)
    assert again.calls == 2 and "batch-00001.safetensors: unreadable" in caplog.text


def test_info_json_cannot_hold_turns_journaling_off(tmp_path, caplog):
    class Odd(Doubler):
        def explain(self, x, target):
            cf = super().explain(x, target)
            cf.info["settings"] = object()
            return cf

    folder = tmp_path / "journal"
    j = RowJournal(odd := Odd(), folder, key="k")
    with caplog.at_level(logging.WARNING):
        out = explain_all(odd, batches())
    assert len(out) == 3 and j.folder is None and not folder.exists()
    assert "not journaling this row" in caplog.text


def test_benchmark_row_interrupted_mid_row_resumes_from_its_journal(tmp_path, monkeypatch):
    """Ctrl-C after the first of two batches of a row; --resume explains only the second, and the row's
    figures equal those of an uninterrupted run."""
    base = load_profile("micro")
    profile = dataclasses.replace(base, evaluate={**base.evaluate, "batch_size": 2})
    quiet = dict(methods="latent-shift", progress=False)
    run_benchmark(tmp_path / "whole", profile, echo=lambda s: None, **quiet)

    real = RowJournal._record

    def record_then_stop(self, i, *args):
        real(self, i, *args)
        if i == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(RowJournal, "_record", record_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(tmp_path / "cut", profile, echo=lambda s: None, **quiet)
    journal = tmp_path / "cut" / "rows" / "cardiomegaly" / "latent-shift" / "journal"
    assert [p.name for p in journal.glob("batch-*")] == ["batch-00000.safetensors"]
    monkeypatch.setattr(RowJournal, "_record", real)
    lines: list[str] = []
    run_benchmark(tmp_path / "cut", profile, resume=True, echo=lines.append, **quiet)
    assert any("1 batches of the interrupted row taken from" in s for s in lines)
    assert not journal.exists()

    def row(out):
        with (out / "results.csv").open(newline="") as f:
            (r,) = [r for r in csv.DictReader(f) if r["method"] == "latent-shift"]
        return {k: v for k, v in r.items() if k not in ("sec_per_query", "train_min")}

    assert row(tmp_path / "cut") == row(tmp_path / "whole")
