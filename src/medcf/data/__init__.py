"""medcf.data: the synthetic benchmark and readers for on-disk data.

``open_dataset(path)`` opens a synthetic folder, class folders, a CSV of
path,label, a MedMNIST ``.npz`` or DICOM files as a map-style dataset whose
items are dicts (``image`` float32 [C, H, W] in [-1, 1], ``label``, ``index``,
plus the ground-truth keys for synthetic data).

Example:
    >>> from medcf.data import open_dataset
    >>> ds = open_dataset("data/synth", split="train")   # doctest: +SKIP
"""

from medcf.data.dicom import DicomDataset, load_dicom
from medcf.data.dispatch import DataOptions, open_dataset
from medcf.data.folders import CSVDataset, FileListDataset, ImageFolderDataset
from medcf.data.images import UnreadableFileError, load_image
from medcf.data.medmnist import MedMNISTDataset
from medcf.data.synthetic import (
    CLASS_NAMES,
    FO_NAMES,
    NUISANCE_NAMES,
    SynthConfig,
    SyntheticDataset,
)
from medcf.data.synthetic_folder import SyntheticFolderDataset
from medcf.data.synthetic_writer import write_synthetic

__all__ = [
    "DataOptions",
    "CLASS_NAMES",
    "CSVDataset",
    "DicomDataset",
    "FO_NAMES",
    "FileListDataset",
    "ImageFolderDataset",
    "MedMNISTDataset",
    "NUISANCE_NAMES",
    "SynthConfig",
    "SyntheticDataset",
    "SyntheticFolderDataset",
    "UnreadableFileError",
    "load_dicom",
    "load_image",
    "open_dataset",
    "write_synthetic",
]
