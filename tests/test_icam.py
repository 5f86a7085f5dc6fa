"""ICAM backbone, recipe and explainer: shapes (2D and 3D), hand-computed losses, save/load,
exact resume, the attribute swap on an analytic toy and after a short training on an easy toy."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from medcf.counterfactual._common import masked_frames
from medcf.counterfactual.icam import ICAMExplainer, ICAMExplainerConfig
from medcf.errors import MedcfError
from medcf.generators.icam import (
    ICAM,
    ContentDiscriminator,
    ICAMConfig,
    ICAMOutputs,
    ICAMWeights,
    ImageDiscriminator,
    discriminator_losses,
    icam_losses,
    kl_divergence,
)

TINY = dict(resolution=32, width=4, blocks=1, attr_dim=4, attr_width=4, disc_width=4, disc_layers=2)
TINY_RECIPE = dict(batch_size=4, width=4, blocks=1, attr_dim=4, attr_width=4, disc_width=4, disc_layers=2,
                   progress=False, log_every=1, sample_every=2, checkpoint_every=2)
LOG2 = math.log(2.0)


def _synth(n=16, resolution=32, seed=0):
    from medcf.data.synthetic import SynthConfig, SyntheticDataset

    return SyntheticDataset(SynthConfig(resolution=resolution), n=n, seed=seed)


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("kw, word", [({"channels": 2}, "channels"), ({"dims": 4}, "dims"),
                                      ({"resolution": 30}, "divisible"), ({"domain_b": 0}, "differ"),
                                      ({"resolution": 8, "downsample": 1, "disc_layers": 3}, "too small"),
                                      ({"content_noise": -0.1}, "content_noise"), ({"version": 1}, "version 1"),
                                      ({"attr_map": 3}, "attr_map"), ({"attr_map": 32}, "attr_map"),
                                      ({"attr_map": 4, "version": 2}, "version 3")])
def test_config_rejects_bad_values(kw, word):
    with pytest.raises(ValueError, match=word):
        ICAMConfig(**{**TINY, **kw})


def test_shapes_2d():
    cfg = ICAMConfig(**TINY)
    model = ICAM(cfg, seed=0).eval()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    c, a = model.encode(x)
    assert c.shape == (3, cfg.content_channels, 8, 8) and a.shape == (3, 4)
    y = model.decode(c, a)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert model.classify(a).shape == (3,)
    patch, logit = ImageDiscriminator(cfg)(x)
    assert patch.shape == (3, 1, 8, 8) and logit.shape == (3,)
    assert ContentDiscriminator(cfg)(c).shape == (3,)
    with pytest.raises(MedcfError, match="expects"):
        model.encode(torch.zeros(1, 1, 16, 16))


def test_the_same_code_builds_a_3d_model():
    cfg = ICAMConfig(**{**TINY, "resolution": 16, "dims": 3})
    model = ICAM(cfg)
    v = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    out = model(v, v)
    assert out.cross_b.shape == v.shape and out.content_a.shape == (2, cfg.content_channels, 4, 4, 4)
    assert ImageDiscriminator(cfg)(v)[0].shape == (2, 1, 4, 4, 4)


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a, b = ICAM(ICAMConfig(**TINY), seed=2), ICAM(ICAMConfig(**TINY), seed=2)
    assert torch.equal(torch.rand(1), before)
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q)


def test_save_load_round_trip_keeps_the_attribute_statistics(tmp_path):
    model = ICAM(ICAMConfig(**TINY, class_names=("normal", "cardiomegaly")), seed=1).eval()
    model.attr_mean.copy_(torch.arange(8.0).view(2, 4))
    model.save(tmp_path / "m")
    back = ICAM.load(tmp_path / "m")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    (c1, a1), (c2, a2) = model.encode(x), back.encode(x)
    assert torch.equal(c1, c2) and torch.equal(a1, a2) and torch.equal(model.decode(c1, a1), back.decode(c2, a2))
    assert torch.equal(back.attr_mean, model.attr_mean)


def test_a_checkpoint_of_the_old_format_is_a_one_line_error(tmp_path):
    from medcf.errors import CheckpointError

    ICAM(ICAMConfig(**TINY)).save(tmp_path / "m")
    header = json.loads((tmp_path / "m" / "config.json").read_text())
    assert header["config"]["version"] == 3
    del header["config"]["version"]                 # what a version-1 ICAM wrote
    (tmp_path / "m" / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=r"saved-format version 1 .*retrain") as e:
        ICAM.load(tmp_path / "m")
    assert "\n" not in str(e.value)


def test_a_version_2_checkpoint_still_loads(tmp_path):
    # version 3 only added attr_map (0 = version 2's vector code): a version-2 file is the same model
    model = ICAM(ICAMConfig(**TINY), seed=3).eval()
    model.save(tmp_path / "m")
    header = json.loads((tmp_path / "m" / "config.json").read_text())
    header["config"]["version"] = 2
    del header["config"]["attr_map"]                # what a version-2 ICAM wrote
    (tmp_path / "m" / "config.json").write_text(json.dumps(header))
    back = ICAM.load(tmp_path / "m")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert back.config.version == 2 and back.config.attr_map == 0
    assert torch.equal(back.decode(*back.encode(x)), model.decode(*model.encode(x)))


def test_spatial_attribute_code_shapes_step_and_round_trip(tmp_path):
    cfg = ICAMConfig(**{**TINY, "attr_dim": 2, "attr_map": 4})
    assert cfg.code_size == 2 * 4 * 4
    model, di, dc = ICAM(cfg, seed=0), ImageDiscriminator(cfg), ContentDiscriminator(cfg)
    a, b = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    out = model(a, b, generator=torch.Generator().manual_seed(0))
    assert out.mean_a.shape == out.logvar_a.shape == out.mean_cross_b.shape == (2, 32)
    assert out.cross_b.shape == a.shape and model.classify(out.mean_a).shape == (2,)
    assert model.attr_mean.shape == (2, 32)
    icam_losses(out, model, di, dc, a, b, ICAMWeights(fam=1.0))["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval().save(tmp_path / "m")
    back = ICAM.load(tmp_path / "m")
    assert back.config.attr_map == 4 and back.config.version == 3
    assert torch.equal(back.decode(*back.encode(a)), model.decode(*model.encode(a)))
    v = torch.rand(1, 1, 16, 16, 16) * 2 - 1                           # the same code in 3D
    m3 = ICAM(ICAMConfig(**{**TINY, "resolution": 16, "dims": 3, "attr_map": 2}))
    assert m3.encode(v)[1].shape == (1, 4 * 2 ** 3) and m3(v, v).cross_a.shape == v.shape


def test_a_spatial_attribute_changes_the_image_where_it_lies():
    # raising one corner cell of a 4 x 4 attribute map changes the decoded image mostly in that
    # corner (a vector code, tiled, has no place: its change is spread over the image)
    torch.manual_seed(0)
    model = ICAM(ICAMConfig(**{**TINY, "attr_dim": 2, "attr_map": 4}), seed=0).eval()
    c = torch.randn(1, model.config.content_channels, 8, 8)
    a0 = torch.zeros(1, 2, 4, 4)
    a1 = a0.clone()
    a1[:, :, 0, 0] = 1.0
    with torch.no_grad():
        diff = (model.decode(c, a1.flatten(1)) - model.decode(c, a0.flatten(1))).abs()[0, 0]   # [32, 32]
    assert diff[:8, :8].mean() > 5 * diff[-8:, -8:].mean()


def test_the_decoder_reads_the_attribute_at_every_scale():
    # at init, changing only the attribute changes the decoded image, also with the input
    # concatenation cut out (its weights zeroed): the modulated normalisations carry it
    model = ICAM(ICAMConfig(**TINY), seed=0).eval()
    c = torch.randn(2, model.config.content_channels, 8, 8)
    a0, a1 = torch.zeros(2, 4), torch.ones(2, 4)
    with torch.no_grad():
        model.decoder.conv_in.weight[:, -4:].zero_()
        assert (model.decode(c, a0) - model.decode(c, a1)).abs().mean() > 1e-2


def test_content_noise_only_in_training():
    cfg = ICAMConfig(**TINY, content_noise=1.0)
    model = ICAM(cfg, seed=0)
    a, b = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    quiet = ICAM(ICAMConfig(**TINY, content_noise=0.0), seed=0)
    with torch.no_grad():
        noisy_out, quiet_out = model.train()(a, b, generator=g()), quiet.train()(a, b, generator=g())
        assert not torch.allclose(noisy_out.self_a, quiet_out.self_a)
        # eval mode: no noise, the same pass as without it
        assert torch.allclose(model.eval()(a, b, generator=g()).self_a, quiet.eval()(a, b, generator=g()).self_a)


@pytest.mark.parametrize("backbone", ["icam", "cyclegan"])
def test_domains_names_classes_and_saved_meta_of_both_two_domain_models(backbone, tmp_path):
    from medcf.generators.cyclegan import CycleGAN, CycleGANConfig
    from medcf.io import read_header

    model_cls, config_cls, tiny = ((ICAM, ICAMConfig, TINY) if backbone == "icam" else
                                   (CycleGAN, CycleGANConfig, dict(resolution=32, width=4, blocks=1)))
    named = model_cls(config_cls(**tiny, domain_a=2, domain_b=0, class_names=["n", "e", "c"]))
    assert named.config.class_names == ("n", "e", "c")                 # a list becomes a tuple
    assert (named.config.domain_name("a"), named.config.domain_name("b")) == ("c", "n")
    assert [named.domain_of_class(c) for c in range(4)] == ["b", None, "a", None]
    unnamed = model_cls(config_cls(**tiny, domain_a=3, domain_b=1))
    assert (unnamed.config.domain_name("a"), unnamed.config.domain_name("b")) == ("3", "1")
    named.save(tmp_path / "m")
    assert read_header(tmp_path / "m")["meta"] == {"input": {"channels": 1, "resolution": 32,
                                                             "value_range": [-1.0, 1.0]},
                                                   "domains": {"a": "c", "b": "n"}}
    with pytest.raises(ValueError, match=f"^{config_cls.__name__}: domain_a and domain_b must differ, both are 2$"):
        config_cls(**tiny, domain_a=2, domain_b=2)


def test_one_step_has_finite_gradients_everywhere():
    cfg = ICAMConfig(**TINY)
    model, di, dc = ICAM(cfg), ImageDiscriminator(cfg), ContentDiscriminator(cfg)
    a, b = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    out = model(a, b, generator=torch.Generator().manual_seed(0))
    icam_losses(out, model, di, dc, a, b)["total"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    discriminator_losses(out, di, dc, a, b)["d_total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in [*di.parameters(), *dc.parameters()])


def test_the_discriminator_class_head_learns_heart_size():
    # the swapped images' only class signal is the image discriminator's class head; on the
    # patch trunk (GroupNorm, ~10 px receptive field) it stayed at chance on cardiomegaly (here
    # 0.59 after 200 steps), so the generator was never asked to change the heart
    import torch.nn.functional as F

    def load(n, seed):
        ds = _synth(n, seed=seed)
        return (torch.stack([ds[i]["image"] for i in range(n)]),
                torch.tensor([float(ds[i]["label"]) for i in range(n)]))

    (x, y), (xt, yt) = load(256, 0), load(128, 1)
    d = ImageDiscriminator(ICAMConfig(**TINY), seed=0)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    for step in range(200):
        i = torch.randint(0, 256, (16,), generator=torch.Generator().manual_seed(step))
        loss = F.binary_cross_entropy_with_logits(d(x[i])[1], y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = ((d(xt)[1] > 0).float() == yt).float().mean()
    assert 0.2 < float(yt.mean()) < 0.8 and accuracy >= 0.8


# ----------------------------------------------------------------------------- losses


def test_kl_closed_form():
    assert float(kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dimension; KL(N(0, e) || N(0, 1)) = (e - 1 - 1) / 2
    assert float(kl_divergence(torch.ones(3, 4), torch.zeros(3, 4))) == pytest.approx(0.5)
    assert float(kl_divergence(torch.zeros(1, 1), torch.ones(1, 1))) == pytest.approx((math.e - 2) / 2)


class _ConstD(nn.Module):
    """Image discriminator: patch scores 0.5, class logit 0 whatever the input."""

    def forward(self, x):
        return torch.full((x.shape[0], 1, 2, 2), 0.5), torch.zeros(x.shape[0])


def test_icam_losses_by_hand():
    a, b = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    z = torch.zeros(2, 3)
    out = ICAMOutputs(content_a=torch.zeros(2, 5, 2, 2), content_b=torch.zeros(2, 5, 2, 2),
                      mean_a=torch.ones(2, 3), logvar_a=z, mean_b=z, logvar_b=z,
                      self_a=a + 0.1, self_b=b.clone(), cross_b=a, cross_a=b,
                      cycle_a=a.clone(), cycle_b=b - 0.3, mean_cross_b=z, mean_cross_a=z)

    class Model:                            # ICAM's attribute classifier: logit 0 for every code
        def classify(self, code):
            return torch.zeros(code.shape[0])

    t = icam_losses(out, Model(), _ConstD(), lambda c: torch.zeros(c.shape[0]), a, b, ICAMWeights())
    assert float(t["adv"]) == pytest.approx(2 * 0.25)          # (0.5 - 1)^2 on both cross images
    assert float(t["adv_cls"]) == pytest.approx(2 * LOG2)      # BCE(logit 0, y) = log 2
    assert float(t["self_rec"]) == pytest.approx(0.1)
    assert float(t["cycle"]) == pytest.approx(0.3)
    assert float(t["kl"]) == pytest.approx(0.5)                # mean_a = 1: 1/2 per dimension
    assert float(t["cls"]) == pytest.approx(2 * LOG2)         # real a and b codes
    assert float(t["content_adv"]) == pytest.approx(2 * LOG2)  # BCE(0, 0.5) = log 2
    # latent regression: codes of the cross images (0) against the codes put in (no z: the means,
    # b's 0 and a's 1): |0 - 0| + |0 - 1|
    assert float(t["latent"]) == pytest.approx(1.0)
    assert float(t["fam"]) == pytest.approx(0.1)               # |cross_b - self_a| + |cross_a - self_b|
    w = ICAMWeights()
    expected = (w.adv * 0.5 + w.adv_cls * 2 * LOG2 + w.self_rec * 0.1 + w.cycle * 0.3 + w.kl * 0.5
                + w.cls * 2 * LOG2 + w.content_adv * 2 * LOG2 + w.latent * 1.0)
    assert float(t["total"]) == pytest.approx(expected)
    fam = icam_losses(out, Model(), _ConstD(), lambda c: torch.zeros(c.shape[0]), a, b, ICAMWeights(fam=2.0))
    assert float(fam["total"]) == pytest.approx(expected + 2.0 * 0.1)
    with pytest.raises(ValueError, match="fam -1"):
        ICAMWeights(fam=-1.0)
    # with the sampled codes given, the regression targets are those: |0 - 0.5| + |0 - (-0.25)|
    out.z_b, out.z_a = torch.full((2, 3), 0.5), torch.full((2, 3), -0.25)
    assert float(icam_losses(out, Model(), _ConstD(), lambda c: torch.zeros(c.shape[0]), a, b)["latent"]) == \
        pytest.approx(0.75)


def test_discriminator_losses_by_hand():
    a, b = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    out = ICAMOutputs(*(torch.zeros(2, 5, 2, 2),) * 2, *(torch.zeros(2, 3),) * 4,
                      a, b, b, a, a, b, torch.zeros(2, 3), torch.zeros(2, 3))
    t = discriminator_losses(out, _ConstD(), lambda c: torch.zeros(c.shape[0]), a, b)
    assert float(t["d_adv"]) == pytest.approx(0.5 * (0.25 + 0.25 + 0.25 + 0.25))
    assert float(t["d_cls"]) == pytest.approx(2 * LOG2)
    assert float(t["d_content"]) == pytest.approx(2 * LOG2)


# ----------------------------------------------------------------------------- explainer (analytic toy)


class _BrightnessICAM(ICAM):
    """content = x - mean(x), attribute = mean(x) (attr_dim 1), decode = content + attribute."""

    def encode(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        return x - m.view(-1, 1, 1, 1), m

    def decode(self, content, attribute):
        return content + attribute.view(-1, 1, 1, 1)


class _MeanClassifier(nn.Module):
    """Binary softmax, class-1 log-odds = 4 * mean(x)."""

    class_names = ("normal", "cardiomegaly")

    def forward(self, x):
        s = 4 * x.flatten(1).mean(1)
        return torch.stack([torch.zeros_like(s), s], 1)


def _toy(**cfg) -> ICAMExplainer:
    model = _BrightnessICAM(ICAMConfig(**{**TINY, "attr_dim": 1}, class_names=("normal", "cardiomegaly")))
    model.attr_mean.copy_(torch.tensor([[-0.5], [0.5]]))
    model.attr_std.copy_(torch.tensor([[0.1], [0.1]]))
    with torch.no_grad():
        model.attr_classifier.weight.fill_(10.0)
        model.attr_classifier.bias.zero_()
    return ICAMExplainer(icam=model, classifier=_MeanClassifier(), config=ICAMExplainerConfig(**cfg))


def _image(mean: float) -> torch.Tensor:
    x = torch.linspace(-0.2, 0.2, 32 * 32).view(1, 1, 32, 32)
    return x - x.mean() + mean


def test_mean_swap_interpolates_and_stops_at_the_crossing():
    x = _image(-0.25)
    cf = _toy(variance_samples=0).explain(x, target=1)
    # attribute along the path: -0.25 + 0.75 α, α = k / 8; log-odds 4 * attribute >= 0 first at k = 3
    assert cf.info["frame_index"] == [3] and cf.info["alpha_taken"] == [pytest.approx(0.375)]
    assert torch.allclose(cf.counterfactual, x + 0.75 * 0.375, atol=1e-6)
    assert torch.allclose(cf.difference, torch.full((1, 1, 32, 32), 0.75 * 0.375), atol=1e-6)  # cf - x
    assert torch.allclose(cf.path[-1], x + 0.75, atol=1e-6)    # the full swap: the class-1 mean
    assert torch.allclose(cf.latents, torch.tensor([[-0.25 + 0.75 * 0.375]]))
    # ICAM's own decision: sigmoid(10 * attribute) for class 1
    assert cf.info["icam_prob_original"][0] == pytest.approx(1 / (1 + math.exp(2.5)), rel=1e-5)
    assert cf.info["icam_prob_counterfactual"][0] == pytest.approx(1 / (1 + math.exp(-10 * 0.03125)), rel=1e-4)


def test_reference_swap_and_target_a():
    x = _image(0.3)
    e = _toy(attribute="reference", variance_samples=0, max_steps=4)
    cf = e.explain(x, target=0, reference=_image(-0.5))
    # attribute 0.3 - 0.8 α, α = k / 4; class-0 log-odds -4 * attribute >= 0 first at α = 0.5
    assert cf.info["frame_index"] == [2] and bool(cf.flipped[0])
    with pytest.raises(MedcfError, match="reference images"):
        e.explain(x, target=0)


class _LossyBrightnessICAM(_BrightnessICAM):
    """As _BrightnessICAM, but the content loses pixel (0, 0) (a 'foreign object' G cannot render)."""

    def encode(self, x):
        c, m = super().encode(x)
        c = c.clone()
        c[..., 0, 0] = 0.0
        return c, m


def test_residual_composition_keeps_what_the_decoder_cannot_render():
    x = _image(-0.25)
    x[..., 0, 0] = 0.6                                      # the "foreign object"
    model = _LossyBrightnessICAM(ICAMConfig(**{**TINY, "attr_dim": 1}, class_names=("normal", "cardiomegaly")))
    model.attr_mean.copy_(torch.tensor([[-0.5], [0.5]]))
    gen = ICAMExplainer(icam=model, classifier=_MeanClassifier(),
                        config=ICAMExplainerConfig(variance_samples=0)).explain(x, target=1)
    res = ICAMExplainer(icam=model, classifier=_MeanClassifier(),
                        config=ICAMExplainerConfig(variance_samples=0, compose="residual")).explain(x, target=1)
    m = float(x.mean())                                     # the attribute of x
    # residual: x + G(c, a) - G(c, a_x) = x + (a - a_x); frame 0 is x; the object is kept
    assert torch.allclose(res.path[0], x, atol=1e-6)
    shift = (res.info["alpha_taken"][0]) * (0.5 - m)
    assert torch.allclose(res.counterfactual, x + shift, atol=1e-5)
    assert float(res.counterfactual[0, 0, 0, 0]) == pytest.approx(0.6 + shift, abs=1e-5)
    # generated: the object is lost (pixel (0, 0) is the attribute alone)
    a_gen = m + gen.info["alpha_taken"][0] * (0.5 - m)
    assert float(gen.counterfactual[0, 0, 0, 0]) == pytest.approx(a_gen, abs=1e-5)
    assert torch.allclose(res.reconstruction, gen.reconstruction)   # G(c, a_x) in both
    assert res.info["compose"] == "residual"
    with pytest.raises(ValueError, match="compose"):
        ICAMExplainerConfig(compose="sum")


class _SquareICAM(_BrightnessICAM):
    """The attribute acts on a centre square (weight 1) and faintly elsewhere (0.02)."""

    def decode(self, content, attribute):
        region = torch.full((1, 1, 32, 32), 0.02)
        region[..., 10:22, 10:22] = 1.0
        return content + attribute.view(-1, 1, 1, 1) * region


def test_masked_composition_keeps_only_the_large_change():
    x = _image(-0.05)
    model = _SquareICAM(ICAMConfig(**{**TINY, "attr_dim": 1}, class_names=("normal", "cardiomegaly")))
    model.attr_mean.copy_(torch.tensor([[-0.5], [0.8]]))
    cfg = dict(variance_samples=0, mask_threshold=0.5, mask_dilate=1, mask_smooth=1)
    res = ICAMExplainer(icam=model, classifier=_MeanClassifier(),
                        config=ICAMExplainerConfig(**cfg, compose="residual")).explain(x, target=1)
    msk = ICAMExplainer(icam=model, classifier=_MeanClassifier(),
                        config=ICAMExplainerConfig(**cfg, compose="masked")).explain(x, target=1)
    frame = msk.info["frame_index"][0]
    assert frame > 0 and bool(msk.flipped[0])
    d_res, d_msk = res.path[frame] - x, msk.path[frame] - x           # [1, 1, 32, 32]
    assert float(d_res[..., 0, 0].abs()) > 0                          # residual: the faint change too
    assert torch.equal(msk.path[frame][..., :8, :], x[..., :8, :])   # masked: the input, bit for bit
    assert torch.allclose(d_msk[..., 10:22, 10:22], d_res[..., 10:22, 10:22])   # the square kept
    with pytest.raises(ValueError, match="mask_threshold"):
        ICAMExplainerConfig(compose="masked", mask_threshold=0.0)


class _CornerClassifier(nn.Module):
    """Class-1 log-odds = 200 (x[0, 0] - c): one corner pixel decides."""

    class_names = ("normal", "cardiomegaly")

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, x):
        s = 200 * (x[:, 0, 0, 0] - self.c)
        return torch.stack([torch.zeros_like(s), s], 1)


def test_mask_relax_loosens_the_mask_only_for_queries_that_need_it():
    x = _image(-0.05).repeat(2, 1, 1, 1)
    c = float(x[0, 0, 0, 0])
    x[0, 0, 0, 0], x[1, 0, 0, 0] = c - 0.005, c + 0.005            # log-odds -1 (to flip), +1 (already there)
    model = _SquareICAM(ICAMConfig(**{**TINY, "attr_dim": 1}, class_names=("normal", "cardiomegaly")))
    model.attr_mean.copy_(torch.tensor([[-0.5], [0.8]]))
    cfg = dict(variance_samples=0, compose="masked", mask_threshold=0.5, mask_dilate=0, mask_smooth=1)
    clf = _CornerClassifier(c)
    strict = ICAMExplainer(icam=model, classifier=clf, config=ICAMExplainerConfig(**cfg)).explain(x, target=1)
    # the corner's change is 0.02 of the square's: the strict mask drops it, so query 0 never flips
    assert strict.flipped.tolist() == [False, True] and strict.info["mask_threshold"] == [0.5, 0.5]
    relaxed = ICAMExplainer(icam=model, classifier=clf,
                            config=ICAMExplainerConfig(**cfg, mask_relax=(0.2, 0.01))).explain(x, target=1)
    assert relaxed.flipped.tolist() == [True, True]
    assert relaxed.info["mask_threshold"] == [0.01, 0.5]        # 0.2 still drops the corner; 0.01 keeps it
    assert torch.equal(relaxed.path[:, 1], strict.path[:, 1])   # the query that needed nothing: unchanged
    # the scores kept from the relaxation are those of the frames kept (not of a stricter mask's)
    fresh = torch.stack([torch.softmax(clf(f), 1)[:, 1] for f in relaxed.path])          # [T, 2]
    assert torch.allclose(relaxed.path_probs, fresh, atol=1e-6)
    assert torch.allclose(relaxed.prob_counterfactual, torch.softmax(clf(relaxed.counterfactual), 1)[:, 1])
    residual = ICAMExplainer(icam=model, classifier=clf, config=ICAMExplainerConfig(
        **{**cfg, "compose": "residual"})).explain(x[:1], target=1)
    assert torch.equal(relaxed.path[:, :1], masked_frames(x[:1], residual.path, 0.01, 0, 1))
    for bad in [(0.6,), (0.3, 0.4), (0.0,)]:                    # must decrease from 0.5 and stay > 0
        with pytest.raises(ValueError, match="mask_relax"):
            ICAMExplainerConfig(**cfg, mask_relax=bad)
    assert ICAMExplainerConfig(**cfg, mask_relax=[0.4, 0.3]).mask_relax == (0.4, 0.3)   # a TOML list


def test_variance_map_is_the_variance_of_the_sampled_attribute():
    cf = _toy(attribute="sample", variance_samples=400).explain(_image(-0.25), target=1)
    var = cf.info["variance_map"]
    assert var.shape == (1, 1, 32, 32)
    # decode = content + attribute: every pixel varies as the attribute, std 0.1 -> variance 0.01
    assert float(var.mean()) == pytest.approx(0.01, rel=0.2) and float(var.std()) < 1e-6


def test_target_outside_the_domains_is_refused_and_config_is_checked():
    model = _BrightnessICAM(ICAMConfig(**{**TINY, "attr_dim": 1}, class_names=("other", "x")))
    with pytest.raises(MedcfError, match="not one of ICAM's domains"):
        ICAMExplainer(icam=model, classifier=_MeanClassifier()).explain(_image(0.0), target=1)
    with pytest.raises(ValueError, match="attribute"):
        ICAMExplainerConfig(attribute="median")


# ----------------------------------------------------------------------------- recipe


def test_recipe_trains_stores_statistics_and_resumes_exactly(tmp_path):
    from medcf.train.icam import train_icam

    ds, val = _synth(), _synth(8, seed=1)
    res = train_icam(ds, tmp_path / "full", steps=4, val_data=val, **TINY_RECIPE)
    rows = [json.loads(line) for line in (tmp_path / "full" / "stats.jsonl").read_text().splitlines()]
    for key in ("adv", "self_rec", "cycle", "kl", "cls", "content_adv", "d_total"):
        values = [r[key] for r in rows if key in r]
        assert values and all(math.isfinite(v) for v in values), key
    assert set(res.val) >= {"icam_accuracy", "self_l1", "swap_flip_rate"}
    model = ICAM.load(tmp_path / "full")
    # the stored statistics are those of the training images' attribute codes
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    y = torch.tensor([int(ds[i]["label"]) for i in range(len(ds))])
    with torch.no_grad():
        codes = model.encode(x)[1]
    assert torch.allclose(model.attr_mean[1], codes[y == 1].mean(0), atol=1e-5)
    assert torch.allclose(model.attr_std[0], codes[y == 0].std(0, unbiased=False).clamp_min(1e-4), atol=1e-5)
    train_icam(ds, tmp_path / "part", steps=2, val_data=val, **TINY_RECIPE)
    train_icam(ds, tmp_path / "part", steps=4, val_data=val, resume=True, **TINY_RECIPE)
    for (name, p), q in zip(model.state_dict().items(), ICAM.load(tmp_path / "part").state_dict().values(),
                            strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


class _EasyToy(Dataset):
    """16 px: class 0 dark (-0.5), class 1 bright (+0.5), plus a random texture (the content)."""

    class_names = ("dark", "bright")

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.labels = [i % 2 for i in range(n)]
        texture = 0.3 * (torch.rand(n, 1, 16, 16, generator=g) * 2 - 1)
        self.images = texture + torch.tensor([-0.5 if v == 0 else 0.5 for v in self.labels]).view(-1, 1, 1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": torch.tensor(self.labels[i])}


def test_attribute_swap_flips_the_decision_after_a_short_training(tmp_path):
    from medcf.train.icam import train_icam

    res = train_icam(_EasyToy(64, 0), tmp_path / "toy", steps=120, batch_size=8, lr=2e-3, width=8, blocks=0,
                     attr_dim=2, attr_width=8, disc_width=4, disc_layers=2, val_data=_EasyToy(16, 1),
                     progress=False, log_every=60, sample_every=0, checkpoint_every=0)
    model = ICAM.load(res.model_dir)
    test = _EasyToy(8, 2)
    dark, bright = test.images[0:1], test.images[1:2]
    clf = _MeanClassifier()
    clf.class_names = ("dark", "bright")
    e = ICAMExplainer(icam=model, classifier=clf,
                      config=ICAMExplainerConfig(attribute="reference", variance_samples=0))
    to_bright = e.explain(dark, target=1, reference=bright)
    to_dark = e.explain(bright, target=0, reference=dark)
    assert bool(to_bright.flipped[0]) and bool(to_dark.flipped[0])
    assert res.val["icam_accuracy"] == 1.0  # ICAM's own classifier separates the toy's classes


# ----------------------------------------------------------------------------- CLI


def test_cli_trains_and_explains(capsys, tmp_path):
    from _cli import run_cli
    from medcf.classifiers import ResNetClassifier, ResNetConfig
    from medcf.data import write_synthetic
    from medcf.data.synthetic import SynthConfig

    write_synthetic(SynthConfig(resolution=32), 20, tmp_path / "data", progress=False)
    code, out, err = run_cli(capsys, "train", "icam", "--data", tmp_path / "data", "--out", tmp_path / "icam",
                             "--steps", "2", "--batch-size", "2", "--width", "4", "--blocks", "1", "--attr-dim",
                             "4", "--disc-width", "4", "--disc-layers", "2", "--no-progress")
    assert code == 0, err
    assert "normal <-> cardiomegaly" in out and "icam_accuracy" in out
    clf = ResNetClassifier(ResNetConfig(in_channels=1, resolution=32, class_names=("normal", "cardiomegaly"),
                                        num_outputs=2, head="softmax", widths=(4, 8), blocks=(1, 1)), seed=0)
    clf.save(tmp_path / "clf" / "model")
    code, out, err = run_cli(capsys, "explain", "--method", "icam", "--classifier", tmp_path / "clf",
                             "--generator", tmp_path / "icam", "--images", tmp_path / "data", "--split", "test",
                             "--limit", "2", "--out", tmp_path / "ex", "--set", "attribute=sample",
                             "--max-steps", "4", "--no-progress")
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "ex").glob("*.json"))]
    records = [r for r in records if "path_probs" in r]
    assert records and all(r["method"] == "icam" and len(r["path_probs"]) == 5 for r in records)
    assert all(r["settings"]["attribute"] == "sample" for r in records)


def test_cli_spatial_attribute_fam_and_content_noise_flags(capsys, tmp_path):
    from _cli import run_cli
    from medcf.data import write_synthetic
    from medcf.data.synthetic import SynthConfig

    write_synthetic(SynthConfig(resolution=32), 12, tmp_path / "data", progress=False)
    args = ["train", "icam", "--data", tmp_path / "data", "--steps", "1", "--batch-size", "2", "--width", "4",
            "--blocks", "1", "--attr-dim", "2", "--disc-width", "4", "--disc-layers", "2", "--no-progress"]
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "icam", "--attr-map", "4", "--fam", "0.5",
                              "--content-noise", "0.25")
    assert code == 0, err
    run = json.loads((tmp_path / "icam" / "run.json").read_text())["run_info"]
    assert run["attr_map"] == 4 and run["weights"]["fam"] == 0.5 and run["content_noise"] == 0.25
    model = ICAM.load(tmp_path / "icam")
    assert model.attr_mean.shape == (2, 2 * 4 * 4) and model.config.content_noise == 0.25
    for flag, value, word in [("--attr-map", "3", "attr_map"), ("--fam", "-1", "--fam"),
                              ("--content-noise", "-0.5", "--content-noise")]:
        code, out, err = run_cli(capsys, *args, "--out", tmp_path / f"bad{value}", flag, value)
        assert code == 2 and word in err and len(err.strip().splitlines()) == 1, err
