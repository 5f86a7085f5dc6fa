"""The shared toy of the progressive-exaggeration and DISSECT tests: synthetic data and a tiny classifier."""

from __future__ import annotations

from pathlib import Path

import torch

from medcf.classifiers import ResNetClassifier, ResNetConfig
from medcf.data import SynthConfig, write_synthetic


def write_toy(root: Path, res: int, n: int = 48) -> Path:
    """``root/data`` (n synthetic cardiomegaly images at res px) and ``root/classifier`` (a one-block
    ResNet whose head is re-drawn with a large scale, so its decisions vary across the data)."""
    write_synthetic(SynthConfig(resolution=res), n, root / "data", seed=0, progress=False)
    clf = ResNetClassifier(ResNetConfig(in_channels=1, resolution=res, class_names=("normal", "cardiomegaly"),
                                        num_outputs=2, widths=(4,), blocks=(1,)), seed=0)
    with torch.no_grad():
        clf.fc.weight.normal_(0, 2.0, generator=torch.Generator().manual_seed(0))
    clf.save(root / "classifier" / "model")
    return root
