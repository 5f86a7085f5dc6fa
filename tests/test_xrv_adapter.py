"""The TorchXRayVision adapter: input range/size, channel handling, pathology selection, logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medcf.classifiers import Classifier
from medcf.classifiers.xrv import XRVClassifier, xrv_densenet
from medcf.errors import MedcfError, ShapeError

NAMES = ("Atelectasis", "Cardiomegaly", "Effusion", "")  # "" = an unused output, as in some xrv weights


class Spy(nn.Module):
    """Records its input; output column k = k + mean of the input / 1024 (so columns are traceable)."""

    targets = list(NAMES)

    def __init__(self):
        super().__init__()
        self.seen = None

    def forward(self, x):
        self.seen = x
        return torch.arange(len(NAMES), dtype=x.dtype) + x.mean((1, 2, 3))[:, None] / 1024


def test_input_range_size_and_channels():
    spy = Spy()
    clf = XRVClassifier(spy, "Effusion")
    x = torch.full((2, 1, 32, 32), -1.0)
    x[1] = 1.0
    clf(x)
    assert spy.seen.shape == (2, 1, 224, 224)
    torch.testing.assert_close(spy.seen.amin((1, 2, 3)), torch.tensor([-1024.0, 1024.0]))
    torch.testing.assert_close(spy.seen.amax((1, 2, 3)), torch.tensor([-1024.0, 1024.0]))
    # three channels -> their mean; a value of 0.25 maps to 256
    rgb = torch.stack([torch.full((16, 16), v) for v in (0.0, 0.25, 0.5)])[None]
    clf(rgb)
    assert spy.seen.shape == (1, 1, 224, 224)
    torch.testing.assert_close(spy.seen, torch.full((1, 1, 224, 224), 256.0))
    # non-square: centre crop to the short side (the bright centre columns survive, the dark borders do not)
    wide = torch.full((1, 1, 20, 40), -1.0)
    wide[..., 10:30] = 1.0
    clf(wide)
    torch.testing.assert_close(spy.seen, torch.full((1, 1, 224, 224), 1024.0))
    # already at the model's size: passed through unchanged (apart from the scale)
    x224 = torch.rand(1, 1, 224, 224) * 2 - 1
    clf(x224)
    torch.testing.assert_close(spy.seen, x224 * 1024)
    with pytest.raises(ShapeError, match="1 or 3"):
        clf(torch.zeros(1, 2, 8, 8))


def test_pathology_selection_heads_and_names():
    one = XRVClassifier(Spy(), "effusion")  # case-insensitive
    x = torch.zeros(3, 1, 16, 16)
    assert one.head == "sigmoid" and one.class_names == ("no Effusion", "Effusion")
    torch.testing.assert_close(one(x), torch.full((3, 1), 2.0))
    assert isinstance(one, Classifier) and one.predict(x).tolist() == [1, 1, 1]
    two = XRVClassifier(Spy(), ["Effusion", "Atelectasis"])
    assert two.head == "multilabel" and two.class_names == ("Effusion", "Atelectasis")
    torch.testing.assert_close(two(x), torch.tensor([[2.0, 0.0]]).expand(3, 2))
    for bad in ("Pneumothorax", ""):
        with pytest.raises(MedcfError, match="unknown pathology") as e:
            XRVClassifier(Spy(), bad)
        assert "\n" not in str(e.value) and "Cardiomegaly" in str(e.value)
    with pytest.raises(MedcfError, match="targets"):
        XRVClassifier(nn.Identity(), "Effusion")


def test_probability_outputs_become_logits():
    # the same network with apply_sigmoid: the adapter's logits equal the raw logits
    pytest.importorskip("torchxrayvision", reason="torchxrayvision is an optional extra")
    raw = xrv_densenet("Effusion", block_config=(1, 1), num_init_features=8, growth_rate=4)
    prob = xrv_densenet("Effusion", block_config=(1, 1), num_init_features=8, growth_rate=4,
                        apply_sigmoid=True)
    with torch.no_grad():  # moderate logits: a random net on [-1024, 1024] inputs saturates the sigmoid
        raw.model.classifier.weight.mul_(1e-3)
        raw.model.classifier.bias.fill_(0.5)
    prob.model.load_state_dict(raw.model.state_dict())
    assert prob.returns_probabilities and not raw.returns_probabilities
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        logits = raw(x)
        assert logits.abs().max() < 8
        torch.testing.assert_close(prob(x), logits, atol=1e-3, rtol=1e-3)


def test_real_densenet_without_weights_gives_logits_and_input_gradients():
    pytest.importorskip("torchxrayvision", reason="torchxrayvision is an optional extra")
    torch.manual_seed(0)
    clf = xrv_densenet(["Effusion", "Cardiomegaly"], block_config=(1, 1), num_init_features=8, growth_rate=4)
    assert clf.pathologies == ("Effusion", "Cardiomegaly")
    x = (torch.rand(2, 3, 48, 48) * 2 - 1).requires_grad_(True)
    out = clf(x)
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # explainers need input gradients
    assert clf.features(x.detach()).ndim == 2
    full = xrv_densenet("Cardiomegaly")  # the DenseNet-121 architecture, random weights, no download
    assert full(torch.zeros(1, 1, 64, 64)).shape == (1, 1)
