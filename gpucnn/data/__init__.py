"""Datasets (lines, fashion-mnist, mnist), the IDX reader and the device-resident loader."""

from .datasets import (
    DataNotFoundError,
    Dataset,
    dataset_info,
    dataset_names,
    find_idx_files,
    load_dataset,
    write_idx_dataset,
)
from .idx import IdxError, read_idx, write_idx
from .lines import generate_lines
from .loader import DataLoader, random_flip, random_shift

__all__ = [
    "DataLoader",
    "DataNotFoundError",
    "Dataset",
    "IdxError",
    "dataset_info",
    "dataset_names",
    "find_idx_files",
    "generate_lines",
    "load_dataset",
    "random_flip",
    "random_shift",
    "read_idx",
    "write_idx",
    "write_idx_dataset",
]
