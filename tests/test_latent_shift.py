"""medcf.counterfactual.latent_shift: analytic toys with closed-form answers, stop rules, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medcf.counterfactual import LatentShift, LatentShiftConfig
from medcf.errors import ShapeError
from medcf.generators.autoencoder import VAE, AutoencoderConfig

D = 16  # toy images are [B, 1, 4, 4]; the identity "autoencoder" has a 16-d latent


class Identity(nn.Module):
    """encode = flatten, decode = reshape (+ an optional constant offset)."""

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.offset = offset

    def encode(self, x):
        return x.flatten(1)

    def decode(self, z):
        return z.view(-1, 1, 4, 4) + self.offset


def linear_classifier(w: np.ndarray, b: float, k: int = 1) -> nn.Module:
    """K == 1: logit = w.x + b.  K == 2: logits (0, w.x + b), so the class-1 log-odds is w.x + b."""
    lin = nn.Linear(D, k)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[k - 1] = torch.tensor(w, dtype=torch.float32)
        lin.bias[k - 1] = b
    return nn.Sequential(nn.Flatten(), lin)


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    w = rng.normal(size=D)
    b = -0.3
    x = rng.uniform(-0.5, 0.5, size=(3, D))
    return w, b, x


def closed_form_lambda(w, b, x_row, target: int, threshold: float = 0.5) -> float:
    """λ at which the target's log-odds reaches logit(threshold) moving along ±w/|w|² (1 per unit)."""
    s0 = float(w @ x_row + b)
    s0 = s0 if target == 1 else -s0
    return math.log(threshold / (1 - threshold)) - s0


def as_images(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32).view(-1, 1, 4, 4)


def config(**kw) -> LatentShiftConfig:
    """The published method (closed forms below are for it), fine steps, no budget."""
    base = dict(step_size=0.1, max_change=None, refine_steps=12, stop_probability=None)
    base.update(kw)
    return LatentShiftConfig.published(**base)


# ----------------------------------------------------------------------------- closed form


@pytest.mark.parametrize("target", [0, 1])
@pytest.mark.parametrize("k", [1, 2])
def test_moves_along_the_weight_vector_and_flips_at_the_closed_form_lambda(toy, target, k):
    w, b, x = toy
    ls = LatentShift(autoencoder=Identity(), classifier=linear_classifier(w, b, k),
                     config=config(threshold=0.7))
    xi = as_images(x)
    cf = ls.explain(xi, target=target)
    sign = 1.0 if target == 1 else -1.0
    unit = sign * w / (w @ w)  # d = g / |g|²: one λ unit raises the log-odds by one
    for i in range(3):
        lam_star = max(0.0, closed_form_lambda(w, b, x[i], target, 0.7))
        assert cf.info["found"][i]
        assert cf.info["lambda"][i] == pytest.approx(lam_star, abs=0.1 / 2**12 + 1e-5)
        moved = cf.counterfactual[i].flatten().double().numpy() - x[i]
        np.testing.assert_allclose(moved, cf.info["lambda"][i] * unit, atol=1e-5)
        assert float(cf.prob_counterfactual[i]) >= 0.7 - 1e-6
        assert float(cf.prob_counterfactual[i]) == pytest.approx(0.7, abs=1e-3)
    # the probability on the input is the closed form too
    s0 = sign * (x @ w + b)
    np.testing.assert_allclose(cf.prob_original.numpy(), 1 / (1 + np.exp(-s0)), rtol=1e-5)


def test_take_at_moves_the_counterfactual_further_but_judges_at_the_threshold(toy):
    """take_at=0.95: the counterfactual sits at the closed-form λ for p=0.95; flipped uses 0.5."""
    w, b, x = toy
    ls = LatentShift(autoencoder=Identity(), classifier=linear_classifier(w, b),
                     config=config(take_at=0.95))
    cf = ls.explain(as_images(x), target=1)
    for i in range(3):
        lam_star = max(0.0, closed_form_lambda(w, b, x[i], 1, 0.95))
        assert cf.info["lambda"][i] == pytest.approx(lam_star, abs=0.1 / 2**12 + 1e-5)
        assert float(cf.prob_counterfactual[i]) == pytest.approx(0.95, abs=1e-3)
    assert cf.threshold == 0.5 and bool(cf.flipped.all())
    with pytest.raises(ValueError, match="take_at"):
        LatentShiftConfig(threshold=0.6, take_at=0.55)


def test_path_frames_follow_the_line_with_closed_form_probabilities(toy):
    w, b, x = toy
    ls = LatentShift(autoencoder=Identity(), classifier=linear_classifier(w, b),
                     config=config(stop_probability=0.95, step_size=0.25))
    cf = ls.explain(as_images(x[:1]), target=1)
    s0 = float(w @ x[0] + b)
    t = cf.info["n_frames"][0]
    assert cf.path.shape == (t, 1, 1, 4, 4) and cf.path_probs.shape == (t, 1)
    for k in range(t):
        frame = cf.path[k, 0].flatten().double().numpy()
        np.testing.assert_allclose(frame, x[0] + 0.25 * k * w / (w @ w), atol=1e-5)
        assert float(cf.path_probs[k, 0]) == pytest.approx(1 / (1 + math.exp(-(s0 + 0.25 * k))), abs=1e-5)
    # it stops at the first frame with p >= 0.95
    assert float(cf.path_probs[-1, 0]) >= 0.95 > float(cf.path_probs[-2, 0])
    assert cf.info["stop_reason"] == ["reached"]


def test_away_direction_is_the_move_toward_the_other_class(toy):
    w, b, x = toy
    clf = linear_classifier(w, b)
    away = LatentShift(autoencoder=Identity(), classifier=clf, config=config(direction="away"))
    toward = LatentShift(autoencoder=Identity(), classifier=clf, config=config())
    xi = as_images(x)
    a, t = away.explain(xi, target=1), toward.explain(xi, target=0)
    assert a.target.tolist() == [0, 0, 0] and a.info["away_from"] == [1, 1, 1]
    assert torch.allclose(a.counterfactual, t.counterfactual)
    # away from class 1 = λ along -w until w.x + b = 0
    for i in range(3):
        assert a.info["lambda"][i] == pytest.approx(max(0.0, float(w @ x[i] + b)), abs=1e-3)


def test_batched_queries_each_get_their_own_target_and_lambda(toy):
    w, b, x = toy
    ls = LatentShift(autoencoder=Identity(), classifier=linear_classifier(w, b), config=config())
    xi = as_images(x)
    targets = torch.tensor([1, 0, 1])
    cf = ls.explain(xi, target=targets)
    assert cf.target.tolist() == [1, 0, 1]
    for i in range(3):
        solo = ls.explain(xi[i:i + 1], target=int(targets[i]))
        assert cf.info["lambda"][i] == pytest.approx(solo.info["lambda"][0], abs=1e-6)
        assert torch.allclose(cf.counterfactual[i], solo.counterfactual[0], atol=1e-6)
        lam = max(0.0, closed_form_lambda(w, b, x[i], int(targets[i])))
        assert cf.info["lambda"][i] == pytest.approx(lam, abs=1e-3)


def test_query_already_at_target_keeps_the_reconstruction(toy):
    w, b, x = toy
    s = x @ w + b
    i = int(np.argmax(s))
    assert s[i] > 0  # the classifier already says class 1
    ls = LatentShift(autoencoder=Identity(), classifier=linear_classifier(w, b), config=config())
    cf = ls.explain(as_images(x[i:i + 1]), target=1)
    assert cf.info["found"] == [True] and cf.info["lambda"] == [0.0]
    assert torch.equal(cf.counterfactual, cf.reconstruction)


def test_target_none_flips_the_current_decision(toy):
    w, b, x = toy
    ls = LatentShift(autoencoder=Identity(), classifier=linear_classifier(w, b), config=config())
    cf = ls.explain(as_images(x), target=None)
    predicted = (x @ w + b > 0).astype(int)
    assert cf.target.tolist() == (1 - predicted).tolist()
    assert cf.flipped.all()


def test_class_name_target_with_softmax_classifier(toy):
    w, b, x = toy
    clf = linear_classifier(w, b, k=2)
    clf.class_names = ("normal", "cardiomegaly")
    cf = LatentShift(autoencoder=Identity(), classifier=clf, config=config()).explain(
        as_images(x), target="cardiomegaly")
    assert cf.target.tolist() == [1, 1, 1] and cf.info["class_names"] == ["normal", "cardiomegaly"]
    assert cf.flipped.all()


def test_multilabel_head_moves_one_label_on_its_own_sigmoid(toy):
    w, b, x = toy
    lin = nn.Linear(D, 3)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[2] = torch.tensor(w, dtype=torch.float32)
        lin.bias[2] = b
        lin.bias[0] = 5.0  # other labels are irrelevant to label 2's sigmoid
    clf = nn.Sequential(nn.Flatten(), lin)
    clf.head = "multilabel"
    cf = LatentShift(autoencoder=Identity(), classifier=clf, config=config()).explain(as_images(x), target=2)
    for i in range(3):
        assert cf.info["lambda"][i] == pytest.approx(max(0.0, -float(w @ x[i] + b)), abs=1e-3)
    np.testing.assert_allclose(cf.prob_original.numpy(), 1 / (1 + np.exp(-(x @ w + b))), rtol=1e-5)


# ----------------------------------------------------------------------------- iterative vs once


class Parabola(nn.Module):
    """Images [B, 1, 1, 2] = (u, v); class-1 logit v - u² (log-odds surface curves)."""

    def forward(self, x):
        u, v = x.flatten(1)[:, 0], x.flatten(1)[:, 1]
        return (v - u**2).unsqueeze(1)


class Identity2(nn.Module):
    def encode(self, x):
        return x.flatten(1)

    def decode(self, z):
        return z.view(-1, 1, 1, 2)


def test_iterative_ascent_follows_the_curve_where_one_gradient_cannot():
    # at (u, v) = (1, -2) the gradient of v - u² is (-2, 1); on the line (1 - 2s, -2 + s)
    # the logit is -3 + 5s - 4s², whose maximum (s = 5/8) is -1.4375 < 0: Cohen's single
    # gradient never flips; re-taking the gradient walks u -> 0 while v keeps rising.
    x = torch.tensor([[[[1.0, -2.0]]]])
    once = LatentShift(autoencoder=Identity2(), classifier=Parabola(),
                       config=config(step_size=0.05, max_steps=400, patience=3))
    cf = once.explain(x, target=1)
    assert cf.info["found"] == [False] and cf.info["stop_reason"] == ["no_progress"]
    best = 1 / (1 + math.exp(1.4375))
    assert float(cf.prob_counterfactual[0]) == pytest.approx(best, abs=2e-3)
    assert not cf.flipped.any()

    iterative = LatentShift(autoencoder=Identity2(), classifier=Parabola(),
                            config=config(step_size=0.05, max_steps=400, iterative=True))
    cf2 = iterative.explain(x, target=1)
    assert cf2.info["found"] == [True] and cf2.flipped.all()
    u, v = cf2.counterfactual.flatten().tolist()
    assert v - u**2 == pytest.approx(0.0, abs=1e-3)  # refined onto the decision boundary
    assert abs(u) < 0.5  # followed the curve toward the parabola's axis


# ----------------------------------------------------------------------------- stop rules


def test_pixel_budget_stops_before_the_flip(toy):
    w, b, x = toy
    xi = as_images(x[:1])
    lam_star = closed_form_lambda(w, b, x[0], 1)
    if lam_star <= 0:  # make the query need a move
        xi, lam_star = -xi, closed_form_lambda(w, b, -x[0], 1)
    per_lambda = np.abs(w).mean() / (w @ w) / 2.0  # mean |Δpixel| / range width per λ unit
    budget = 0.5 * lam_star * per_lambda
    ls = LatentShift(autoencoder=Identity(), classifier=linear_classifier(w, b),
                     config=config(max_change=budget))
    cf = ls.explain(xi, target=1)
    assert cf.info["found"] == [False] and cf.info["stop_reason"] == ["budget"]
    assert not cf.flipped.any()
    change = (cf.path[:, 0] - cf.reconstruction[0]).abs().flatten(1).mean(1) / 2.0
    assert float(change.max()) <= budget + 1e-7
    expected_frames = math.floor(budget / (0.1 * per_lambda)) + 1  # frame 0 plus steps inside
    assert cf.info["n_frames"] == [expected_frames]


def test_max_steps_and_stop_at_threshold(toy):
    w, b, x = toy
    xi = as_images(-np.abs(x[:1]) * np.sign(w))  # every pixel pushes toward class 0
    lam_star = closed_form_lambda(w, b, -np.abs(x[0]) * np.sign(w), 1)
    ls = LatentShift(autoencoder=Identity(), classifier=linear_classifier(w, b),
                     config=config(max_steps=3))
    cf = ls.explain(xi, target=1)
    assert lam_star > 0.3 and cf.info["stop_reason"] == ["max_steps"] and cf.info["n_frames"] == [4]
    ls = LatentShift(autoencoder=Identity(), classifier=linear_classifier(w, b), config=config())
    cf = ls.explain(xi, target=1)
    assert cf.info["n_frames"] == [math.ceil(lam_star / 0.1) + 1]  # up to the first frame past 0.5
    # a stop probability below the threshold stops at the threshold too
    ls = LatentShift(autoencoder=Identity(), classifier=linear_classifier(w, b),
                     config=config(stop_probability=0.2))
    assert ls.explain(xi, target=1).info["n_frames"] == [math.ceil(lam_star / 0.1) + 1]


# ----------------------------------------------------------------------------- references


def test_difference_relative_to_reconstruction_or_input(toy):
    w, b, x = toy
    xi = as_images(x)
    clf = linear_classifier(w, b)
    rec = LatentShift(autoencoder=Identity(offset=0.1), classifier=clf, config=config())
    inp = LatentShift(autoencoder=Identity(offset=0.1), classifier=clf, config=config(reference="input"))
    a, c = rec.explain(xi, target=1), inp.explain(xi, target=1)
    assert a.info["reference"] == "reconstruction" and c.info["reference"] == "input"
    assert torch.allclose(a.reconstruction, xi + 0.1)
    assert torch.allclose(c.difference - a.difference, torch.full_like(a.difference, 0.1), atol=1e-5)
    assert torch.allclose(a.difference, a.counterfactual - a.reconstruction, atol=1e-6)


@pytest.mark.parametrize("iterative", [False, True])
def test_residual_frames_add_the_decoder_change_to_the_input(toy, iterative):
    """compose='residual': frames are x + D(z) - D(z0), so a lossy decoder's error cancels."""
    w, b, x = toy
    xi = as_images(x)
    clf = linear_classifier(w, b)
    lossy = Identity(offset=0.1)  # D(E(x)) = x + 0.1
    gen = LatentShift(autoencoder=lossy, classifier=clf, config=config()).explain(xi, target=1)
    res = LatentShift(autoencoder=lossy, classifier=clf,
                      config=config(compose="residual", iterative=iterative)).explain(xi, target=1)
    assert torch.allclose(gen.reconstruction, xi + 0.1) and torch.allclose(res.reconstruction, xi)
    assert torch.allclose(res.prob_original, torch.tensor(res.info["prob_reconstruction"]))
    unit = w / (w @ w)
    assert res.counterfactual.abs().max() < 1  # no clipping in this example
    for i in range(3):
        # residual: the classifier judges x + λ·unit, so the crossing is the closed form at x ...
        lam = max(0.0, closed_form_lambda(w, b, x[i], 1))
        assert res.info["lambda"][i] == pytest.approx(lam, abs=0.1 / 2**12 + 1e-5)
        moved = res.counterfactual[i].flatten().double().numpy() - x[i]
        np.testing.assert_allclose(moved, res.info["lambda"][i] * unit, atol=1e-5)
        # ... generated: it judges x + 0.1 + λ·unit
        lam_gen = max(0.0, closed_form_lambda(w, b, x[i] + 0.1, 1))
        assert gen.info["lambda"][i] == pytest.approx(lam_gen, abs=0.1 / 2**12 + 1e-5)
    assert torch.allclose(res.difference, res.counterfactual - xi, atol=1e-6)
    with pytest.raises(ValueError, match="compose"):
        LatentShiftConfig(compose="paste")


def test_a_reconstruction_that_already_flips_is_flagged(toy):
    w, b, x = toy
    s = x @ w + b
    i = int(np.argmin(np.abs(s)))  # the query closest to the boundary
    # offset the decoder so that D(E(x)) = x + c crosses it: c * sum(w) = 2 |s|
    offset = 2 * abs(float(s[i])) / float(w.sum())
    target = 1 if s[i] < 0 else 0
    offset = offset if target == 1 else -offset
    ls = LatentShift(autoencoder=Identity(offset=offset), classifier=linear_classifier(w, b), config=config())
    cf = ls.explain(as_images(x[i:i + 1]), target=target)
    assert float(cf.prob_original[0]) < 0.5 <= cf.info["prob_reconstruction"][0]
    assert cf.info["reconstruction_flipped"] == [True] and cf.info["lambda"] == [0.0]
    plain = LatentShift(autoencoder=Identity(), classifier=linear_classifier(w, b), config=config())
    assert plain.explain(as_images(x[i:i + 1]), target=target).info["reconstruction_flipped"] == [False]


# ----------------------------------------------------------------------------- real backbones


def test_with_a_vae_and_a_small_cnn_classifier():
    vae = VAE(AutoencoderConfig(resolution=32, widths=(4, 8), latent_size=8, latent_dim=4), seed=0)
    clf = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    vae.train()
    clf.train()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    ls = LatentShift(autoencoder=vae, classifier=clf,
                     config=LatentShiftConfig(max_steps=8, iterative=True, max_change=None))
    cf = ls.explain(x, target=torch.tensor([0, 1]))
    t = cf.path.shape[0]
    assert cf.path.shape == (t, 2, 1, 32, 32) and cf.path_probs.shape == (t, 2)
    assert cf.counterfactual.shape == x.shape and cf.difference.shape == (2, 1, 32, 32)
    assert cf.latents.shape == (2, 4, 8, 8)
    assert torch.isfinite(cf.path).all() and len(cf.info["found"]) == 2
    assert cf.info["method"] == "latent-shift" and cf.info["settings"]["iterative"] is True
    assert cf.info["seconds"] > 0
    # modes restored, no parameter gradients left behind
    assert vae.training and clf.training
    assert all(p.grad is None for p in [*vae.parameters(), *clf.parameters()])
    # path probabilities never fall below the first frame's by more than rounding: each kept frame
    # is part of an ascent (no progress -> stop)
    assert cf.path_probs.isfinite().all()


# ----------------------------------------------------------------------------- errors


def test_wrong_shapes_and_options_raise_clear_errors(toy):
    w, b, _ = toy
    vae = VAE(AutoencoderConfig(resolution=32, widths=(4, 8), latent_size=8, latent_dim=4))
    ls = LatentShift(autoencoder=vae, classifier=linear_classifier(w, b))
    with pytest.raises(ShapeError, match=r"autoencoder expects \[B, 1, 32, 32\]"):
        ls.explain(torch.zeros(1, 3, 32, 32), target=1)
    with pytest.raises(ShapeError, match="32x32"):
        ls.explain(torch.zeros(1, 1, 64, 64), target=1)

    class Flat(nn.Module):
        def forward(self, x):
            return x.flatten(1).sum(1)  # [B], not [B, K]

    with pytest.raises(ShapeError, match=r"logits \[B, K\]"):
        LatentShift(autoencoder=Identity(), classifier=Flat()).explain(torch.zeros(1, 1, 4, 4), target=1)
    three = nn.Sequential(nn.Flatten(), nn.Linear(D, 3))
    with pytest.raises(ValueError, match="binary"):
        LatentShift(autoencoder=Identity(), classifier=three,
                    config=LatentShiftConfig(direction="away")).explain(torch.zeros(1, 1, 4, 4), target=1)
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 3\)"):
        LatentShift(autoencoder=Identity(), classifier=three).explain(torch.zeros(1, 1, 4, 4), target=5)
    with pytest.raises(ValueError, match="direction"):
        LatentShiftConfig(direction="sideways")
    with pytest.raises(ValueError, match="stop_probability"):
        LatentShiftConfig(stop_probability=1.0)
    with pytest.raises(TypeError, match="encode"):
        LatentShift(autoencoder=object(), classifier=three)
