"""Progressive exaggeration and DISSECT: the conditional generator, the training recipe, the
classifier-hash guard, and the explainers on a toy whose crossing bin is known in closed form."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _cli import run_cli, strict_json
from _progressive_toy import write_toy
from medcf.classifiers import ResNetClassifier, ResNetConfig
from medcf.counterfactual.dissect import Dissect, DissectConfig
from medcf.counterfactual.progressive import Progressive, ProgressiveConfig
from medcf.errors import CheckpointError, MedcfError
from medcf.generators.progressive import (
    CondBatchNorm,
    ProgressiveGenerator,
    ProgressiveGeneratorConfig,
    bin_center,
    posterior_bin,
)
from medcf.train.progressive import classifier_fingerprint, train_progressive

RES = 32


class MeanClassifier(nn.Module):
    """logit = 10 * mean(x) (class 1 when the mean intensity is >= 0)."""

    class_names = ("normal", "cardiomegaly")

    def forward(self, x):
        return x.flatten(1).mean(1, keepdim=True) * 10.0


class ShiftGenerator(nn.Module):
    """G(x, c, k) = x + (k + 1) * (c + 0.5) / bins: brighter for higher bins (and concept 1)."""

    def __init__(self, bins=10, concepts=1):
        super().__init__()
        self.config = ProgressiveGeneratorConfig(resolution=RES, channels=1, bins=bins, concepts=concepts,
                                                 width=4, downsamples=1, blocks=0)
        self.classifier_hash = ""

    def delta(self, x, c, k=None):
        k = torch.zeros_like(c) if k is None else k
        return ((k + 1) * (c.float() + 0.5) / self.config.bins).view(-1, 1, 1, 1).expand_as(x)

    def forward(self, x, c, k=None):
        return x + self.delta(x, c, k)


class DarkerReconstruction(ShiftGenerator):
    """ShiftGenerator whose every output is 0.3 darker: G(x, c_0) is below x, the bins then rise."""

    def forward(self, x, c, k=None):
        return x + self.delta(x, c, k) - 0.3


def test_monotone_is_measured_along_the_generated_sequence():
    x = torch.full((2, 1, RES, RES), -0.5)  # logit -5: bin 0; G(x, 0) has logit -5 + 0.5 - 3 = -7.5
    cf = Progressive(generator=DarkerReconstruction(), classifier=MeanClassifier()).explain(x, target=1)
    assert cf.info["monotone"] == [True, True]                  # logits -7.5, -6.5, ..., 1.5 rise
    assert cf.info["monotone_from_query"] == [False, False]     # x (-5) -> G(x, 0) (-7.5) falls


def test_evaluation_summary_reports_the_monotone_fraction():
    from medcf.explain_runner import evaluate_explainer

    class Queries(torch.utils.data.Dataset):  # logits -5 (class 0, explained toward 1) and +5 (toward 0)
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"image": torch.full((1, RES, RES), -0.5 if i % 2 == 0 else 0.5), "label": i % 2}

    ex = Progressive(generator=ShiftGenerator(), classifier=MeanClassifier())
    summary, _, _ = evaluate_explainer(ex, Queries(), fid=None, progress=False, batch_size=4)
    # toward 1 (from bin 0) the bins brighten: rising; toward 0 (from bin 9) each bin darkens
    # toward x + 0.05: class-0 probability rises too, although G(x, 9) is brighter than x
    assert summary["path_monotone"] == 1.0

    class EverySecond(Progressive):  # in every batch of 2: the first query non-monotone
        def explain(self, x, target=None):
            cf = super().explain(x, target)
            cf.info["monotone"] = [i % 2 == 1 for i in range(len(cf))]
            return cf

    ex = EverySecond(generator=ShiftGenerator(), classifier=MeanClassifier())
    assert evaluate_explainer(ex, Queries(), fid=None, progress=False, batch_size=2)[0]["path_monotone"] == 0.5

    class SaysNormal(nn.Module):  # an oracle that sees class 0 in every image
        def forward(self, x):
            return torch.full((x.shape[0], 1), -10.0)

    ex = Progressive(generator=ShiftGenerator(), classifier=MeanClassifier(), config=ProgressiveConfig(take_at=None))
    summary, _, _ = evaluate_explainer(ex, Queries(), oracle=SaysNormal(), fid=None, progress=False)
    # the two class-0 queries reach class 1 for the classifier, never for the oracle; the two
    # class-1 queries cannot reach class 0 (the shift only brightens): not counted
    assert summary["validity"] == 0.5
    assert {k: summary["hidden_information"][k] for k in ("count", "n", "rate")} == {"count": 2, "n": 4, "rate": 0.5}


def test_bins_and_centres():
    assert posterior_bin(torch.tensor([0.0, 0.05, 0.1, 0.999, 1.0]), 10).tolist() == [0, 0, 1, 9, 9]
    assert torch.allclose(bin_center(torch.tensor([0, 9]), 10), torch.tensor([0.05, 0.95]))


def test_conditional_batch_norm_picks_the_bin():
    cbn = CondBatchNorm(2, 3).train()
    with torch.no_grad():
        cbn.scale.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 3.0], [5.0, 7.0]]))
        cbn.shift.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -1.0], [10.0, 20.0]]))
    x = torch.randn(4, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    cond = torch.tensor([0, 1, 2, 1])
    out = cbn(x, cond)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    norm = (x - mean) / torch.sqrt(var + cbn.norm.eps)
    for i, c in enumerate(cond.tolist()):
        expect = norm[i] * cbn.scale.weight[c].view(2, 1, 1) + cbn.shift.weight[c].view(2, 1, 1)
        assert torch.allclose(out[i], expect, atol=1e-5)


def test_generator_starts_as_identity_and_checks_inputs():
    G = ProgressiveGenerator(ProgressiveGeneratorConfig(resolution=RES, bins=4, concepts=2, width=4,
                                                        downsamples=1, blocks=1), seed=0)
    x = torch.rand(3, 1, RES, RES) * 2 - 1
    assert torch.equal(G(x, torch.tensor([0, 1, 3]), torch.tensor([0, 1, 1])), x)
    with pytest.raises(ValueError, match="bins must lie"):
        G(x, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="concepts must lie"):
        G(x, torch.tensor([0, 1, 1]), torch.tensor([0, 2, 0]))


def test_progressive_crosses_at_the_closed_form_bin():
    x = torch.full((2, 1, RES, RES), -0.5)  # logit -5: bin 0; frame j+1 = G(x, j) has logit j - 4.5
    ex = Progressive(generator=ShiftGenerator(), classifier=MeanClassifier(),
                     config=ProgressiveConfig(take_at=None))
    cf = ex.explain(x, target="cardiomegaly")
    assert cf.info["frame_index"] == [6, 6]  # first j with j - 4.5 >= 0 is 5: frame 6
    assert torch.allclose(cf.counterfactual, x + 0.55)
    assert cf.info["monotone"] == [True, True] and cf.flipped.all()
    cf = Progressive(generator=ShiftGenerator(), classifier=MeanClassifier()).explain(x, target=1)
    assert cf.info["frame_index"] == [8, 8]  # default take_at 0.9: j - 4.5 >= logit(0.9) = 2.197 -> j = 7
    assert cf.path.shape == (11, 2, 1, RES, RES) and torch.equal(cf.path[0], x)


def test_exaggerate_amplifies_the_far_end_change_after_the_bins():
    x = torch.full((1, 1, RES, RES), -0.9)  # logit -9: bin 0; G(x, j) has logit j - 8.5, never 2.197
    plain = Progressive(generator=ShiftGenerator(), classifier=MeanClassifier()).explain(x, target=1)
    assert plain.path.shape[0] == 11 and plain.info["found"] == [False]  # take_at 0.9 not reached
    cfg = ProgressiveConfig(exaggerate=[2, 3])                  # a TOML list is read as a tuple of floats
    assert cfg.exaggerate == (2.0, 3.0)
    cf = Progressive(generator=ShiftGenerator(), classifier=MeanClassifier(), config=cfg).explain(x, target=1)
    assert cf.path.shape[0] == 13 and torch.equal(cf.path[:11], plain.path)
    change = 0.95                                               # G(x, 9) - x = (9 + 0.5) / 10
    assert torch.allclose(cf.path[11], x + 2 * change) and torch.equal(cf.path[12], torch.ones_like(x))  # clamped
    assert cf.info["frame_index"] == [11] and cf.info["found"] == [True]
    assert torch.allclose(cf.counterfactual, x + 1.9)

    class Peaked(MeanClassifier):  # logit rises with the mean up to 0.3, then falls
        def forward(self, x):
            m = x.flatten(1).mean(1, keepdim=True)
            return torch.where(m < 0.3, 10 * m, 10 * (0.6 - m))

    cf = Progressive(generator=ShiftGenerator(), classifier=Peaked(),
                     config=ProgressiveConfig(exaggerate=(3.0,))).explain(x, target=1)
    assert cf.path_probs[-1, 0] < cf.path_probs[-2, 0]          # the exaggerated frame falls ...
    assert cf.info["monotone"] == [True]                        # ... monotonicity is over the bins
    for bad in ((1.0,), (2.0, 1.5), (2.0, 2.0)):
        with pytest.raises(ValueError, match="exaggerate: factors must be increasing and > 1"):
            ProgressiveConfig(exaggerate=bad)
    from medcf.counterfactual.options import parse_setting

    assert parse_setting(ProgressiveConfig, "exaggerate=1.5,2") == ("exaggerate", (1.5, 2.0))


def test_dissect_returns_every_concept_and_picks_the_fastest():
    x = torch.full((1, 1, RES, RES), -0.5)
    ex = Dissect(generator=ShiftGenerator(concepts=2), classifier=MeanClassifier(),
                 config=DissectConfig(take_at=None))
    cf = ex.explain(x, target=1)
    assert cf.concept_paths.shape == (2, 11, 1, 1, RES, RES) and cf.concept_probs.shape == (2, 11, 1)
    # concept 1 shifts twice as much: logit 2 * (j + 0.5) - 5 >= 0 first at j = 2 (frame 3)
    assert cf.info["concepts"][0]["frame_index"] == [6] and cf.info["concepts"][1]["frame_index"] == [3]
    assert cf.info["concept"] == [1] and cf.info["frame_index"] == [3]
    one = cf.select(0)
    assert one.concept_paths.shape == (2, 11, 1, 1, RES, RES)


def test_classifier_hash_guard():
    G = ShiftGenerator()
    G.classifier_hash = "0" * 16
    clf = ResNetClassifier(ResNetConfig(in_channels=1, resolution=RES, class_names=("a", "b"), num_outputs=2,
                                        widths=(4,), blocks=(1,)), seed=0)
    with pytest.raises(CheckpointError, match="trained for classifier"):
        Progressive(generator=G, classifier=clf)
    Progressive(generator=G, classifier=clf, force=True)  # forced: allowed (with a warning)
    G.classifier_hash = classifier_fingerprint(clf)
    Progressive(generator=G, classifier=clf)


def test_classifier_consistency_is_kl_up_to_a_constant():
    # BCE(p, q) = KL(q || p) + H(q): its gradient in p is the KL's, so training matches the bin's posterior
    s = torch.tensor([0.3], requires_grad=True)
    q = torch.tensor([0.75])
    bce = F.binary_cross_entropy_with_logits(s, q)
    p = torch.sigmoid(s)
    kl = q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))
    entropy = -(q * math.log(0.75) + (1 - q) * math.log(0.25))
    assert torch.allclose(bce, kl + entropy, atol=1e-6)
    (g,) = torch.autograd.grad(bce, s)
    assert torch.allclose(g, torch.sigmoid(s).detach() - q)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy(tmp_path_factory.mktemp("prog"), RES)


def _small(**kw):
    return dict(steps=6, batch_size=4, width=4, downsamples=2, blocks=1, progress=False, checkpoint_every=3,
                log_every=1, **kw)


def test_training_step_save_load_and_exact_resume(toy, tmp_path):
    res = train_progressive(toy / "data", tmp_path / "a", classifier=toy / "classifier", **_small())
    stats = [json.loads(line) for line in (tmp_path / "a" / "stats.jsonl").read_text().splitlines()]
    keys = ("loss_d", "loss_g", "adv", "cls", "rec", "cyc", "fo")
    assert all(math.isfinite(r[k]) for r in stats if "loss_g" in r for k in keys)
    from medcf.generators.progressive import load_progressive

    G = load_progressive(res.model_dir)
    assert G.classifier_hash == res.classifier_hash != ""
    # resume: 3 steps, then 3 more, equals 6 in one go
    half = train_progressive(toy / "data", tmp_path / "b", classifier=toy / "classifier", **{**_small(), "steps": 3})
    assert half.model_dir.is_dir()
    train_progressive(toy / "data", tmp_path / "b", classifier=toy / "classifier", resume=True, **_small())
    G2 = load_progressive(tmp_path / "b")
    for (n, a), (_, b) in zip(G.state_dict().items(), G2.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_disentangler_loss_decreases_on_two_concepts(toy, tmp_path):
    # only the disentangler term: G and R must learn together to make the two concepts' changes tellable
    train_progressive(toy / "data", tmp_path / "d", classifier=toy / "classifier", concepts=2,
                      **{**_small(), "steps": 150, "batch_size": 8, "log_every": 10, "checkpoint_every": 0,
                         "lr": 2e-3, "rec_weight": 0.0, "adv_weight": 0.0, "cls_weight": 0.0, "fo_weight": 0.0})
    dis = [json.loads(line)["dis"] for line in (tmp_path / "d" / "stats.jsonl").read_text().splitlines()
           if "dis" in line]
    # starts at chance (ln 2 = 0.69: G begins as the identity, so both concepts look alike)
    assert dis[0] > 0.6
    assert sorted(dis[-5:])[2] < 0.35, dis  # median of the last 5 intervals: at most half of chance


def test_cli_train_explain_and_errors(toy, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "progressive", "--data", toy / "data", "--classifier",
                             toy / "classifier", "--out", run, "--steps", "2", "--batch-size", "4", "--width", "4",
                             "--no-progress")
    assert code == 0, err
    code, out, err = run_cli(capsys, "explain", "--method", "progressive", "--classifier", toy / "classifier",
                             "--generator", run, "--images", toy / "data" / "images" / "000001.png",
                             "--out", tmp_path / "ex")
    assert code == 0, err
    record = strict_json(next((tmp_path / "ex").rglob("*.json")))
    assert record  # a per-query record was written
    other = tmp_path / "other"
    ResNetClassifier(ResNetConfig(in_channels=1, resolution=RES, class_names=("normal", "cardiomegaly"),
                                  num_outputs=2, widths=(4,), blocks=(1,)), seed=5).save(other / "model")
    code, out, err = run_cli(capsys, "explain", "--method", "progressive", "--classifier", other,
                             "--generator", run, "--images", toy / "data" / "images" / "000001.png",
                             "--out", tmp_path / "ex2")
    assert code == 2 and "trained for classifier" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "explain", "--method", "progressive", "--classifier", other,
                             "--generator", run, "--images", toy / "data" / "images" / "000001.png",
                             "--out", tmp_path / "ex2", "--set", "force=true")
    assert code == 0, err  # forced: explained, with a warning
    code, out, err = run_cli(capsys, "train", "dissect", "--data", toy / "data", "--classifier", toy / "classifier",
                             "--out", tmp_path / "d", "--concepts", "1")
    assert code == 2 and "--concepts" in err
    code, out, err = run_cli(capsys, "explain", "--method", "dissect", "--classifier", toy / "classifier",
                             "--generator", run, "--images", toy / "data" / "images" / "000001.png",
                             "--out", tmp_path / "ex3")
    assert code == 2 and "--method progressive" in err


def test_concept_purity_on_hand_built_trajectories():
    from medcf.eval.purity import concept_purity

    class Toy(nn.Module):  # CTR = 0.5 + mean of the left half; marker = bright lower-right pixel
        def forward(self, x):
            return 0.5 + x[:, :, :, : RES // 2].mean(dim=(1, 2, 3)).view(-1, 1)

    x = torch.zeros(4, 1, RES, RES)
    x[:2, :, -1, -1] = 1.0                                   # queries 0, 1 carry the marker
    heart = x.clone()
    heart[:, :, :, : RES // 2] += 0.1                        # concept 0: CTR +0.1 on every query
    marker = x.clone()
    marker[:, :, -1, -1] = 1.0 - marker[:, :, -1, -1]        # concept 1: marker flipped on every query
    paths = torch.stack([torch.stack([x, heart]), torch.stack([x, marker])])  # [K=2, T=2, B=4, ...]
    from medcf.types import Counterfactual

    cf = Counterfactual(original=x, counterfactual=heart, difference=heart - x, target=torch.ones(4, dtype=torch.long),
                        prob_original=torch.zeros(4), prob_counterfactual=torch.ones(4), concept_paths=paths,
                        info={"concepts": [{"frame_index": [1, 1, 1, 1]}, {"frame_index": [1, 1, 0, 1]}]})
    m = concept_purity(cf, marker_present=lambda im: im[:, 0, -1, -1] > 0.5, ctr=Toy())
    assert m["heart"] == [1.0, 0.0] and m["marker"] == [0.0, 0.75] and m["n"] == 4


def test_change_tv_prefers_a_band_to_streaks():
    from medcf.train.progressive import change_tv

    band = torch.zeros(2, 1, 16, 16)
    band[..., 4:12] = 0.5                                   # one solid vertical band, L1 0.25
    streaks = torch.zeros(2, 1, 16, 16)
    streaks[..., ::2] = 0.5                                 # one-pixel streaks, the same L1
    assert band.abs().mean() == streaks.abs().mean()
    assert change_tv(band).item() == pytest.approx(0.5 * 2 / 15)
    assert change_tv(streaks).item() == pytest.approx(0.5)
    assert change_tv(torch.full((1, 1, 8, 8), 0.3)).item() == 0.0    # a constant change is free


def test_discriminator_knobs_and_tv_term_reach_training(toy, tmp_path, capsys):
    train_progressive(toy / "data", tmp_path / "k", classifier=toy / "classifier",
                      **{**_small(), "steps": 3, "checkpoint_every": 0}, d_steps=3, d_width=6, d_lr=1e-3,
                      adv_weight=5.0, tv_weight=2.0)
    state = torch.load(tmp_path / "k" / "train_state.pt", weights_only=False)
    conv = next(v for k, v in state["models"]["discriminator"].items() if k.endswith("weight_orig"))
    assert conv.shape[0] == 6                                                # the discriminator's own width
    opt_d = state["optimizers"]["discriminator"]
    assert opt_d["param_groups"][0]["lr"] == 1e-3
    assert all(int(s["step"]) == 9 for s in opt_d["state"].values())         # 3 updates per generator step
    assert all(int(s["step"]) == 3 for s in state["optimizers"]["generator"]["state"].values())
    stats = [json.loads(line) for line in (tmp_path / "k" / "stats.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["tv"]) for r in stats if "loss_g" in r)
    info = json.loads((tmp_path / "k" / "run.json").read_text())["run_info"]
    assert (info["d_steps"], info["d_width"], info["weights"]["tv"], info["weights"]["adv"]) == (3, 6, 2.0, 5.0)
    with pytest.raises(MedcfError, match="d_steps"):
        train_progressive(toy / "data", tmp_path / "bad", classifier=toy / "classifier", **_small(), d_steps=0)
    with pytest.raises(MedcfError, match="weights"):
        train_progressive(toy / "data", tmp_path / "bad", classifier=toy / "classifier", **_small(), tv_weight=-1)
    code, out, err = run_cli(capsys, "train", "progressive", "--data", toy / "data", "--classifier",
                             toy / "classifier", "--out", tmp_path / "c", "--steps", "2", "--batch-size", "4",
                             "--width", "4", "--no-progress", "--d-steps", "0")
    assert code == 2 and "d_steps" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "train", "progressive", "--data", toy / "data", "--classifier",
                             toy / "classifier", "--out", tmp_path / "c", "--steps", "2", "--batch-size", "4",
                             "--width", "4", "--no-progress", "--delta-scale", "3")
    assert code == 2 and "delta_scale" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "train", "progressive", "--data", toy / "data", "--classifier",
                             toy / "classifier", "--out", tmp_path / "c", "--steps", "2", "--batch-size", "4",
                             "--width", "4", "--no-progress", "--tv-weight", "3", "--adv-weight", "2",
                             "--d-steps", "2", "--d-width", "5")
    assert code == 0, err
    info = json.loads((tmp_path / "c" / "run.json").read_text())["run_info"]
    assert (info["d_steps"], info["d_width"], info["weights"]["tv"], info["weights"]["adv"]) == (2, 5, 3.0, 2.0)


def test_bin_targets_from_data_are_the_classifier_means_per_bin(toy, tmp_path, capsys):
    from medcf.train.progressive import bin_targets_from_data

    # MeanClassifier: logit 10 * mean(x); constant images give chosen probabilities
    probs = [0.01, 0.03, 0.99, 0.97, 0.55]
    data = [{"image": torch.full((1, 4, 4), math.log(p / (1 - p)) / 10)} for p in probs]
    t = bin_targets_from_data(MeanClassifier(), data, 10, batch=2)
    assert t[0].item() == pytest.approx(0.02, abs=1e-5) and t[9].item() == pytest.approx(0.98, abs=1e-5)
    assert t[5].item() == pytest.approx(0.55, abs=1e-5)
    assert t[3].item() == pytest.approx(0.35) and t[8].item() == pytest.approx(0.85)   # empty: the centre
    train_progressive(toy / "data", tmp_path / "t", classifier=toy / "classifier", bin_targets="data",
                      **{**_small(), "steps": 1, "checkpoint_every": 0})
    info = json.loads((tmp_path / "t" / "run.json").read_text())["run_info"]
    assert info["bin_targets"] == "data" and len(info["targets"]) == 10
    assert info["targets"] == sorted(info["targets"])                          # bin means rise with the bin
    code, out, err = run_cli(capsys, "train", "progressive", "--data", toy / "data", "--classifier",
                             toy / "classifier", "--out", tmp_path / "c", "--steps", "1", "--batch-size", "4",
                             "--width", "4", "--no-progress", "--bin-targets", "median")
    assert code == 2 and "bin_targets" in err and len(err.strip().splitlines()) == 1


def test_benchmark_prepare_passes_the_new_knobs_and_keeps_old_cache_keys(toy, tmp_path):
    from pathlib import Path

    from medcf.train.progressive import prepare_benchmark

    base = {"steps": 2, "width": 4, "batch_size": 4}
    kw = prepare_benchmark(toy / "data", tmp_path / "bench", classifier_dir=toy / "classifier",
                           task="cardiomegaly", profile=base, progress=False)
    cfg = json.loads((Path(kw["generator_dir"]) / "benchmark-stage.json").read_text())
    assert not {"adv_weight", "d_steps", "bin_targets", "tv_weight"} & set(json.dumps(cfg).split('"'))
    knobs = {"adv_weight": 3.0, "d_steps": 2, "bin_targets": "data", "tv_weight": 1.0}
    other = prepare_benchmark(toy / "data", tmp_path / "bench", classifier_dir=toy / "classifier",
                              task="cardiomegaly", profile={**base, **knobs}, progress=False)
    assert other["generator_dir"] != kw["generator_dir"]
    info = json.loads((Path(other["generator_dir"]) / "run.json").read_text())["run_info"]
    assert (info["weights"]["adv"], info["d_steps"], info["bin_targets"], info["weights"]["tv"]) == (3.0, 2, "data",
                                                                                                    1.0)


def test_delta_scale_low_passes_the_change_and_old_configs_load(tmp_path):
    cfg = ProgressiveGeneratorConfig(resolution=RES, channels=1, bins=4, width=4, downsamples=1, blocks=0)
    full = ProgressiveGenerator(cfg, seed=0).eval()
    nn.init.normal_(full.out.weight, std=0.5)                       # a non-zero change
    coarse = ProgressiveGenerator(ProgressiveGeneratorConfig(**{**cfg.__dict__, "delta_scale": 4})).eval()
    coarse.load_state_dict(full.state_dict())                       # same parameters, only the scale differs
    x, c = torch.rand(2, 1, RES, RES) * 2 - 1, torch.tensor([0, 3])
    d_full, d = full.delta(x, c), coarse.delta(x, c)
    expected = F.interpolate(F.avg_pool2d(d_full, 4), scale_factor=4.0, mode="bilinear", align_corners=False)
    assert torch.allclose(d, expected, atol=1e-6)
    from medcf.train.progressive import change_tv

    assert change_tv(d) < 0.5 * change_tv(d_full)                  # far smoother than the full-resolution change
    with pytest.raises(ValueError, match="delta_scale"):
        ProgressiveGeneratorConfig(resolution=RES, delta_scale=3)
    # a checkpoint saved before delta_scale existed loads as full resolution
    full.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["config"]["delta_scale"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    assert ProgressiveGenerator.load(tmp_path / "old").config.delta_scale == 1
