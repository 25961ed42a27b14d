"""MNIST-1D (Greydanus 2020), generated locally with the ``mnist1d`` package and exported as one NPZ file.

Ten 1-D digit templates, padded, translated, scaled, sheared and noised into sequences of length 40: 5,000 of
them by default, the first 4,000 for training and the last 1,000 for testing, as in the paper. The export holds
``x`` (N x 40 float32), ``y`` (N int64), ``x_test`` and ``y_test``, the layout ``ArrayDataModule`` reads, so the
embedded default goes through the same on-disk path as a user's arrays.

Only ``mnist1d.data.make_dataset`` is called: ``get_dataset`` downloads the paper's pickle (no timeout) and
writes it into the working directory. ``make_dataset`` re-seeds NumPy's and Python's global random generators,
so their states are saved and restored around it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

from lit_models.datamodules.sources.export import export_once

CLASS_NAMES = [str(digit) for digit in range(10)]
LENGTH = 40  # steps of every sequence (get_dataset_args' template, padding and output length)
FILE_NAME = "mnist1d.npz"


def generate(num_samples: int = 5000, train_split: float = 0.8, seed: int = 42) -> dict[str, np.ndarray]:
    """The dataset as arrays: x, y (the first ``train_split``) and x_test, y_test; global RNG states untouched."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return {
        "x": data["x"].astype(np.float32),  # 4000 x 40 with the defaults
        "y": data["y"].astype(np.int64),
        "x_test": data["x_test"].astype(np.float32),  # 1000 x 40
        "y_test": data["y_test"].astype(np.int64),
    }


def export_folder(cache_dir: str | os.PathLike, num_samples: int, train_split: float, seed: int) -> Path:
    """One folder per generation setting, so changing an argument never reads another setting's file."""
    return Path(cache_dir) / f"n{num_samples}-train{train_split:g}-seed{seed}"


def export_mnist1d(root: str | os.PathLike, num_samples: int = 5000, train_split: float = 0.8, seed: int = 42) -> Path:
    """Write ``root/mnist1d.npz`` once (atomically); later calls return at once. Returns the file."""

    def write(staging: Path) -> str:
        arrays = generate(num_samples, train_split, seed)
        np.savez(staging / FILE_NAME, **arrays)
        return f"{len(arrays['y'])} train, {len(arrays['y_test'])} test sequences of length {arrays['x'].shape[1]}"

    return export_once(root, "MNIST-1D", write) / FILE_NAME
