"""LatentProbe: a mock generator whose image IS w, so a linear classifier is linear in w.

Closed forms used below: with image = w (reshaped) and logit = a·x + b, the
classifier's decision boundary in W is the hyperplane a·w + b = 0, so the probe's
unit direction must be ±a/|a|; walking w + λ·α crosses the boundary at
λ = -(a·w + b) / (a·α).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medcf.counterfactual.latent_probe import LatentProbe, LatentProbeConfig, build_latent_probe
from medcf.errors import CheckpointError, MedcfError, NotFittedError, ShapeError

W_DIM, NUM_WS = 16, 3


class IdentityStyleGAN(nn.Module):
    """z -> w = z * scales + offset (anisotropic, so standardisation matters); image = mean over layers of w."""

    z_dim, w_dim, num_ws, img_channels, img_resolution = W_DIM, W_DIM, NUM_WS, 1, 4

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("scales", torch.linspace(0.1, 4.0, W_DIM))
        self.register_buffer("w_avg", torch.randn(W_DIM, generator=g) * 0.1)

    def mapping(self, z, c, truncation_psi=1.0):  # [B, z_dim] -> [B, num_ws, w_dim]
        w = z * self.scales + self.w_avg
        w = self.w_avg.lerp(w, truncation_psi)
        return w.unsqueeze(1).repeat(1, NUM_WS, 1)

    def decode(self, w):  # [B, w_dim] | [B, num_ws, w_dim] -> [B, 1, 4, 4]
        if w.ndim == 3:
            w = w.mean(1)
        return w.reshape(-1, 1, 4, 4)


class LinearClassifier(nn.Module):
    class_names = ("neg", "pos")
    head = "sigmoid"

    def __init__(self, a: torch.Tensor, b: float):
        super().__init__()
        self.lin = nn.Linear(W_DIM, 1)
        with torch.no_grad():
            self.lin.weight.copy_(a.view(1, -1))
            self.lin.bias.fill_(b)

    def forward(self, x):
        return self.lin(x.flatten(1))


class FlattenEncoder:
    """The exact inverse of IdentityStyleGAN.decode for W latents."""

    def encode(self, x):
        return x.flatten(1)


@pytest.fixture(scope="module")
def parts():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(W_DIM, generator=g)
    a[3] = 0.0  # a dimension the classifier ignores
    G = IdentityStyleGAN()
    clf = LinearClassifier(a, b=-float(a @ G.w_avg))  # boundary through the mean: balanced decisions
    return G, clf, a


@pytest.fixture(scope="module")
def fitted(parts):
    G, clf, _ = parts
    return LatentProbe(generator=G, classifier=clf, encoder=FlattenEncoder(),
                       config=LatentProbeConfig.published(n_cs=5)).fit(
        1000, generator=torch.Generator().manual_seed(0), progress=False)


def test_direction_aligns_with_the_true_weight_vector(fitted, parts):
    _, _, a = parts
    probe = fitted.probe
    alpha = probe.directions[1]
    assert abs(alpha.norm().item() - 1) < 1e-5
    assert torch.allclose(probe.directions[0], -alpha)
    cos = float(alpha @ a / a.norm())
    assert cos > 0.95, cos
    # the decisions are an exact linear function of w: a good probe is almost always right
    assert probe.accuracy > 0.95
    assert probe.C > 0 and probe.n_samples == 1000


def test_explain_latents_flips_every_decision_at_the_closed_form_lambda(fitted, parts):
    G, clf, a = parts
    w = G.mapping(torch.randn(6, W_DIM, generator=torch.Generator().manual_seed(5)), None)[:, 0]
    with torch.no_grad():
        before = clf(G.decode(w))[:, 0] > 0
    cf = fitted.explain_latents(w, target=None)
    with torch.no_grad():
        after = clf(cf.counterfactual)[:, 0] > 0
    assert (before != after).all()
    assert cf.flipped.all() and all(cf.info["found"])
    assert torch.equal(cf.target, (~before).long())
    # λ at the crossing: a·(w + λ·s·α) + b = 0 with s = ±1 toward the target
    alpha = fitted.probe.directions[1]
    b = clf.lin.bias.item()
    lam_true = (-(w @ a + b) / (a @ alpha)).abs()
    sigma = fitted.probe.sigma[1].item()
    tol = fitted.config.step_size * sigma / 2 ** fitted.config.refine_steps + 1e-4
    assert torch.allclose(torch.tensor(cf.info["lambda"]), lam_true, atol=tol)
    assert cf.info["method"] == "latent-probe" and cf.info["inversion"] == "latents"
    assert cf.path.shape[1:] == (6, 1, 4, 4) and cf.path_probs.shape[1] == 6
    # the difference map is counterfactual - G(w)
    assert torch.allclose(cf.difference, cf.counterfactual - G.decode(w), atol=1e-6)


def test_explain_inverts_with_the_encoder_and_moves_only_selected_layers(parts, fitted):
    G, clf, _ = parts
    w = G.mapping(torch.randn(4, W_DIM, generator=torch.Generator().manual_seed(7)), None)[:, 0]
    x = G.decode(w)
    cf_all = fitted.explain(x, target=1)
    assert cf_all.info["inversion"] == "encoder"
    assert max(cf_all.info["inversion_l1"]) < 1e-6  # the encoder is exact here
    one = LatentProbe(generator=G, classifier=clf, encoder=FlattenEncoder(),
                      config=LatentProbeConfig.published(layers=(0,), max_lambda=40.0))
    one.probe = fitted.probe
    cf_one = one.explain(x, target=1)
    # the image averages the 3 layers: moving one layer needs 3x the distance
    need = ~torch.tensor(cf_all.info["lambda"]).eq(0)
    ratio = torch.tensor(cf_one.info["lambda"])[need] / torch.tensor(cf_all.info["lambda"])[need]
    assert torch.allclose(ratio, torch.full_like(ratio, 3.0), rtol=0.05)
    # layers 1 and 2 stay where the inversion put them
    assert torch.equal(cf_one.latents[:, 1:], w.unsqueeze(1).expand(-1, 2, -1))


def _with_config(fitted, parts, encoder=None, **fields) -> LatentProbe:
    G, clf, _ = parts
    probe = LatentProbe(generator=G, classifier=clf, encoder=encoder, config=LatentProbeConfig.published(**fields))
    probe.probe = fitted.probe
    return probe


def _lambda_to_reach(log_odds_now: torch.Tensor, level: float, a: torch.Tensor, alpha: torch.Tensor):
    """Distance along ±α (in w units) at which the target log-odds rise from log_odds_now to level."""
    return (level - log_odds_now) / (a @ alpha).abs()


def test_take_at_moves_the_counterfactual_to_the_higher_probability(fitted, parts):
    G, clf, a = parts
    w = G.mapping(torch.randn(6, W_DIM, generator=torch.Generator().manual_seed(5)), None)[:, 0]
    with torch.no_grad():
        s = clf(G.decode(w))[:, 0]
    target = (s < 0).long()
    s_target = torch.where(target == 1, s, -s)  # log-odds of the target now (< 0)
    cf = _with_config(fitted, parts, take_at=0.99, stop_probability=0.9).explain_latents(w, target)
    assert all(cf.info["found"]) and cf.flipped.all()
    assert (cf.prob_counterfactual >= 0.99).all() and (cf.prob_counterfactual < 0.995).all()
    lam_true = _lambda_to_reach(s_target, torch.logit(torch.tensor(0.99)).item(), a, fitted.probe.directions[1])
    tol = fitted.config.step_size * fitted.probe.sigma[1].item() / 2 ** fitted.config.refine_steps + 1e-4
    assert torch.allclose(torch.tensor(cf.info["lambda"]), lam_true, atol=tol)
    with pytest.raises(ValueError, match="take_at"):
        LatentProbeConfig(take_at=0.4)


class HalfEncoder:
    """An inexact inversion: G(encode(x)) = x / 2, so half of the image is lost."""

    def encode(self, x):
        return x.flatten(1) / 2


def test_residual_frames_add_the_generator_change_to_the_input(fitted, parts):
    G, clf, a = parts
    x = 0.05 * torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        s = clf(x)[:, 0]
    target = (s < 0).long()
    generated = _with_config(fitted, parts, encoder=HalfEncoder()).explain(x, target)
    residual = _with_config(fitted, parts, encoder=HalfEncoder(), compose="residual").explain(x, target)
    # generated: the λ = 0 frame is the lossy inversion; residual: it is the input itself
    assert torch.allclose(generated.reconstruction, x / 2, atol=1e-6)
    assert torch.allclose(residual.reconstruction, x, atol=1e-6)
    assert residual.info["inversion_l1"] == pytest.approx(generated.info["inversion_l1"])
    # residual counterfactual = x + (G(w_cf) - G(w_0)), the move along α, reshaped
    move = residual.latents[:, 0] - x.flatten(1) / 2  # [B, w_dim]
    assert residual.counterfactual.abs().max() < 1  # no clipping in this example
    assert torch.allclose(residual.counterfactual, x + move.view(-1, 1, 4, 4), atol=1e-5)
    assert torch.allclose(residual.difference, residual.counterfactual - x, atol=1e-5)
    # the classifier judged the composed frames: the crossing follows from x, not from x / 2
    s_target = torch.where(target == 1, s, -s)
    lam_true = _lambda_to_reach(s_target, 0.0, a, fitted.probe.directions[1])
    tol = fitted.config.step_size * fitted.probe.sigma[1].item() / 2 ** fitted.config.refine_steps + 1e-4
    assert torch.allclose(torch.tensor(residual.info["lambda"]), lam_true, atol=tol)
    assert residual.flipped.all()
    with pytest.raises(ValueError, match="compose"):
        LatentProbeConfig(compose="paste")


def test_unreachable_target_stops_with_a_reason(parts, fitted):
    G, clf, _ = parts
    w = G.mapping(torch.randn(2, W_DIM, generator=torch.Generator().manual_seed(9)), None)[:, 0]
    tiny = LatentProbe(generator=G, classifier=clf, config=LatentProbeConfig.published(max_lambda=0.2, step_size=0.1))
    tiny.probe = fitted.probe
    with torch.no_grad():
        s = clf(G.decode(w))[:, 0]
    cf = tiny.explain_latents(w, target=(s < 0).long())  # each toward the other class
    # closed-form distance to the boundary, in σ units along α
    lam_needed = (s.abs() / (clf.lin.weight[0] @ fitted.probe.directions[1]).abs()) / fitted.probe.sigma[1]
    assert (lam_needed > 0.2 + 1e-3).all()  # these two points lie farther than max_lambda
    assert cf.info["found"] == [False, False]
    assert cf.info["stop_reason"] == ["max_lambda", "max_lambda"]
    assert not cf.flipped.any()
    assert (cf.prob_counterfactual > cf.info["prob_reconstruction"][0] * 0).all()


def test_not_fitted_and_bad_inputs(parts):
    G, clf, _ = parts
    probe = LatentProbe(generator=G, classifier=clf)
    with pytest.raises(NotFittedError, match="fit"):
        probe.explain(torch.zeros(1, 1, 4, 4), target=1)
    with pytest.raises(NotFittedError):
        probe.explain_latents(torch.zeros(1, W_DIM), target=1)
    with pytest.raises(NotFittedError):
        probe.save("unused")
    with pytest.raises(ValueError, match="layers"):
        LatentProbe(generator=G, classifier=clf, config=LatentProbeConfig(layers=(5,)))
    with pytest.raises(TypeError, match="mapping"):
        LatentProbe(generator=object(), classifier=clf)


def test_no_inversion_and_wrong_shapes(parts, fitted):
    G, clf, _ = parts
    bare = LatentProbe(generator=G, classifier=clf)
    bare.probe = fitted.probe
    with pytest.raises(MedcfError, match="encoder or a projector"):
        bare.explain(torch.zeros(1, 1, 4, 4), target=1)
    with pytest.raises(ShapeError, match="4x4"):
        fitted.explain(torch.zeros(1, 1, 8, 8), target=1)
    with pytest.raises(ShapeError, match="latents"):
        fitted.explain_latents(torch.zeros(2, 5), target=1)


def test_single_decision_cannot_be_probed(parts):
    G, _, a = parts
    always = LinearClassifier(a * 0, b=5.0)  # every image is "pos"
    with pytest.raises(MedcfError, match="classified as class 1"):
        LatentProbe(generator=G, classifier=always).fit(100, generator=torch.Generator().manual_seed(0),
                                                        progress=False)


def test_save_load_round_trip_and_generator_check(tmp_path, parts, fitted):
    G, clf, _ = parts
    fitted.save(tmp_path / "probe")
    loaded = LatentProbe.load_probe(tmp_path / "probe", generator=G, classifier=clf, config=fitted.config)
    for k in ("directions", "sigma", "mean", "std", "coef", "intercept"):
        assert torch.equal(getattr(loaded.probe, k), getattr(fitted.probe, k)), k
    assert loaded.probe.accuracy == fitted.probe.accuracy and loaded.probe.C == fitted.probe.C
    w = G.mapping(torch.randn(2, W_DIM, generator=torch.Generator().manual_seed(1)), None)[:, 0]
    assert torch.equal(loaded.explain_latents(w, 1).counterfactual, fitted.explain_latents(w, 1).counterfactual)
    other = IdentityStyleGAN(seed=1)  # different weights: a different generator
    with pytest.raises(CheckpointError, match="fitted for generator"):
        LatentProbe.load_probe(tmp_path / "probe", generator=other, classifier=clf)
    with pytest.raises(CheckpointError, match="not a saved latent probe"):
        LatentProbe.load_probe(tmp_path, generator=G, classifier=clf)


def test_build_latent_probe_needs_a_generator_checkpoint(tmp_path, parts):
    _, clf, _ = parts
    with pytest.raises(CheckpointError, match="not found"):
        build_latent_probe(tmp_path / "missing", clf)
