"""medcf.viz: GIFs, strips, overlays and figures written from a hand-built Counterfactual."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from medcf import viz
from medcf.errors import MedcfError, ShapeError
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
    frames = iio.imread(out, index=None, mode="RGB")
    assert frames.shape[0] == expected
    assert frames.shape[1:3] == (64, 64)
    assert list(tmp_path.iterdir()) == [tmp_path / "a.gif"]  # atomic: no temp file left behind


def test_gif_frames_follow_the_path_and_carry_the_probability_label(tmp_path):
    out = viz.save_gif(make_cf(), tmp_path / "a.gif", index=0, size=160, loop="forward-back")
    frames = iio.imread(out, index=None, mode="RGB").astype(int)
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


def test_strip_starts_from_the_input_and_names_the_class(tmp_path):
    cf = make_cf()
    cf.original[0, 0, 14:16, 14:16] = 1.0  # mark the input so that its tile differs from path frame 0
    title, after, labels = viz.strip_labels(cf, 0, n_frames=3)
    assert "p(cardiomegaly)" in title and "input" in title
    assert after == [2, 4]  # evenly spaced path frames after the start (5 frames)
    assert labels == ["input: 0.10", "0.50", "0.90"]
    out = viz.save_strip(cf, tmp_path / "s.png", n_frames=3, size=32)
    img = np.asarray(Image.open(out)).astype(int)
    band = img.shape[0] - 32  # the title band above the tiles
    assert img.shape[1] == 3 * 32 and 10 <= band <= 30
    title_band = img[:band]
    assert ((title_band[..., 0] > 150) & (title_band[..., 1] > 150) & (title_band[..., 2] < 100)).any()
    tiles = img[band:]
    assert tiles[30, 30].tolist() == [255, 255, 255]      # the marked input, 2x upscaled
    assert tiles[30, 32 + 30].tolist() == [0, 0, 0]       # path frames do not have the mark
    # the square brightens from the input (dark) to the last path frame (bright)
    assert tiles[20, 16].mean() < tiles[20, 32 + 16].mean() < tiles[20, 2 * 32 + 16].mean()


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


def test_save_map_writes_the_figure_with_colour_bar_legend_and_title(tmp_path):
    cf = make_cf()
    fig = viz.figure(cf, index=1)
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("original") for t in titles)
    assert any(t.startswith("reconstruction") for t in titles)
    assert any(t.startswith("counterfactual") for t in titles)
    assert any(t.startswith("difference") for t in titles)
    assert any("p(cardiomegaly) = 0.90" in t for t in titles)  # the counterfactual's probability
    assert fig.get_suptitle() == "counterfactual towards 'cardiomegaly'"
    assert "red: brighter" in fig.get_supxlabel() and "blue: darker" in fig.get_supxlabel()
    assert any(ax.get_ylabel() == "intensity change" for ax in fig.axes)  # the colour bar
    out = viz.save_map(cf, tmp_path / "m.png", index=1, size=120)
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape[1] > 4 * 120 > img.shape[0]  # five panels side by side
    # the difference (square brightened) is drawn in red, and the colour bar runs red to blue
    red = (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)
    blue = (img[..., 2] > 200) & (img[..., 0] < 80) & (img[..., 1] < 80)
    assert red.sum() > 100 and blue.sum() > 20
    assert list(tmp_path.iterdir()) == [out]


def test_without_a_path_the_gif_has_two_frames(tmp_path):
    cf = make_cf()
    bare = Counterfactual(original=cf.original, counterfactual=cf.counterfactual, difference=cf.difference,
                          target=cf.target, prob_original=cf.prob_original,
                          prob_counterfactual=cf.prob_counterfactual)
    frames = iio.imread(viz.save_gif(bare, tmp_path / "b.gif", index=0, size=32), index=None, mode="RGB")
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


def test_save_gif_on_a_batch_writes_every_query_numbered(tmp_path):
    written = make_cf().save_gif(tmp_path / "c.gif", size=32)  # Counterfactual.save_gif -> viz
    assert written == [tmp_path / "c_0.gif", tmp_path / "c_1.gif"]
    assert sorted(tmp_path.iterdir()) == written
    assert [iio.imread(p, index=None, mode="RGB").shape[0] for p in written] == [8, 4]  # 5 and 3 frames
    with pytest.raises(MedcfError, match="2 queries; pass index=i"):
        viz.save_strip(make_cf(), tmp_path / "s.png", index=None)
    assert viz.save_gif(make_cf().select(1), tmp_path / "one.gif", size=32) == tmp_path / "one.gif"


def _long_path_cf(t: int = 80, size: int = 64) -> Counterfactual:
    """A 64x64 synthetic radiograph cross-fading into another over ``t`` frames."""
    from medcf.data.synthetic import SynthConfig, SyntheticDataset

    ds = SyntheticDataset(SynthConfig(resolution=size), n=2, seed=0)
    a, b = ds[0]["image"], ds[1]["image"]
    w = torch.linspace(0, 1, t).view(t, 1, 1, 1)
    path = ((1 - w) * a + w * b).unsqueeze(1)  # [T, 1, C, H, W]
    probs = torch.linspace(0.1, 0.95, t).unsqueeze(1)
    return Counterfactual(original=a[None], counterfactual=b[None], difference=(b - a).mean(0, keepdim=True)[None],
                          target=torch.ones(1, dtype=torch.long), prob_original=probs[0],
                          prob_counterfactual=probs[-1], path=path, path_probs=probs,
                          info={"class_names": ["normal", "cardiomegaly"]})


def test_default_gif_of_a_64px_image_is_tens_of_kb(tmp_path):
    cf = _long_path_cf()
    out = viz.save_gif(cf, tmp_path / "g.gif")
    frames = iio.imread(out, index=None, mode="RGB")
    assert frames.shape == (2 * viz.MAX_GIF_FRAMES - 2, 128, 128, 3)  # 16 path frames, forward and back
    assert out.stat().st_size < 100_000, out.stat().st_size  # all 80 frames at 256 px with 256 colours: ~3 MB
    # the compressed frames stay close to the true frames (palette + drift tolerance)
    true = viz.gif_frames(cf, 0)
    err = np.abs(frames.astype(int) - np.stack(true).astype(int))
    assert err.mean() < 3 and np.percentile(err, 99.9) <= viz.GIF_TOLERANCE


def test_repeated_frames_are_merged_with_their_durations(tmp_path):
    cf = make_cf(n_frames=(5, 5))
    cf.path[1:4] = cf.path[1]  # frames 1..3 identical, same label
    cf.path_probs[1:4] = cf.path_probs[1]
    out = viz.save_gif(cf, tmp_path / "r.gif", index=0, size=32, fps=10, loop="forward")
    im = Image.open(out)
    durations = []
    for k in range(im.n_frames):
        im.seek(k)
        durations.append(im.info["duration"])
    assert durations == [100, 300, 100]


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
