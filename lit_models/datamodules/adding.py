"""The adding problem (Hochreiter & Schmidhuber 1997): sequences generated on the fly, no files."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from lit_models.datamodules.array import SequenceArraysDataModule

SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}


class AddingProblemDataset(Dataset):
    """Sample i drawn from a generator seeded by (seed, split, i): reproducible, and splits never share a sample."""

    def __init__(self, length: int, size: int, seed: int, split: str) -> None:
        self.length, self.size, self.seed, self.split = length, size, seed, SPLIT_STREAMS[split]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.split, index])
        steps = np.zeros((self.length, 2), dtype=np.float32)  # T x (value, marker)
        steps[:, 0] = rng.random(self.length, dtype=np.float32)
        half = self.length // 2
        marked = [rng.integers(0, half), rng.integers(half, self.length)]  # one in each half
        steps[marked, 1] = 1.0
        target = steps[marked, 0].sum(keepdims=True)  # 1 (num_classes)
        return torch.from_numpy(steps), torch.from_numpy(target), index


class AddingProblemDataModule(SequenceArraysDataModule):
    """The adding problem (Hochreiter & Schmidhuber 1997) in Le et al. 2015's and Bai et al. 2018's form.

    Each input is T x 2: channel 0 uniform in [0, 1], channel 1 a marker that is 1 at exactly two steps (one in
    the first half, one in the second) and 0 elsewhere; the target (1 value, "sum") is the sum of the two marked
    values. Always answering 1 (the mean) gives MSE 1/6 ≈ 0.167, the baseline a model must beat; Bai 2018 at
    T=600: RNN 0.177, LSTM 0.164, GRU 5.3e-5. Samples are generated on the fly (no files), sample i of a split from
    a generator seeded by (seed, split, i), so train, val and test are disjoint and every run sees the same data.
    """

    task = "regression"
    input_size = 2
    class_names = ["sum"]
    num_classes = 1

    def __init__(
        self,
        length: int = 200,
        train_size: int = 100_000,
        val_size: int = 1_000,
        test_size: int = 1_000,
        batch_size: int = 64,
        seed: int = 0,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        """Configure the data.

        Args:
            length: Steps per sequence (T; 200 in the config, 600 in Bai 2018's table).
            train_size: Training sequences per epoch.
            val_size: Validation sequences.
            test_size: Test sequences.
            batch_size: Training batch size per device.
            seed: Seed of every split's samples.
            eval_batch_size: Validation/test/predict batch size per device (default: batch_size).
            num_workers: DataLoader worker processes per device.
        """
        super().__init__()
        self.save_hyperparameters()
        if length < 2:
            raise ValueError(f"length must be at least 2 (one marker in each half), got {length}")
        if min(train_size, val_size, test_size) < 1:
            raise ValueError(f"every split needs a sample, got {train_size}, {val_size}, {test_size}")
        self.class_names = list(self.class_names)

    @property
    def seq_len(self) -> int:
        return self.hparams.length

    def setup(self, stage: str) -> None:
        hp = self.hparams
        sizes = {"train": hp.train_size, "val": hp.val_size, "test": hp.test_size}
        self.datasets = {split: AddingProblemDataset(hp.length, size, hp.seed, split) for split, size in sizes.items()}
