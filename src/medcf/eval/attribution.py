"""Attribution baselines from captum, scored like counterfactual difference maps.

The maps users compare counterfactual explanations with: Saliency (|gradient|),
Integrated Gradients (from a black baseline, i.e. -1 everywhere) and Grad-CAM
(captum ``LayerGradCam`` on the last convolution, upsampled to the image),
computed by captum on the explained classifier for the class it decides. A map
is ``[B, 1, H, W]`` (channels summed); ``map_localization`` scores its
absolute value with the same NCC/AUROC as counterfactual maps
(``medcf.eval.localization``) against the same ground-truth region as
``medcf.eval.evaluate_counterfactuals`` (heart-border band or lesion mask).

Example:
    >>> maps = attribution_maps(classifier, x, "ig", n_steps=32)      # doctest: +SKIP
    >>> map_localization(maps, batch, "opacity")["auroc"].nanmean()   # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcf.errors import MedcfError, ShapeError

ATTRIBUTIONS = {"saliency": "Saliency", "ig": "IntegratedGradients", "gradcam": "LayerGradCam"}


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` registered in ``model`` (the Grad-CAM layer)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise MedcfError(f"{type(model).__name__}: Grad-CAM needs a convolutional layer; none found")
    return convs[-1]


def _decisions(model: nn.Module, x: Tensor) -> Tensor:  # [B]
    with torch.no_grad():
        logits = model(x)
    if logits.ndim != 2:
        raise ShapeError(f"classifier: expected logits [B, K], got {tuple(logits.shape)}")
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


class _ClassLogit(nn.Module):
    """Logit of the class captum asks for; a single sigmoid logit is [-l, l] (two classes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, K]
        out = self.model(x)
        return torch.cat([-out, out], 1) if out.shape[1] == 1 else out


def attribution_maps(classifier: nn.Module, x: Tensor, method: str, *, target: Tensor | None = None,
                     n_steps: int = 32) -> Tensor:  # [B, C, H, W] -> [B, 1, H, W]
    """captum's ``method`` ("saliency" | "ig" | "gradcam") for ``target`` (default: the decision).

    Saliency is |d logit / dx|; IG integrates from the all-black image (-1);
    Grad-CAM is ReLU(sum_k a_k A_k) of the last conv layer, bilinearly upsampled.
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    if method not in ATTRIBUTIONS:
        raise MedcfError(f"attribution: unknown method {method!r}; choose one of {sorted(ATTRIBUTIONS)}")
    if x.ndim != 4:
        raise ShapeError(f"attribution: expected images [B, C, H, W], got {tuple(x.shape)}")
    was = classifier.training
    classifier.eval()
    try:
        t = _decisions(classifier, x) if target is None else target.to(x.device).long().reshape(-1)
        model = _ClassLogit(classifier)
        inputs = x.detach().clone().requires_grad_(True)
        if method == "saliency":
            a = Saliency(model).attribute(inputs, target=t, abs=True)
        elif method == "ig":
            a = IntegratedGradients(model).attribute(inputs, baselines=-torch.ones_like(inputs), target=t,
                                                     n_steps=n_steps, internal_batch_size=x.shape[0])
        else:
            cam = LayerGradCam(model, last_conv(classifier)).attribute(inputs, target=t, relu_attributions=True)
            a = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    finally:
        classifier.train(was)
    a = a.detach().float()
    return a.sum(1, keepdim=True) if a.shape[1] != 1 else a


def resize_map(a: Tensor, size: tuple[int, int]) -> Tensor:  # [B, 1, h, w] -> [B, 1, H, W]
    return a if tuple(a.shape[-2:]) == tuple(size) else F.interpolate(a, size=size, mode="bilinear",
                                                                       align_corners=False)


def map_localization(maps: Tensor, gt: dict, task: str | None, *, band_width: int = 3) -> dict[str, Tensor]:
    """Per image NCC and AUROC [B] of |maps| against the task's truth region in the sample dicts ``gt``.

    The region is the one ``evaluate_counterfactuals`` uses (``region`` if given, else the
    heart-border band for cardiomegaly, the lesion mask for opacity); all NaN without one.
    """
    from medcf.eval.localization import auroc, ncc
    from medcf.eval.report import _truth_region

    region = _truth_region(gt, task, band_width)
    if region is None:
        nan = torch.full((maps.shape[0],), float("nan"))
        return {"ncc": nan, "auroc": nan.clone()}
    a = resize_map(maps.detach().cpu().abs(), tuple(region.shape[-2:]))
    return {"ncc": ncc(a, region), "auroc": auroc(a, region)}
