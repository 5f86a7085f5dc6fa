"""The diffusion backbone (diffusers UNet2DModel + schedulers) and the diffusion explainer.

Tiny UNets (16-32 px, two levels, 8-16 channels), untrained unless stated: the checks are
about mechanics whose answer is known without a trained model (a gradient step moves a
linear logit the right way, pixels outside a mask are untouched, a save/load round trip
is exact, resume equals an uninterrupted run).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from _cli import run_cli
from medcf.counterfactual._common import threshold_map
from medcf.counterfactual.diffusion import (
    DiffusionCF,
    DiffusionCFConfig,
    change_mask,
    guidance_mask,
)
from medcf.errors import CheckpointError, ShapeError
from medcf.generators.diffusion import DiffusionConfig, DiffusionModel, load_diffusion
from medcf.io import read_header
from medcf.train.diffusion import diffusion_loss, train_diffusion

RES = 16


def tiny(num_classes: int = 0, seed: int = 0) -> DiffusionModel:
    cfg = DiffusionConfig(resolution=RES, channels=1, widths=(8, 16), layers_per_block=1, attention=False,
                          num_classes=num_classes)
    return DiffusionModel(cfg, seed=seed).eval()


def linear_classifier(seed: int = 0) -> nn.Module:
    """One sigmoid logit w . x (w fixed, ||w|| = 1): its gradient is known everywhere."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(RES * RES, generator=g)
    net = nn.Sequential(nn.Flatten(), nn.Linear(RES * RES, 1))
    with torch.no_grad():
        net[1].weight.copy_((w / w.norm()).view(1, -1))
        net[1].bias.zero_()
    return net.eval()


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, RES, RES, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


class DictImages(Dataset):
    """A few labelled 16 px images as sample dicts."""

    class_names = ("normal", "abnormal")

    def __init__(self, n: int = 12):
        self.x = images(n, seed=5)
        self.y = torch.arange(n) % 2

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i], "index": torch.tensor(i)}


# ----------------------------------------------------------------------------- backbone


@pytest.mark.parametrize("num_classes", [0, 2])
def test_one_training_step_is_finite_and_changes_the_weights(num_classes):
    model = tiny(num_classes).train()
    sched = model.ddpm_scheduler()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    labels = torch.tensor([0, 1, 2]) if num_classes else None   # 2: the "no label" class
    loss = diffusion_loss(model, sched, images(), torch.Generator().manual_seed(0), labels)
    opt.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_saved_model_is_a_diffusers_folder_and_a_medcf_checkpoint(tmp_path, capsys):
    from diffusers import DDPMScheduler, UNet2DModel

    model = tiny(num_classes=2)
    model.save(tmp_path / "model", meta={"steps": 7})
    header = read_header(tmp_path)
    assert header["kind"] == "diffusion" and header["meta"]["steps"] == 7
    x, t = images(2), torch.tensor([3, 700])
    unet = UNet2DModel.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.equal(unet(x, t, class_labels=torch.tensor([0, 1])).sample,
                           model(x, t, torch.tensor([0, 1])))
    assert DDPMScheduler.from_pretrained(tmp_path / "model").config.num_train_timesteps == 1000
    again = load_diffusion(tmp_path)
    with torch.no_grad():
        assert torch.equal(again(x, t), model(x, t))
    assert again.config == model.config
    code, out, _ = run_cli(capsys, "info", tmp_path, "--json")
    assert code == 0 and json.loads(out)["kind"] == "diffusion"


def test_a_unet_trained_elsewhere_loads_with_its_schedule(tmp_path):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(3)
    unet = UNet2DModel(sample_size=RES, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()
    pipe = tmp_path / "pipeline"                         # diffusers' pipeline layout
    unet.save_pretrained(pipe / "unet")
    DDPMScheduler(num_train_timesteps=500, beta_schedule="squaredcos_cap_v2",
                  prediction_type="v_prediction").save_pretrained(pipe / "scheduler")
    model = load_diffusion(pipe)
    assert (model.config.resolution, model.config.channels, model.config.num_classes) == (RES, 1, 0)
    assert model.prediction_type == "v_prediction"
    assert model.ddim_scheduler().config.num_train_timesteps == 500
    x, t = images(2), torch.tensor([1, 400])
    with torch.no_grad():
        assert torch.equal(model(x, t), unet(x, t).sample)
    assert load_diffusion(pipe / "unet").prediction_type == "v_prediction"   # finds ../scheduler
    shutil.copytree(pipe / "unet", tmp_path / "bare")
    plain = load_diffusion(tmp_path / "bare")            # a bare UNet folder: diffusers' default schedule
    assert plain.ddim_scheduler().config.num_train_timesteps == 1000


def test_wrong_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_diffusion(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"format": "medcf", "kind": "vae"}))
    with pytest.raises(CheckpointError, match="not a diffusion model"):
        load_diffusion(tmp_path / "other")


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    kw = dict(resolution=RES, batch_size=4, widths=(8, 16), layers_per_block=1, attention=False,
              ema_decay=0.9, sample_every=0, grid=(0, 0), checkpoint_every=2, progress=False, cond=True)
    straight = train_diffusion(DictImages(), tmp_path / "a", steps=4, **kw)
    train_diffusion(DictImages(), tmp_path / "b", steps=2, **kw)
    resumed = train_diffusion(DictImages(), tmp_path / "b", steps=4, resume=True, **kw)
    assert straight.last_loss is not None and resumed.steps == 4
    a, b = load_diffusion(tmp_path / "a"), load_diffusion(tmp_path / "b")
    assert a.config.class_names == ("normal", "abnormal")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


# ----------------------------------------------------------------------------- explainer


def explain(mode: str, guidance: float, target: int, **kw):
    cfg = DiffusionCFConfig(mode=mode, steps=5, t0=0.3, guidance=guidance, max_tries=1, **kw)
    return DiffusionCF(model=tiny(), classifier=linear_classifier(), config=cfg).explain(images(), target)


@pytest.mark.parametrize("mode", ["fast", "dime"])
def test_guidance_moves_a_linear_logit_toward_the_target(mode):
    clf = linear_classifier()
    plain = explain(mode, 0.0, 1)
    with torch.no_grad():
        s0 = clf(plain.path[-1]).squeeze(1)
        up = clf(explain(mode, 0.3, 1).path[-1]).squeeze(1)
        down = clf(explain(mode, 0.3, 0).path[-1]).squeeze(1)
    # the same noise and schedule: only the classifier term differs, so the logit must move its way
    assert (up > s0 + 0.5).all() and (down < s0 - 0.5).all()
    assert plain.path.shape == (5 + 2, 3, 1, RES, RES) and torch.equal(plain.path[0], images())


def test_dime_makes_quadratically_many_unet_calls():
    fast, dime = explain("fast", 0.1, 1), explain("dime", 0.1, 1)
    assert fast.info["unet_calls"] == 5
    assert dime.info["unet_calls"] == 5 + 4 + 3 + 2 + 1    # an inner run to 0 at every step


@pytest.mark.parametrize("source", ["difference", "excess"])
def test_masked_mode_keeps_every_pixel_outside_the_mask_bit_identical(source):
    x = images()
    kw = dict(steps=5, t0=0.5, guidance=0.3, max_tries=1, mask_threshold=0.7, mask_dilate=1, mask_source=source)
    clf = linear_classifier()
    first = DiffusionCF(model=tiny(), classifier=clf, config=DiffusionCFConfig(mode="fast", **kw)).explain(x, 1)
    kw0 = {**kw, "guidance": 0.0}
    plain = DiffusionCF(model=tiny(), classifier=clf, config=DiffusionCFConfig(mode="fast", **kw0)).explain(x, 1)
    guided, unguided = first.path[-1], plain.path[-1]
    if source == "difference":
        mask = change_mask(unguided, guided, 0.7, 1)                             # the guidance's change
    else:                                                                        # what it added to denoising's
        mask = threshold_map(((guided - x).abs() - (unguided - x).abs()).mean(1, keepdim=True).clamp_min(0), 0.7, 1)
    mask = mask.expand_as(x)
    assert 0.05 < mask.float().mean() < 0.95                     # a real partial mask
    cf = DiffusionCF(model=tiny(), classifier=clf, config=DiffusionCFConfig(mode="masked", **kw)).explain(x, 1)
    assert torch.equal(cf.counterfactual[~mask], x[~mask])
    for frame in cf.path:
        assert torch.equal(frame[~mask], x[~mask])
    assert (cf.path[-1][mask] != x[mask]).float().mean() > 0.5   # regenerated inside
    assert cf.info["mask_fraction"] == pytest.approx(mask[:, 0].float().flatten(1).mean(1).tolist())
    with torch.no_grad():
        assert (clf(cf.path[-1]) > clf(x)).all()


def test_the_unguided_pass_makes_no_classifier_call_and_no_inner_loop():
    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = linear_classifier()

        def forward(self, x):
            calls.append(x.shape[0])
            return self.inner(x)

    cfg = DiffusionCFConfig(mode="dime", steps=5, t0=0.3, guidance=0.3, max_tries=1)
    ex = DiffusionCF(model=tiny(), classifier=Counting(), config=cfg)
    x, t = images(), torch.ones(3, dtype=torch.long)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    calls.clear()
    plain = ex._denoise(x, t, noise, torch.zeros(3), None, None)
    assert calls == [] and plain.calls == 5                     # one UNet call per step, nothing else
    guided = ex._denoise(x, t, noise, torch.full((3,), 0.3), None, None)
    assert len(calls) == 5 and guided.calls == 5 + 4 + 3 + 2 + 1


def test_smoothing_drops_an_isolated_change_and_keeps_a_large_one():
    x = torch.zeros(1, 1, 16, 16)
    y = x.clone()
    y[0, 0, 4:12, 4:12] = 0.5                      # an organ-sized change
    y[0, 0, 0, 15] = 1.0                           # one pixel redrawn strongly
    assert change_mask(x, y, 0.6, 0)[0, 0, 0, 15] and not change_mask(x, y, 0.6, 0)[0, 0, 8, 8]
    m = change_mask(x, y, 0.6, 0, smooth=2)        # 5 x 5 box average: the block wins
    assert m[0, 0, 8, 8] and not m[0, 0, 0, 15]


def test_the_excess_mask_ignores_what_denoising_alone_changes():
    x = torch.zeros(1, 1, 16, 16)
    unguided = x.clone()
    unguided[0, 0, 1:3, 1:3] = 1.0                 # a detail of x the denoising loses (or redraws)
    guided = unguided.clone()
    guided[0, 0, 1:3, 1:3] = 0.9                   # ... lost by the guided pass too, a little differently
    guided[0, 0, 8:12, 8:12] = 0.4                 # the guidance's own change
    cfg = DiffusionCFConfig(mask_threshold=0.2, mask_dilate=0)
    diff = guidance_mask(x, guided, unguided, cfg)[0, 0]
    assert diff[8:12, 8:12].all() and diff[1:3, 1:3].all()                     # |guided - unguided| sees both
    excess = guidance_mask(x, guided, unguided, dataclasses.replace(cfg, mask_source="excess"))[0, 0]
    assert excess[8:12, 8:12].all() and int(excess.sum()) == 16                # only the guidance's change
    with pytest.raises(ValueError, match="mask_source"):
        DiffusionCFConfig(mask_source="both")


def test_escalation_raises_the_guidance_of_queries_that_did_not_flip():
    cfg = DiffusionCFConfig(mode="fast", steps=3, t0=0.5, guidance=0.01, escalate=3.0, max_tries=3,
                            take_at=0.999999)
    cf = DiffusionCF(model=tiny(), classifier=linear_classifier(), config=cfg).explain(images(), 1)
    assert cf.info["guidance"] == pytest.approx([0.09] * 3)      # 0.01 * 3 * 3: never reached 0.999999
    assert cf.info["unet_calls"] == 9


def test_unguided_denoising_steps_a_v_prediction_model_by_its_own_schedule():
    # the explainer hands the scheduler a noise estimate; a v-prediction UNet's output must be
    # converted, not stepped as if it were noise: compare with diffusers stepping the raw output
    from diffusers import DDIMScheduler

    cfg = DiffusionConfig(resolution=RES, channels=1, widths=(8, 16), layers_per_block=1, attention=False,
                          prediction_type="v_prediction")
    model = DiffusionModel(cfg, seed=0).eval()
    ex = DiffusionCF(model=model, classifier=linear_classifier(),
                     config=DiffusionCFConfig(steps=4, t0=0.4, max_tries=1))
    x = images()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    got = ex._denoise(x, torch.ones(3, dtype=torch.long), noise, torch.zeros(3), None, None).final
    # prediction_type v_prediction; x0-hat clamped to [-1, 1] at each step, as the explainer does
    sched = DDIMScheduler.from_config(model.ddim_scheduler().config, clip_sample=True)
    sched.set_timesteps(10)
    ts = sched.timesteps[-4:]
    y = sched.add_noise(x, noise, ts[:1].repeat(3))
    with torch.no_grad():
        for t in ts:
            y = sched.step(model(y, t.expand(3), None), t, y, use_clipped_model_output=True).prev_sample
    assert torch.allclose(got, y.clamp(-1, 1), atol=1e-5)


def test_ddim_inversion_comes_back_to_the_input_when_the_unet_predicts_zero_noise():
    # with eps = 0, DDIM is a per-step rescaling: inverting then denoising is exact only if the
    # inversion climbs the very timesteps (and alphas) the denoising comes down
    model = tiny()
    with torch.no_grad():
        model.unet.conv_out.weight.zero_()
        model.unet.conv_out.bias.zero_()
    cfg = DiffusionCFConfig(steps=5, t0=0.4, max_tries=1, encode="invert")
    ex = DiffusionCF(model=model, classifier=linear_classifier(), config=cfg)
    x, t = images(), torch.ones(3, dtype=torch.long)
    noise = ex._inverted_noise(x, None)
    back = ex._denoise(x, t, noise, torch.zeros(3), None, None).final
    assert torch.allclose(back, x, atol=1e-5)
    seeded = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(ex._denoise(x, t, seeded, torch.zeros(3), None, None).final, x, atol=0.05)
    cf = ex.explain(x, 1)                                      # the explainer uses it, and counts its calls
    assert cf.info["unet_calls"] == 5 + 5
    masked = DiffusionCF(model=model, classifier=linear_classifier(),
                         config=dataclasses.replace(cfg, mode="masked")).explain(x, 1)
    assert masked.info["unet_calls"] == 5 + 3 * 5             # inversion, fast pass, unguided pass, masked pass
    cond = tiny(num_classes=2)                                 # a class-conditional UNet: encoded without
    seen = []                                                  # a class (label 2), decoded toward the target
    cond.register_forward_pre_hook(lambda m, args: seen.append(args[2].tolist()))
    DiffusionCF(model=cond, classifier=linear_classifier(), config=cfg).explain(x, 1)
    assert seen == [[2, 2, 2]] * 5 + [[1, 1, 1]] * 5
    with pytest.raises(ValueError, match="encode"):
        DiffusionCFConfig(encode="ddpm")


def test_change_mask_thresholds_relative_to_the_peak_and_dilates():
    x = torch.zeros(2, 1, 8, 8)
    y = x.clone()
    y[0, 0, 2, 2], y[0, 0, 6, 6] = 1.0, 0.2
    m = change_mask(x, y, 0.5, 0)
    assert m[0, 0, 2, 2] and not m[0, 0, 6, 6] and int(m.sum()) == 1 and not m[1].any()
    assert int(change_mask(x, y, 0.1, 1)[0].sum()) == 18


def test_bad_inputs_and_settings_raise_clear_errors():
    e = DiffusionCF(model=tiny(), classifier=linear_classifier(), config=DiffusionCFConfig(steps=2))
    with pytest.raises(ShapeError, match="expects"):
        e.explain(torch.zeros(1, 1, 32, 32), 1)
    with pytest.raises(ValueError, match="mode"):
        DiffusionCFConfig(mode="slow")
    with pytest.raises(ValueError, match="t0"):
        DiffusionCFConfig(t0=0.0)


# ----------------------------------------------------------------------------- CLI


def test_train_then_explain_with_each_method_name(tmp_path, capsys):
    from medcf.classifiers import ResNetClassifier, ResNetConfig
    from medcf.data import SynthConfig, write_synthetic

    data = tmp_path / "data"
    write_synthetic(SynthConfig(resolution=32), 16, data, seed=0, progress=False)
    code, out, err = run_cli(capsys, "train", "diffusion", "--data", data, "--out", tmp_path / "ddpm",
                             "--resolution", 32, "--steps", 2, "--batch-size", 4, "--widths", "8,16",
                             "--layers-per-block", 1, "--no-attention", "--sample-steps", 2, "--no-progress")
    assert code == 0, err
    assert (tmp_path / "ddpm" / "samples" / "0000002.png").is_file()
    code, _, err = run_cli(capsys, "train", "diffusion", "--data", data, "--out", tmp_path / "bad",
                           "--resolution", 32, "--widths", "8,x")
    assert code == 2 and "--widths" in err
    clf = ResNetClassifier(ResNetConfig(in_channels=1, resolution=32, class_names=("normal", "cardiomegaly"),
                                        num_outputs=2, head="softmax", widths=(4, 8), blocks=(1, 1)), seed=0)
    clf.save(tmp_path / "clf" / "model")
    for method in ("diffusion", "diffusion-masked", "diffusion-dime"):
        out_dir = tmp_path / method
        code, _, err = run_cli(capsys, "explain", "--classifier", tmp_path / "clf", "--generator",
                               tmp_path / "ddpm", "--method", method, "--images", data / "images" / "000003.png",
                               "--max-steps", 2, "--out", out_dir, "--no-progress")
        assert code == 0, err
        record = json.loads((out_dir / "000003.json").read_text())
        assert record["method"] == method and len(record["path_probs"]) == 2 + 2
    code, _, err = run_cli(capsys, "explain", "--classifier", tmp_path / "clf", "--generator", tmp_path / "clf",
                           "--method", "diffusion", "--images", data / "images" / "000003.png",
                           "--out", tmp_path / "wrong")
    assert code == 2 and "diffusion" in err
