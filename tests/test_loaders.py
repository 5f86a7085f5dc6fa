"""Tests for medcf.data readers: images, class folders, CSV, MedMNIST .npz, DICOM, synthetic folder.

Expected values come from the formats' definitions (8-bit v -> v / 255 * 2 - 1,
16-bit v -> v / 65535 * 2 - 1, DICOM PS3.3 windowing), from hand-built files,
or from the independent in-memory synthetic renderer.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medcf.data import (
    CSVDataset,
    DicomDataset,
    FileListDataset,
    ImageFolderDataset,
    MedMNISTDataset,
    SyntheticFolderDataset,
    load_dicom,
    load_image,
    open_dataset,
)
from medcf.errors import DataError

# ----------------------------------------------------------------------------- helpers


def save(path: Path, array: np.ndarray, mode: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    im.save(path, **kw)
    return path


def gray(path: Path, value: int = 128, size: int = 8) -> Path:
    return save(path, np.full((size, size), value, np.uint8))


def one_line_error(excinfo, name: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    assert name in msg, f"{name!r} not in {msg!r}"
    return msg


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def truncated_png(path: Path, size: int = 16) -> Path:
    rng = np.random.default_rng(0)  # noise does not compress, so cutting loses pixel data
    save(path, rng.integers(0, 256, (size, size), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# ----------------------------------------------------------------------------- single images


def test_8bit_gray_values_map_by_bit_depth(tmp_path):
    a = np.array([[0, 255], [51, 204]], np.uint8)
    x = load_image(save(tmp_path / "a.png", a))
    assert x.dtype == torch.float32 and x.shape == (1, 2, 2)
    # v / 255 * 2 - 1: 0 -> -1, 255 -> 1, 51 -> -0.6, 204 -> 0.6
    torch.testing.assert_close(x[0], torch.tensor([[-1.0, 1.0], [-0.6, 0.6]]))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_values_use_65535(tmp_path, suffix):
    a = np.array([[0, 65535], [32768, 16384]], np.uint16)
    x = load_image(save(tmp_path / f"a{suffix}", a))
    assert x[0, 0, 0].item() == -1.0 and x[0, 0, 1].item() == 1.0
    assert x[0, 1, 0].item() == pytest.approx(32768 / 65535 * 2 - 1, abs=1e-6)
    assert x[0, 1, 1].item() == pytest.approx(16384 / 65535 * 2 - 1, abs=1e-6)


def test_rgb_to_gray_is_luminance_and_gray_to_rgb_repeats(tmp_path):
    a = np.zeros((2, 2, 3), np.uint8)
    a[0, 0] = (255, 0, 0)
    a[0, 1] = (0, 255, 0)
    a[1, 0] = (0, 0, 255)
    a[1, 1] = (255, 255, 255)
    p = save(tmp_path / "rgb.png", a)
    rgb = load_image(p)
    assert rgb.shape == (3, 2, 2)
    assert rgb[:, 0, 0].tolist() == [1.0, -1.0, -1.0]
    g = load_image(p, channels=1)
    # ITU-R 601 weights 0.299 / 0.587 / 0.114, then * 2 - 1
    expected = torch.tensor([[0.299, 0.587], [0.114, 1.0]]) * 2 - 1
    torch.testing.assert_close(g[0], expected, atol=1e-5, rtol=0)
    g3 = load_image(save(tmp_path / "g.png", np.array([[0, 255]], np.uint8)), channels=3)
    assert g3.shape == (3, 1, 2)
    assert torch.equal(g3[0], g3[1]) and torch.equal(g3[1], g3[2])
    assert g3[:, 0, 1].tolist() == [1.0, 1.0, 1.0]


def test_alpha_is_dropped(tmp_path):
    a = np.zeros((2, 2, 4), np.uint8)
    a[..., 1] = 255  # green, fully transparent
    x = load_image(save(tmp_path / "rgba.png", a))
    assert x.shape == (3, 2, 2)
    assert x[1].eq(1.0).all() and x[0].eq(-1.0).all()
    la = load_image(save(tmp_path / "la.png", np.dstack([np.full((2, 2), 255, np.uint8),
                                                         np.zeros((2, 2), np.uint8)]), mode="LA"))
    assert la.shape == (1, 2, 2) and la.eq(1.0).all()


def test_jpeg_constant_gray(tmp_path):
    x = load_image(save(tmp_path / "c.jpg", np.full((16, 16), 128, np.uint8), quality=95))
    assert x.shape == (1, 16, 16)
    assert x.sub(128 / 255 * 2 - 1).abs().max() < 2 / 255 * 2


def test_resize_is_antialiased_and_keeps_edges(tmp_path):
    half = np.zeros((8, 8), np.uint8)
    half[:, 4:] = 255
    x = load_image(save(tmp_path / "half.png", half), resolution=4)
    assert x.shape == (1, 4, 4)
    # the outer output columns only see pixels of one side
    assert x[0, :, 0].eq(-1).all() and x[0, :, 3].eq(1).all()
    assert (x[0, 0, :-1] <= x[0, 0, 1:]).all()  # monotone across the edge
    # a 1-pixel checkerboard shrunk 4x must come out uniform mid-gray (no aliasing)
    board = ((np.indices((16, 16)).sum(0) % 2) * 255).astype(np.uint8)
    y = load_image(save(tmp_path / "board.png", board), resolution=4)
    assert y.abs().max() < 0.05
    # upsampling stays inside [-1, 1]
    z = load_image(save(tmp_path / "small.png", np.array([[0, 255]] * 2, np.uint8)), resolution=9)
    assert z.shape == (1, 9, 9) and z.min() >= -1 and z.max() <= 1


def test_truncated_and_garbage_images_give_one_line_error(tmp_path):
    with pytest.raises(DataError) as e:
        load_image(truncated_png(tmp_path / "cut.png"))
    one_line_error(e, "cut.png")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError) as e:
        load_image(tmp_path / "junk.jpg")
    one_line_error(e, "junk.jpg")
    with pytest.raises(DataError) as e:
        load_image(tmp_path / "nope.png")
    one_line_error(e, "nope.png")


# ----------------------------------------------------------------------------- class folders


def make_class_folders(root: Path) -> Path:
    gray(root / "pneumonia" / "p1.png", 255)
    gray(root / "normal" / "n1.png", 0)
    gray(root / "normal" / "sub" / "n2.png", 0)  # nested files belong to the class too
    (root / "normal" / "notes.txt").write_text("ignored")
    return root


def test_image_folder_classes_and_labels(tmp_path):
    ds = open_dataset(make_class_folders(tmp_path / "xr"))
    assert isinstance(ds, ImageFolderDataset)
    assert ds.class_names == ("normal", "pneumonia")
    assert len(ds) == 3 and ds.resolution == 8 and ds.channels == 1
    items = [ds[i] for i in range(3)]
    for it in items:
        # the pneumonia images are white, the normal ones black
        assert it["image"].mean().item() == (1.0 if it["label"] == 1 else -1.0)
        assert it["label"].dtype == torch.int64 and it["index"].dtype == torch.int64
    assert sorted(int(it["label"]) for it in items) == [0, 0, 1]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 1, 8, 8)


def test_image_folder_splits(tmp_path):
    for split in ("train", "val"):
        gray(tmp_path / split / "a" / "1.png")
        gray(tmp_path / split / "b" / "2.png")
    gray(tmp_path / "train" / "b" / "3.png")
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path)
    assert "split" in one_line_error(e, str(tmp_path))
    assert len(open_dataset(tmp_path, split="train")) == 3
    assert len(open_dataset(tmp_path, split="val")) == 2
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path, split="test")
    one_line_error(e, "test")


def test_empty_class_folder_and_missing_folder(tmp_path):
    gray(tmp_path / "a" / "1.png")
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path)
    one_line_error(e, "b")
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "missing")
    one_line_error(e, "missing")
    with pytest.raises(DataError) as e:
        ImageFolderDataset(tmp_path / "missing2")
    one_line_error(e, "missing2")


def test_unlabelled_folder_and_single_file(tmp_path):
    gray(tmp_path / "1.png", 0)
    gray(tmp_path / "2.png", 255)
    ds = open_dataset(tmp_path, channels=3, resolution=4)
    assert isinstance(ds, FileListDataset) and ds.class_names == ()
    assert ds[1]["label"].item() == -1 and ds[1]["image"].shape == (3, 4, 4)
    one = open_dataset(tmp_path / "2.png")
    assert len(one) == 1 and one[0]["image"].eq(1).all()


def test_mixed_sizes_need_resolution(tmp_path):
    gray(tmp_path / "a" / "1.png", size=8)
    gray(tmp_path / "a" / "2.png", size=12)
    ds = open_dataset(tmp_path)
    ds[0]
    with pytest.raises(DataError) as e:
        ds[1]
    assert "resolution" in one_line_error(e, "2.png")
    with pytest.raises(DataError):
        ds.verify()
    ds = open_dataset(tmp_path, resolution=6)
    ds.verify()
    assert ds[1]["image"].shape == (1, 6, 6)
    save(tmp_path / "wide.png", np.zeros((4, 8), np.uint8))
    with pytest.raises(DataError) as e:
        FileListDataset([tmp_path / "wide.png"])
    assert "square" in one_line_error(e, "wide.png")


def test_truncated_file_in_dataset_and_skip_unreadable(tmp_path, caplog):
    gray(tmp_path / "a" / "1.png", 0, size=16)
    gray(tmp_path / "a" / "2.png", 0, size=16)
    truncated_png(tmp_path / "b" / "bad.png", size=16)
    gray(tmp_path / "b" / "good.png", 255, size=16)
    ds = open_dataset(tmp_path)  # decoding is lazy...
    bad = [i for i in range(len(ds)) if ds.files[i].name == "bad.png"][0]
    with pytest.raises(DataError) as e:  # ...but the bad file fails with one line
        ds[bad]
    one_line_error(e, "bad.png")
    with pytest.raises(DataError) as e:
        ds.verify()
    one_line_error(e, "bad.png")
    with caplog.at_level(logging.WARNING, logger="medcf.data"):
        ds = open_dataset(tmp_path, skip_unreadable=True)
    assert ds.skipped == 1 and len(ds) == 3
    assert any("skipped 1" in r.getMessage() for r in caplog.records)
    assert [f.name for f in ds.files] == ["1.png", "2.png", "good.png"]
    assert ds[2]["label"].item() == 1 and ds[2]["image"].eq(1).all()


# ----------------------------------------------------------------------------- CSV


def test_csv_labels_by_name_and_int(tmp_path):
    gray(tmp_path / "img" / "a.png", 0)
    gray(tmp_path / "img" / "b.png", 255)
    named = write_csv(tmp_path / "named.csv", ["path", "label"],
                      [["img/a.png", "normal"], ["img/b.png", "cardiomegaly"]])
    ds = open_dataset(named)
    assert isinstance(ds, CSVDataset)
    assert ds.class_names == ("cardiomegaly", "normal")  # sorted names
    assert [ds[i]["label"].item() for i in range(2)] == [1, 0]
    ds = open_dataset(named, class_names=("normal", "cardiomegaly"))
    assert [ds[i]["label"].item() for i in range(2)] == [0, 1]
    ints = write_csv(tmp_path / "ints.csv", ["file", "y", "split"],
                     [["img/a.png", 0, "train"], ["img/b.png", 2, "test"]])
    ds = open_dataset(ints, path_column="file", label_column="y")
    assert ds.class_names == ("0", "1", "2") and ds[1]["label"].item() == 2
    ds = open_dataset(ints, path_column="file", label_column="y", split="test")
    assert len(ds) == 1 and ds[0]["image"].eq(1).all()


def test_csv_failures(tmp_path):
    gray(tmp_path / "a.png")
    bad_col = write_csv(tmp_path / "cols.csv", ["path", "finding"], [["a.png", "x"]])
    with pytest.raises(DataError) as e:
        open_dataset(bad_col)
    assert "label" in one_line_error(e, "cols.csv")
    with pytest.raises(DataError) as e:
        open_dataset(bad_col, path_column="image", label_column="finding")
    one_line_error(e, "cols.csv")
    unknown = write_csv(tmp_path / "unk.csv", ["path", "label"], [["a.png", "pneumonia"]])
    with pytest.raises(DataError) as e:
        open_dataset(unknown, class_names=("normal", "cardiomegaly"))
    assert "pneumonia" in one_line_error(e, "unk.csv")
    out_of_range = write_csv(tmp_path / "oor.csv", ["path", "label"], [["a.png", 3]])
    with pytest.raises(DataError) as e:
        open_dataset(out_of_range, class_names=("a", "b"))
    one_line_error(e, "oor.csv")
    missing = write_csv(tmp_path / "miss.csv", ["path", "label"], [["gone.png", 0]])
    with pytest.raises(DataError) as e:
        open_dataset(missing)
    one_line_error(e, "gone.png")
    assert open_dataset(write_csv(tmp_path / "m2.csv", ["path", "label"],
                                  [["gone.png", 0], ["a.png", 1]]), skip_unreadable=True).skipped == 1
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "empty.csv")
    one_line_error(e, "empty.csv")
    no_split = write_csv(tmp_path / "ns.csv", ["path", "label"], [["a.png", 0]])
    with pytest.raises(DataError) as e:
        open_dataset(no_split, split="val")
    one_line_error(e, "ns.csv")


# ----------------------------------------------------------------------------- MedMNIST


def make_npz(path: Path, rgb: bool = False, multilabel: bool = False) -> Path:
    shape = (4, 4, 3) if rgb else (4, 4)
    arrays = {}
    for k, (split, n) in enumerate((("train", 5), ("val", 2), ("test", 3))):
        # every image holds the constant value 50 * (split number) + image number
        arrays[f"{split}_images"] = np.stack(
            [np.full(shape, 50 * k + i, np.uint8) for i in range(n)])
        labels = np.arange(n) % 2
        # multi-label: 14 findings as in ChestMNIST, column 1 is the opposite of the others
        arrays[f"{split}_labels"] = (np.stack([labels, 1 - labels] + [labels] * 12, 1) if multilabel
                                     else labels[:, None])
    np.savez(path, **arrays)
    return path


def test_medmnist_splits_and_values(tmp_path):
    path = make_npz(tmp_path / "pneumoniamnist.npz")
    ds = open_dataset(path, split="val")
    assert isinstance(ds, MedMNISTDataset)
    assert len(ds) == 2 and ds.class_names == ("normal", "pneumonia")
    assert ds.resolution == 4 and ds.channels == 1
    assert ds[1]["image"].eq(51 / 255 * 2 - 1).all() and ds[1]["label"].item() == 1
    all_ = open_dataset(path)
    assert len(all_) == 10
    # train (5), val (2), test (3) in order: item 7 is test image 0 with value 100
    assert all_[7]["image"][0, 0, 0].item() == pytest.approx(100 / 255 * 2 - 1)
    assert all_[7]["index"].item() == 7
    test = open_dataset(path, split="test", resolution=8, channels=3)
    assert test[2]["image"].shape == (3, 8, 8)
    with pytest.raises(DataError) as e:
        open_dataset(path, split="holdout")
    one_line_error(e, "holdout")


def test_medmnist_rgb_multilabel_and_errors(tmp_path):
    rgb = open_dataset(make_npz(tmp_path / "bloodmnist.npz", rgb=True), split="train")
    assert rgb.channels == 3 and rgb[0]["image"].shape == (3, 4, 4)
    assert rgb.class_names == ("0", "1")
    ml = make_npz(tmp_path / "chestmnist.npz", multilabel=True)
    with pytest.raises(DataError) as e:
        open_dataset(ml)
    assert "label_index" in one_line_error(e, "chestmnist.npz")
    ds = open_dataset(ml, split="train", label_index=1)
    # column 1 of chestmnist is cardiomegaly; labels there are 1 - (i % 2)
    assert ds.class_names == ("no_cardiomegaly", "cardiomegaly")
    assert [ds[i]["label"].item() for i in range(3)] == [1, 0, 1]
    np.savez(tmp_path / "organmnist3d.npz", train_images=np.zeros((2, 4, 4, 4), np.uint8),
             train_labels=np.zeros((2, 1)))
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "organmnist3d.npz")
    assert "3D" in one_line_error(e, "organmnist3d.npz")
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "pneumoniamnist_64.npz")
    msg = one_line_error(e, "pneumoniamnist_64.npz")
    assert "never downloads" in msg and "zenodo" in msg.lower() and "pneumoniamnist.npz" in msg
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "broken.npz")
    one_line_error(e, "broken.npz")


# ----------------------------------------------------------------------------- DICOM

try:
    import pydicom
except ImportError:  # the optional extra medcf[dicom] is not installed
    pydicom = None
needs_pydicom = pytest.mark.skipif(pydicom is None, reason="pydicom not installed")


def write_dcm(path: Path, raw: np.ndarray, photometric: str = "MONOCHROME2", **tags) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = raw.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = raw.astype("<u2").tobytes()
    for k, v in tags.items():
        setattr(ds, k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@needs_pydicom
def test_dicom_rescale_then_window(tmp_path):
    raw = np.array([[0, 50], [100, 75]], np.uint16)
    # rescale 2 * raw - 100 -> [-100, 0, 100, 50]; LINEAR window c=0.5, w=201 maps
    # x -> (x - 0) / 200 + 0.5, i.e. -100 -> 0, 0 -> 0.5, 100 -> 1, 50 -> 0.75
    p = write_dcm(tmp_path / "w.dcm", raw, RescaleSlope=2, RescaleIntercept=-100,
                  WindowCenter=0.5, WindowWidth=201)
    x = load_dicom(p)
    torch.testing.assert_close(x[0], torch.tensor([[-1.0, 0.0], [1.0, 0.5]]))


@needs_pydicom
def test_dicom_minmax_fallback_and_monochrome1(tmp_path):
    raw = np.array([[10, 20, 30]], np.uint16)
    m2 = load_dicom(write_dcm(tmp_path / "m2.dcm", raw))
    torch.testing.assert_close(m2[0], torch.tensor([[-1.0, 0.0, 1.0]]))
    m1 = load_dicom(write_dcm(tmp_path / "m1.dcm", raw, photometric="MONOCHROME1"))
    torch.testing.assert_close(m1[0], torch.tensor([[1.0, 0.0, -1.0]]))  # low values are bright


@needs_pydicom
def test_dicom_real_radiograph():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCI.dcm")
    ref = pydicom.dcmread(path)
    assert ref.PhotometricInterpretation == "MONOCHROME1"
    c, w = float(ref.WindowCenter), float(ref.WindowWidth)
    raw = ref.pixel_array.astype(np.float64)
    x = load_dicom(path)
    assert x.shape == (1, ref.Rows, ref.Columns) and x.dtype == torch.float32
    assert -1 <= x.min() < x.max() <= 1
    # PS3.3 LINEAR window, then MONOCHROME1 inversion, then * 2 - 1, at a few pixels
    for r, q in [(0, 0), (977, 920), (1500, 300), (int(raw.argmin() // raw.shape[1]),
                                                    int(raw.argmin() % raw.shape[1]))]:
        y = np.clip((raw[r, q] - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
        assert x[0, r, q].item() == pytest.approx((1 - y) * 2 - 1, abs=1e-5)
    ds = open_dataset(path, resolution=64, channels=3)
    assert isinstance(ds, DicomDataset) and len(ds) == 1
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["label"].item() == -1
    assert item["image"].std() > 0.05  # a real radiograph, not a flat image


@needs_pydicom
def test_dicom_folder_csv_and_failures(tmp_path):
    raw = np.array([[0, 100], [100, 0]], np.uint16)
    write_dcm(tmp_path / "scans" / "a.dcm", raw)
    write_dcm(tmp_path / "scans" / "b", raw)  # no extension: found by the DICM magic
    ds = open_dataset(tmp_path / "scans")
    assert isinstance(ds, DicomDataset) and len(ds) == 2 and ds.resolution == 2
    labels = write_csv(tmp_path / "scans" / "labels.csv", ["path", "label"],
                       [["a.dcm", "normal"], ["b", "effusion"]])
    ds = open_dataset(labels)
    assert ds.class_names == ("effusion", "normal") and ds[1]["label"].item() == 0
    assert DicomDataset(tmp_path / "scans", labels=labels)[0]["label"].item() == 1
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(DataError) as e:
        load_dicom(tmp_path / "fake.dcm")
    one_line_error(e, "fake.dcm")
    data = (tmp_path / "scans" / "a.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-4])
    with pytest.raises(DataError) as e:
        load_dicom(tmp_path / "cut.dcm")
    one_line_error(e, "cut.dcm")
    write_dcm(tmp_path / "multi.dcm", np.zeros((2, 2), np.uint16), NumberOfFrames=2)
    with pytest.raises(DataError) as e:
        load_dicom(tmp_path / "multi.dcm")
    one_line_error(e, "multi.dcm")


@needs_pydicom
def test_dicom_without_pydicom_says_how_to_install(tmp_path, monkeypatch):
    p = write_dcm(tmp_path / "a.dcm", np.zeros((2, 2), np.uint16))
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom now raises ImportError
    with pytest.raises(DataError) as e:
        load_dicom(p)
    assert "medcf[dicom]" in one_line_error(e, "a.dcm")


# ----------------------------------------------------------------------------- synthetic folder

FO = ["pacemaker", "electrodes", "marker"]
NUIS = ["rotation", "shift_x"]


def make_synth_folder(root: Path, n: int = 10, res: int = 4, version: int = 1) -> Path:
    """A hand-built folder following the medcf-synthetic spec."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    info = {"format": "medcf-synthetic", "version": version, "task": "cardiomegaly",
            "resolution": res, "n": n, "seed": 0, "class_names": ["normal", "cardiomegaly"],
            "fo_names": FO, "nuisance_names": NUIS, "config": {}}
    (root / "dataset.json").write_text(json.dumps(info))
    rows = []
    for i in range(n):
        s = f"{i:06d}"
        save(root / "images" / f"{s}.png", np.full((res, res), 25 * i, np.uint8))
        heart = np.zeros((res, res), np.uint8)
        heart[1:3, 1:3] = 255
        save(root / "masks" / f"{s}_heart.png", heart)
        fo = np.zeros((res, res), np.uint8)
        fo[0, 0], fo[0, 1] = 5, 2  # pacemaker + marker at (0,0); electrodes at (0,1)
        save(root / "masks" / f"{s}_fo.png", fo)
        lesion = ""
        if i % 2:
            lesion = f"masks/{s}_lesion.png"
            save(root / lesion, np.full((res, res), 255, np.uint8))
        split = "test" if i % 10 == 9 else "val" if i % 10 == 8 else "train"
        rows.append([i, split, f"images/{s}.png", i % 2, 0.4 + 0.01 * i, i % 2, 1, 1, 0, 0,
                     0.5 * i, -i, f"masks/{s}_heart.png", lesion, f"masks/{s}_fo.png"])
    write_csv(root / "metadata.csv", ["index", "split", "image", "label", "ctr", "lesion", *FO,
                                      "spurious", *NUIS, "heart_mask", "lesion_mask", "fo_mask"], rows)
    return root


def test_synthetic_folder_reads_every_key(tmp_path):
    root = make_synth_folder(tmp_path / "s")
    ds = open_dataset(root)
    assert isinstance(ds, SyntheticFolderDataset)
    assert len(ds) == 10 and ds.class_names == ("normal", "cardiomegaly")
    assert ds.channels == 1 and ds.resolution == 4
    it = ds[3]
    assert it["image"].shape == (1, 4, 4)
    assert it["image"][0, 0, 0].item() == pytest.approx(75 / 255 * 2 - 1)
    assert it["label"].item() == 1 and it["index"].item() == 3
    assert it["ctr"].item() == pytest.approx(0.43)
    assert it["heart_mask"].shape == (1, 4, 4) and it["heart_mask"].sum().item() == 4
    assert it["lesion"].item() == 1 and it["lesion_mask"].sum().item() == 16
    assert ds[2]["lesion_mask"].sum().item() == 0 and ds[2]["lesion"].item() == 0
    assert it["fo_flags"].tolist() == [1.0, 1.0, 0.0]
    fo = it["fo_masks"]
    assert fo.shape == (3, 4, 4)
    assert fo[:, 0, 0].tolist() == [1.0, 0.0, 1.0] and fo[:, 0, 1].tolist() == [0.0, 1.0, 0.0]
    assert fo.sum().item() == 3
    assert it["spurious"].item() == 0 and it["nuisance"].tolist() == [1.5, -3.0]
    for key, dtype in [("image", torch.float32), ("label", torch.int64), ("index", torch.int64),
                       ("ctr", torch.float32), ("nuisance", torch.float32)]:
        assert it[key].dtype == dtype


def test_synthetic_folder_splits_resize_and_channels(tmp_path):
    root = make_synth_folder(tmp_path / "s")
    assert [len(open_dataset(root, split=s)) for s in ("train", "val", "test")] == [8, 1, 1]
    val = open_dataset(root, split="val")
    assert val[0]["index"].item() == 8  # the benchmark index, not the position
    big = open_dataset(root / "dataset.json", resolution=8, channels=3)
    it = big[3]
    assert it["image"].shape == (3, 8, 8) and it["heart_mask"].shape == (1, 8, 8)
    assert it["fo_masks"].shape == (3, 8, 8)
    assert set(it["heart_mask"].unique().tolist()) <= {0.0, 1.0}
    assert it["heart_mask"].sum().item() == 16  # the 2x2 block becomes 4x4


def test_synthetic_folder_failures(tmp_path):
    root = make_synth_folder(tmp_path / "v2", version=2)
    with pytest.raises(DataError) as e:
        open_dataset(root)
    assert "version" in one_line_error(e, "dataset.json")
    root = make_synth_folder(tmp_path / "gone")
    (root / "images" / "000004.png").unlink()
    with pytest.raises(DataError) as e:
        open_dataset(root)
    one_line_error(e, "000004.png")
    assert open_dataset(root, skip_unreadable=True).skipped == 1
    root = make_synth_folder(tmp_path / "cut", res=16)
    truncated_png(root / "images" / "000002.png", size=16)
    ds = open_dataset(root)
    with pytest.raises(DataError) as e:
        ds[2]
    one_line_error(e, "000002.png")
    ds = open_dataset(root, skip_unreadable=True)
    assert ds.skipped == 1 and 2 not in [ds[i]["index"].item() for i in range(len(ds))]
    root = make_synth_folder(tmp_path / "cols")
    text = (root / "metadata.csv").read_text().replace("electrodes", "wires", 1)
    (root / "metadata.csv").write_text(text)
    with pytest.raises(DataError) as e:
        open_dataset(root)
    assert "electrodes" in one_line_error(e, "metadata.csv")


def test_synthetic_folder_matches_in_memory_renderer(tmp_path):
    from medcf.data import synthetic  # medcf's own modules: a broken import must fail, not skip
    from medcf.data import synthetic_writer as writer

    config = synthetic.SynthConfig(resolution=32)
    writer.write_synthetic(config, 10, tmp_path / "w", seed=3, progress=False)
    disk = open_dataset(tmp_path / "w", split="train")
    mem = synthetic.SyntheticDataset(config, 10, seed=3)
    assert len(disk) == 8 and disk.class_names == mem.class_names
    for i in (0, 5, 7):
        a = disk[i]
        b = mem[a["index"].item()]
        assert a.keys() == b.keys()
        # 8-bit quantisation: at most half a grey level (1/255 in [-1, 1] units)
        assert (a["image"] - b["image"]).abs().max() <= 1 / 255 + 1e-6
        for key in ("label", "index", "heart_mask", "lesion_mask", "fo_masks", "fo_flags",
                    "lesion", "spurious"):
            assert torch.equal(a[key], b[key].to(a[key].dtype)), key
        torch.testing.assert_close(a["ctr"], b["ctr"])
        torch.testing.assert_close(a["nuisance"], b["nuisance"])


# ----------------------------------------------------------------------------- dispatch


def test_every_reader_refuses_an_unknown_split_with_the_same_line(tmp_path):
    npz = make_npz(tmp_path / "pneumoniamnist.npz")
    synth = make_synth_folder(tmp_path / "s")
    save(tmp_path / "f" / "a" / "x.png", np.zeros((4, 4), np.uint8))
    opened = [(lambda: MedMNISTDataset(npz, split="training"), npz),
              (lambda: SyntheticFolderDataset(synth, split="training"), synth),
              (lambda: open_dataset(tmp_path / "f", split="training"), tmp_path / "f")]
    for open_it, where in opened:
        with pytest.raises(DataError) as e:
            open_it()
        assert str(e.value) == f"{where}: unknown split 'training'; choose one of train, val, test"

def test_open_dataset_rejects_unknown_things(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "notes.txt")
    one_line_error(e, "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "empty")
    one_line_error(e, "empty")
    gray(tmp_path / "one.png")
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "one.png", split="train")
    one_line_error(e, "one.png")
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "one.png", channels=2)
    one_line_error(e, "channels")


def test_describe_and_inspect_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    from medcf.cli.data_inspect import register
    from medcf.data.dispatch import describe_dataset

    root = make_class_folders(tmp_path / "xr")
    facts = describe_dataset(open_dataset(root), verify=True)
    assert facts["items"] == 3 and facts["label_counts"] == {"normal": 2, "pneumonia": 1}
    assert facts["first_image_range"] == [-1.0, -1.0]  # first item is a black "normal" image
    app = typer.Typer()
    register(app)

    @app.callback()
    def _group() -> None:  # keep "inspect" a subcommand, as under `medcf data`
        pass

    out = CliRunner().invoke(app, ["inspect", str(root), "--json", "--resolution", "4", "--no-progress"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert got["resolution"] == 4 and got["class_names"] == ["normal", "pneumonia"]
    help_text = CliRunner().invoke(app, ["inspect", "--help"]).output
    assert "Example: medcf data inspect" in help_text
