"""medcf.viz: GIFs, strips, overlays and figures written from a hand-built Counterfactual."""

from __future__ import annotations

import io

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from medcf import viz
from medcf.errors import ShapeError
from medcf.types import Counterfactual


def make_cf(t: int = 5, b: int = 2, size: int = 16, n_frames=(5, 3)) -> Counterfactual:
    """A path that brightens a square: frame k of query i has value -1 + 0.4 k in the square."""
    path = torch.full((t, b, 1, size, size), -1.0)
    for k in range(t):
        path[k, :, :, 4:12, 4:12] = -1.0 + 0.4 * k
    for i, n in enumerate(n_frames):  # stopped queries repeat their last frame
        path[n:, i] = path[n - 1, i]
    probs = torch.linspace(0.1, 0.9, t).unsqueeze(1).repeat(1, b)
    return Counterfactual(
        original=path[0], counterfactual=path[-1], difference=(path[-1] - path[0]).mean(1, keepdim=True),
        target=torch.ones(b, dtype=torch.long), prob_original=probs[0], prob_counterfactual=probs[-1],
        reconstruction=path[0], path=path, path_probs=probs,
        info={"n_frames": list(n_frames), "class_names": ["normal", "cardiomegaly"],
              "reference": "reconstruction", "prob_reconstruction": [0.1] * b})


@pytest.mark.parametrize("index, loop, expected", [
    (0, "forward-back", 5 + 3),   # 0 1 2 3 4 3 2 1
    (1, "forward-back", 3 + 1),   # 0 1 2 1  (padding frames dropped)
    (0, "forward", 5),
])
def test_gif_frame_count_and_size(tmp_path, index, loop, expected):
    out = viz.save_gif(make_cf(), tmp_path / "a.gif", index=index, loop=loop, size=64, fps=5)
    frames = iio.imread(out, index=None)
    assert frames.shape[0] == expected
    assert frames.shape[1:3] == (64, 64)
    assert list(tmp_path.iterdir()) == [tmp_path / "a.gif"]  # atomic: no temp file left behind


def test_gif_frames_follow_the_path_and_carry_the_probability_label(tmp_path):
    out = viz.save_gif(make_cf(), tmp_path / "a.gif", size=160, loop="forward-back")
    frames = iio.imread(out, index=None).astype(int)
    grey = frames[..., :3].mean(-1)
    # the square's centre brightens frame by frame, then the loop comes back
    centre = grey[:, 80, 80]
    assert np.all(np.diff(centre[:5]) > 0) and np.all(np.diff(centre[4:]) < 0)
    assert centre[1] == pytest.approx(centre[-1], abs=2)
    # the label band: yellow text (red and green high, blue low) in the top-left corner
    band = frames[0, :14, :100, :3]
    assert ((band[..., 0] > 150) & (band[..., 1] > 150) & (band[..., 2] < 100)).any()
    # and the rest of the (grey) image has no colour
    body = frames[0, 40:, :, :3]
    assert np.abs(body[..., 0] - body[..., 2]).max() <= 8


def test_gif_frame_labels_read_the_path_probabilities():
    frames = viz.gif_frames(make_cf(), 0, size=96, loop="forward")
    assert len(frames) == 5
    # different probabilities print different text, so the label bands differ
    assert not np.array_equal(frames[0][:14, :96], frames[4][:14, :96])


def test_strip_png(tmp_path):
    out = viz.save_strip(make_cf(), tmp_path / "s.png", n_frames=3, size=32)
    img = np.asarray(Image.open(out))
    assert img.shape[:2] == (32, 3 * 32)
    # first tile dark in the square, last tile bright
    assert img[20, 16].mean() < img[20, 2 * 32 + 16].mean()


def test_overlay_heatmap_colours_signed_changes():
    image = torch.zeros(1, 8, 8)
    diff = torch.zeros(1, 8, 8)
    diff[0, 1, 1], diff[0, 6, 6] = 1.0, -1.0
    rgb = viz.overlay_heatmap(image, diff, alpha=1.0)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [128, 128, 128]  # no change: the image itself (0 -> 128)
    assert rgb[1, 1, 0] > 200 and rgb[1, 1, 2] < 60   # brighter in the counterfactual: red
    assert rgb[6, 6, 2] > 200 and rgb[6, 6, 0] < 60   # darker: blue
    with pytest.raises(ShapeError, match="diff"):
        viz.overlay_heatmap(image, torch.zeros(1, 4, 4))


def test_save_map_and_figure(tmp_path):
    cf = make_cf()
    img = np.asarray(Image.open(viz.save_map(cf, tmp_path / "m.png", size=32)))
    assert img.shape == (32, 32, 3)
    fig = viz.figure(cf, index=1)
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("original") for t in titles)
    assert any(t.startswith("reconstruction") for t in titles)
    assert any(t.startswith("counterfactual") for t in titles)
    assert any(t.startswith("difference") for t in titles)
    assert any("p(cardiomegaly) = 0.90" in t for t in titles)  # the counterfactual's probability
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_a_path_the_gif_has_two_frames(tmp_path):
    cf = make_cf()
    bare = Counterfactual(original=cf.original, counterfactual=cf.counterfactual, difference=cf.difference,
                          target=cf.target, prob_original=cf.prob_original,
                          prob_counterfactual=cf.prob_counterfactual)
    frames = iio.imread(viz.save_gif(bare, tmp_path / "b.gif", size=32), index=None)
    assert frames.shape[0] == 2


def test_bad_arguments(tmp_path):
    cf = make_cf()
    with pytest.raises(IndexError, match="index"):
        viz.save_gif(cf, tmp_path / "x.gif", index=5)
    with pytest.raises(ValueError, match="loop"):
        viz.save_gif(cf, tmp_path / "x.gif", loop="sideways")
    with pytest.raises(ValueError, match="fps"):
        viz.save_gif(cf, tmp_path / "x.gif", fps=0)
    assert not (tmp_path / "x.gif").exists()


def test_counterfactual_save_gif_convenience(tmp_path):
    make_cf().save_gif(tmp_path / "c.gif", size=32)
    assert iio.imread(tmp_path / "c.gif", index=None).shape[0] == 8


def test_path_heatmaps_have_closed_form_values():
    cf = make_cf()  # query 0: square rises by 0.4 per frame over 5 frames, outside stays -1
    mean_abs = viz.path_heatmap(cf, 0, "mean_abs")
    assert mean_abs.shape == (1, 16, 16)
    assert float(mean_abs[0, 8, 8]) == pytest.approx(0.4) and float(mean_abs[0, 0, 0]) == 0.0
    assert float(viz.path_heatmap(cf, 0, "max")[0, 8, 8]) == pytest.approx(1.6)
    # query 1 stopped after 3 frames: last - first = 0.8 in the square
    assert float(viz.path_heatmap(cf, 1, "first_last")[0, 8, 8]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="mode"):
        viz.path_heatmap(cf, 0, "median")
