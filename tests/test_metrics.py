"""Metrics on hand-built inputs whose values are known by construction or in closed form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from medcf.errors import DataError, ShapeError, WeightsNotFoundError
from medcf.eval import (
    FID,
    attribute_preservation,
    auroc,
    boundary_band,
    clinical_metrics,
    evaluate_counterfactuals,
    foreign_object_preservation,
    foreign_object_preservation_gt,
    l1_distance,
    mean_localization,
    ncc,
    not_found_rate,
    oracle_validity,
    reached_target,
    singla_validity,
    ssim,
    validity,
)
from medcf.types import Counterfactual

R = 16  # image size


def const(values, c=1, r=R) -> torch.Tensor:  # one constant image per value: [B, c, r, r]
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, c, r, r).clone()


def make_cf(orig, cf, target, *, info=None, path=None, prob_cf=None, difference=None) -> Counterfactual:
    x, y = const(orig), const(cf)
    b = x.shape[0]
    return Counterfactual(
        original=x, counterfactual=y,
        difference=(y - x)[:, :1] if difference is None else difference,
        target=torch.as_tensor(target).long().expand(b).clone(),
        prob_original=torch.full((b,), 0.1),
        prob_counterfactual=torch.full((b,), 0.9) if prob_cf is None else prob_cf,
        path=path, info=info or {})


class MeanLogit(nn.Module):
    """One sigmoid logit a * mean(x): for constant images, p(class 1) = sigmoid(a * c)."""

    def __init__(self, a: float = 10.0, k: int = 1):
        super().__init__()
        self.a, self.k = a, k
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        m = self.a * x.mean((1, 2, 3))
        if self.k == 1:
            return m[:, None]
        return torch.stack([-m / 2, m / 2], 1)  # softmax p1 = sigmoid(m)

    def features(self, x):
        return x.flatten(1)


# ----------------------------------------------------------------------------- validity


def test_validity_recomputes_the_classifier_decision():
    # target 1; counterfactual constants >= 0 reach p1 >= 0.5: 2 of 4
    cf = make_cf([-1, -1, -1, -1], [0.5, -0.5, 1.0, -0.1], 1)
    for clf in (MeanLogit(k=1), MeanLogit(k=2)):
        assert reached_target(cf, clf).tolist() == [True, False, True, False]
        assert validity(cf, clf) == 0.5
    assert validity(cf) == 1.0  # stored probabilities (all 0.9) without a classifier
    # target 0 for the same images: the complement
    cf0 = make_cf([1, 1, 1, 1], [0.5, -0.5, 1.0, -0.1], 0)
    assert validity(cf0, MeanLogit()) == 0.5
    assert reached_target(cf0, MeanLogit()).tolist() == [False, True, False, True]


def test_oracle_validity_and_not_found():
    cf = make_cf([-1] * 4, [0.5, -0.5, 1.0, -0.1], 1)
    assert oracle_validity(cf, MeanLogit(a=-10.0)) == 0.5  # the oracle disagrees on every query
    assert not (reached_target(cf, MeanLogit(a=-10.0)) & reached_target(cf, MeanLogit())).any()
    assert not_found_rate(cf, MeanLogit()) == 0.5  # no "found" flags: not reached
    found = make_cf([-1] * 4, [0.5, -0.5, 1.0, -0.1], 1, info={"found": torch.tensor([1, 1, 1, 0]).bool()})
    assert not_found_rate(found, MeanLogit()) == 0.25
    bad = make_cf([-1] * 4, [0.5] * 4, 1, info={"found": torch.ones(3).bool()})
    with pytest.raises(ShapeError, match="found"):
        not_found_rate(bad)


def test_validity_multiclass_needs_argmax():
    class Fixed(nn.Module):
        def forward(self, x):  # probabilities (0.45, 0.1, 0.45)-ish and (0.6, 0.2, 0.2)
            first = x[:, 0, 0, 0] < 0
            a = torch.log(torch.tensor([0.45, 0.10, 0.45]))
            b = torch.log(torch.tensor([0.6, 0.2, 0.2]))
            return torch.where(first[:, None], a, b)

    cf = make_cf([0, 0], [-1, 1], 0)
    cf = Counterfactual(**{**cf.__dict__, "threshold": 0.4})
    # query 0: p0 = 0.45 >= 0.4 but tied with class 2 -> argmax picks class 0 (first); query 1: p0 = 0.6
    assert reached_target(cf, Fixed()).tolist() == [True, True]
    cf2 = Counterfactual(**{**cf.__dict__, "target": torch.tensor([2, 1])})
    assert reached_target(cf2, Fixed()).tolist() == [False, False]  # class 2 never the argmax


def test_singla_validity_by_construction():
    clf = MeanLogit(a=10.0)
    # originals: -1 -> decision 0 with f = sigmoid(10) > 0.8 (eligible); -0.05 -> f = sigmoid(0.5) = 0.62
    # (not eligible). counterfactuals: 1 -> f_cf = 1 - sigmoid(10) (change ~1 > 0.8: valid);
    # 0 -> f_cf = 0.5 (change ~0.5: not valid)
    cf = make_cf([-1, -1, -1, -0.05], [1, 0, 1, 1], 1)
    out = singla_validity(cf, clf)
    assert out == {"cv": 2 / 3, "n_eligible": 3, "n_valid": 2}
    none = singla_validity(make_cf([-0.05], [1], 1), clf)
    assert none["n_eligible"] == 0 and math.isnan(none["cv"])


# ----------------------------------------------------------------------------- FOP


class PixelDetector(nn.Module):
    """Object k is present when pixel (0, k) is bright: logits 20 * x[:, 0, 0, k]."""

    def forward(self, x):
        return 20 * x[:, 0, 0, :3]


def _with_objects(flags) -> torch.Tensor:  # [B, 3] {0,1} -> images with pixel (0, k) = +1 / -1
    x = torch.full((len(flags), 1, R, R), -1.0)
    x[:, 0, 0, :3] = torch.tensor(flags, dtype=torch.float32) * 2 - 1
    return x


def test_foreign_object_preservation_counts_pairs():
    x = _with_objects([[1, 1, 0], [0, 0, 1], [1, 0, 0]])  # 4 (image, object) pairs
    y = _with_objects([[1, 0, 0], [0, 0, 1], [0, 1, 0]])  # kept: (0, 0), (1, 2); object 1 added in 2
    cf = Counterfactual(original=x, counterfactual=y, difference=(y - x)[:, :1], target=torch.ones(3).long(),
                        prob_original=torch.zeros(3), prob_counterfactual=torch.ones(3))
    out = foreign_object_preservation(cf, PixelDetector())
    assert (out["n_pairs"], out["n_preserved"], out["fop"]) == (4, 2, 0.5)
    assert out["per_object"] == {"pacemaker": 0.5, "electrodes": 0.0, "marker": 1.0}
    # ground truth says image 2 also had electrodes (the detector missed them in x): 5 pairs, 3 kept
    gt = torch.tensor([[1, 1, 0], [0, 0, 1], [1, 1, 0]]).float()
    out = foreign_object_preservation_gt(cf, PixelDetector(), gt)
    assert (out["n_pairs"], out["n_preserved"]) == (5, 3)
    with pytest.raises(ShapeError):
        foreign_object_preservation_gt(cf, PixelDetector(), gt[:, :2])


# ----------------------------------------------------------------------------- FID


def _feats(a: np.ndarray) -> torch.Tensor:  # [N, D] features as [N, D, 1, 1] "images"
    return torch.from_numpy(a).float().view(*a.shape, 1, 1)


def test_fid_identical_sets_is_zero_and_shift_is_squared_norm():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 4)) @ rng.standard_normal((4, 4))  # correlated Gaussian features
    fid = FID(MeanLogit())  # domain features: identity (flatten)
    fid.update(_feats(a[:100]), real=True)
    fid.update(_feats(a[100:]), real=True)  # streaming in two batches
    fid.update(_feats(a), real=False)
    res = fid.compute()
    assert abs(res.fid) < 1e-3 and res.extractor == "domain:MeanLogit" and res.n_real == 300
    # identical covariance, means differ by m: FID = ||m||^2 exactly
    m = np.array([0.5, -1.0, 2.0, 0.0])
    fid = FID(MeanLogit())
    fid.update(_feats(a), real=True)
    fid.update(_feats(a + m), real=False)
    assert fid.compute().fid == pytest.approx(float(m @ m), rel=1e-3)
    # scaled about the mean by s: FID = (1 - s)^2 Tr(C)
    s, mu = 0.5, a.mean(0)
    fid = FID(MeanLogit())
    fid.update(_feats(a), real=True)
    fid.update(_feats(mu + s * (a - mu)), real=False)
    assert fid.compute().fid == pytest.approx((1 - s) ** 2 * np.trace(np.cov(a, rowvar=False)), rel=1e-3)


def test_fid_between_gaussians_matches_closed_form():
    # N(0, diag(1, 4)) vs N((1, 0), diag(4, 1)): FID = 1 + (1 - 2)^2 + (2 - 1)^2 = 3
    g = torch.Generator().manual_seed(0)
    real = torch.randn(20000, 2, generator=g) * torch.tensor([1.0, 2.0])
    fake = torch.randn(20000, 2, generator=g) * torch.tensor([2.0, 1.0]) + torch.tensor([1.0, 0.0])
    fid = FID(lambda x: x.flatten(1), name="identity")
    fid.update(real.view(-1, 2, 1, 1), real=True)
    fid.update(fake.view(-1, 2, 1, 1), real=False)
    res = fid.compute()
    assert res.extractor == "identity"
    assert res.fid == pytest.approx(3.0, abs=0.1)


def test_fid_errors(tmp_path, monkeypatch):
    fid = FID(MeanLogit())
    fid.update(const([0.0]), real=True)
    with pytest.raises(DataError, match="at least 2 real"):
        fid.compute()
    with pytest.raises(ValueError, match="extractor"):
        FID("vgg")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError, match=r"pt_inception-2015-12-05-6726825d\.pth") as e:
        FID("inception")
    assert str(tmp_path / "hub" / "checkpoints") in str(e.value)
    with pytest.raises(WeightsNotFoundError, match="nothere.pth"):
        FID("inception", inception_weights=tmp_path / "nothere.pth")


def test_fid_inception_loads_a_local_weights_file(tmp_path):
    # a randomly initialised FID-Inception state dict stands in for the real file: checks the
    # local-file path builds pytorch-fid's network without a download and takes grayscale input
    from pytorch_fid import inception as pi

    net = pi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b, net.Mixed_5c = pi.FIDInceptionA(192, 32), pi.FIDInceptionA(256, 64)
    net.Mixed_5d = pi.FIDInceptionA(288, 64)
    net.Mixed_6b, net.Mixed_6c = pi.FIDInceptionC(768, 128), pi.FIDInceptionC(768, 160)
    net.Mixed_6d, net.Mixed_6e = pi.FIDInceptionC(768, 160), pi.FIDInceptionC(768, 192)
    net.Mixed_7b, net.Mixed_7c = pi.FIDInceptionE_1(1280), pi.FIDInceptionE_2(2048)
    path = tmp_path / "pt_inception.pth"
    torch.save(net.state_dict(), path)
    fid = FID("inception", inception_weights=path)
    x = torch.rand(2, 1, R, R) * 2 - 1
    f = fid._features(x)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    assert torch.allclose(f, fid._features(x.repeat(1, 3, 1, 1)))
    assert fid.name == "inception"
    # the same features as pytorch-fid's own wrapper with these weights (its download redirected
    # to the file here, in the test only)
    from unittest import mock

    with mock.patch.object(pi, "load_state_dict_from_url",
                           lambda *a, **k: torch.load(path, map_location="cpu", weights_only=True)):
        ref = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    with torch.no_grad():
        expected = ref(((x + 1) / 2).repeat(1, 3, 1, 1))[0].flatten(1)
    assert torch.allclose(f, expected.double(), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- proximity


def test_l1_and_ssim_known_values():
    x = torch.rand(2, 1, R, R, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    assert torch.equal(l1_distance(x, x), torch.zeros(2))
    a, b = 0.5, -0.2  # constant images: only the luminance term differs from 1
    c1 = (0.01 * 2) ** 2
    assert ssim(const([a]), const([b])).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)
    assert l1_distance(const([a], c=3), const([b], c=3)).item() == pytest.approx(0.7)
    half = torch.zeros(1, 1, 8, 8)
    half[..., :4] = 1
    assert l1_distance(half, torch.zeros_like(half)).item() == 0.5
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    s = ssim(x, noisy)
    assert (s < 0.95).all() and torch.allclose(s, ssim(noisy, x))
    assert ssim(x[..., :8, :8], x[..., :8, :8]).allclose(torch.ones(2))  # smaller than the window
    with pytest.raises(ShapeError):
        ssim(x, x[:1])


# ----------------------------------------------------------------------------- localization


def _square_mask(lo=4, hi=12) -> torch.Tensor:
    m = torch.zeros(1, 1, R, R)
    m[..., lo:hi, lo:hi] = 1
    return m


def test_localization_on_hand_built_maps():
    mask = _square_mask()
    assert auroc(mask, mask).item() == 1.0
    assert ncc(mask, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert auroc(1 - mask, mask).item() == 0.0
    assert ncc(1 - mask, mask).item() == pytest.approx(-1.0, abs=1e-6)
    assert auroc(torch.ones_like(mask), mask).item() == 0.5  # constant map: chance
    assert math.isnan(ncc(torch.ones_like(mask), mask).item())
    assert math.isnan(auroc(mask, torch.zeros_like(mask)).item())  # no positive pixel
    two = mean_localization(torch.cat([mask, 1 - mask]), torch.cat([mask, torch.zeros_like(mask)]))
    assert two == {"ncc": pytest.approx(1.0), "auroc": 1.0, "n": 1}


def test_boundary_band_is_dilation_minus_erosion():
    band = boundary_band(_square_mask(4, 12), width=1)  # 8x8 square: dilated 10x10, eroded 6x6
    assert band.sum().item() == 10 * 10 - 6 * 6
    assert band[0, 0, 8, 8] == 0 and band[0, 0, 3, 8] == 1 and band[0, 0, 4, 8] == 1 and band[0, 0, 5, 8] == 0
    assert boundary_band(_square_mask(4, 12), width=2).sum().item() == 12 * 12 - 4 * 4
    with pytest.raises(ValueError):
        boundary_band(_square_mask(), width=0)


# ----------------------------------------------------------------------------- clinical


class MeanCTR(nn.Module):
    """CTR = 0.5 + 0.25 * mean(x), returned as [B, 1]."""

    def forward(self, x):
        return 0.5 + 0.25 * x.mean((1, 2, 3))[:, None]


def test_clinical_ctr_direction_crossing_and_monotone_path():
    # target 1 (cardiomegaly): CTR 0.4 -> 0.6 (toward, crossed); 0.4 -> 0.45 (toward, not crossed);
    # 0.6 -> 0.55 (away; already on the target side)
    t = torch.linspace(0, 1, 5).view(5, 1, 1, 1, 1)
    start, end = const([-0.4, -0.4, 0.4]), const([0.4, -0.2, 0.2])
    path = start + t * (end - start)  # linear in each query: monotone in CTR
    path[2, 1] = const([-0.8])[0]  # one backward step for query 1
    cf = make_cf([-0.4, -0.4, 0.4], [0.4, -0.2, 0.2], 1, path=path)
    out = clinical_metrics(cf, MeanCTR())
    assert out["toward_target"] == pytest.approx(2 / 3)
    assert out["crossed"] == pytest.approx(1 / 3)
    assert out["reaches_target_side"] == pytest.approx(2 / 3)
    # query 1's path steps back; query 2's path steps consistently away from the target
    assert out["monotone"] == pytest.approx(1 / 3)
    assert out["ctr_change_toward_target"] == pytest.approx((0.2 + 0.05 - 0.05) / 3, abs=1e-6)
    # target 0 (normal) on the same pair reverses the direction
    down = clinical_metrics(make_cf([0.4], [-0.4], 0), MeanCTR())
    assert down["toward_target"] == 1.0 and down["crossed"] == 1.0 and math.isnan(down["monotone"])


# ----------------------------------------------------------------------------- attributes


def test_attribute_preservation_and_time():
    x = _with_objects([[1, 0, 0], [1, 1, 0]])
    y = _with_objects([[1, 0, 0], [0, 1, 0]])
    cf = Counterfactual(original=x, counterfactual=y, difference=(y - x)[:, :1], target=torch.ones(2).long(),
                        prob_original=torch.zeros(2), prob_counterfactual=torch.ones(2),
                        info={"seconds": 3.0})

    class Nuisance(nn.Module):  # "contrast" = mean intensity
        def forward(self, x):
            return x.mean((1, 2, 3))[:, None]

    out = attribute_preservation(cf, fo_detector=PixelDetector(), nuisance_regressor=Nuisance(),
                                 gt_nuisance=Nuisance()(x), nuisance_names=["contrast"])
    assert out["fo_flip"] == {"pacemaker": 0.5, "electrodes": 0.0, "marker": 0.0}
    assert out["fo_prob_change"]["pacemaker"] == pytest.approx(0.5, abs=1e-6)
    assert out["nuisance_change"]["contrast"] == pytest.approx(0.5 * 2 / (R * R), rel=1e-5)
    assert out["nuisance_error"]["contrast"] == pytest.approx(out["nuisance_change"]["contrast"])
    assert out["seconds_per_explanation"] == 1.5  # 3 s for a batch of 2
    assert math.isnan(attribute_preservation(make_cf([0], [0], 1))["seconds_per_explanation"])


# ----------------------------------------------------------------------------- report


def test_evaluate_counterfactuals_summary_and_rows():
    mask = _square_mask()
    diff = torch.cat([mask, 1 - mask])
    b1 = make_cf([-1, -1], [1, -0.5], 1, info={"method": "toy", "seconds": 2.0}, difference=diff)
    b2 = make_cf([-1, -1], [0.5, 0.8], 1, info={"method": "toy"}, difference=torch.cat([mask, mask]))
    gt = [{"index": torch.tensor([10, 11]), "region": torch.cat([mask, mask]),
           "fo_flags": torch.zeros(2, 3)},
          {"index": torch.tensor([12, 13]), "region": torch.cat([mask, mask]),
           "fo_flags": torch.zeros(2, 3)}]
    real = const([0.6, 1.0, 0.4, 0.9])
    summary, rows = evaluate_counterfactuals([b1, b2], classifier=MeanLogit(), oracle=MeanLogit(a=-1.0),
                                             fo_detector=PixelDetector(), ctr_regressor=MeanCTR(),
                                             fid_extractor=MeanLogit(), real_target_images=[real], gt=gt)
    assert summary["n"] == 4 and len(rows) == 4 and summary["methods"] == ["toy"]
    assert summary["validity"] == 0.75 and summary["not_found_rate"] == 0.25
    # the oracle (opposite sign) reaches the target exactly where the classifier does not
    assert summary["oracle_validity"] == 0.25 and summary["oracle_validity_among_valid"] == 0.0
    assert summary["singla_cv"]["n_eligible"] == 4
    assert summary["fid"]["extractor"] == "domain:MeanLogit" and summary["fid"]["n_fake"] == 3
    assert summary["fid"]["n_real"] == 4
    assert summary["localization"]["auroc"] == pytest.approx(0.75)  # 1, 0, 1, 1
    assert summary["fop"]["n_pairs"] == 0 and summary["fop"]["fop"] is None  # NaN -> None
    assert summary["seconds_per_explanation"] == 1.0  # only batch 1 timed: 2 s / 2
    assert [r["index"] for r in rows] == [10, 11, 12, 13]
    assert [r["reached"] for r in rows] == [True, False, True, True]
    assert rows[1]["l1"] == pytest.approx(0.5)
    json.dumps(summary, allow_nan=False)
    json.dumps(rows, allow_nan=False)
    # cardiomegaly: the truth region is the heart-border band; real images may be sample dicts
    heart = _square_mask(4, 12)
    band_map = boundary_band(heart, 2)
    cf = make_cf([-1], [1], 1, difference=band_map)
    summary, _ = evaluate_counterfactuals([cf], classifier=MeanLogit(), gt=[{"heart_mask": heart}],
                                          task="cardiomegaly", band_width=2, fid_extractor=MeanLogit(),
                                          real_target_images=[{"image": real}])
    assert summary["localization"]["auroc"] == 1.0 and "band" in summary["localization"]["region"]
    assert summary["fid"]["n_real"] == 4 and summary["fid"]["fid"] is None  # one fake image: undefined
    with pytest.raises(ValueError, match="real_target_images"):
        evaluate_counterfactuals([b1], classifier=MeanLogit(), fid_extractor=MeanLogit())
