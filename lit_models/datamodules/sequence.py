"""Sequence DataModules: labelled arrays (NPZ/CSV), MNIST-1D, the adding problem, and text (``text.py``).

Every sequence DataModule knows, right after ``__init__``, its ``task`` ("classification", "regression" or
"language_model"), ``num_classes`` (classes; regression targets; vocabulary size), ``class_names`` (class names;
target names; vocabulary tokens in id order) and ``input_size`` (features per step; None for token ids). Batches
of float sequences are dicts::

    inputs   N x T x input_size float32, zero after each sequence's length
    lengths  N int64, valid steps per sequence
    target   N int64 class indices (classification) | N x num_classes float32 (regression)

Files are read and checked in the main process (in ``setup``, or at the first look at ``num_classes`` when the
file decides it), so a bad value is an error naming the file and row, never a traceback from a worker.
"""

from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from lit_models.datamodules.base import check_fractions, default_cache_dir
from lit_models.datamodules.files import DataError
from lit_models.datamodules.loaders import split_batch_size, split_loader
from lit_models.datamodules.sequence_files import SequenceArrays, read_sequences, read_unlabelled
from lit_models.datamodules.sources import mnist1d
from lit_models.datamodules.sources.export import COMPLETE_MARKER
from lit_models.datamodules.text import TextDataModule

__all__ = [
    "AddingProblemDataModule",
    "ArrayDataModule",
    "MNIST1DDataModule",
    "SequenceDataModule",
    "TextDataModule",
    "collate_sequences",
]

log = logging.getLogger(__name__)


def collate_sequences(samples: list[tuple[torch.Tensor, torch.Tensor, int]]) -> dict[str, torch.Tensor]:
    """Pad (sequence T_i x D, target, index in its split) triples into the batch dict; padding is zero. The index
    names each sequence in predictions."""
    sequences = [sequence for sequence, _, _ in samples]
    batch = {
        "inputs": pad_sequence(sequences, batch_first=True),  # N x max T_i x D
        "lengths": torch.tensor([len(s) for s in sequences], dtype=torch.int64),
        "index": torch.tensor([index for _, _, index in samples], dtype=torch.int64),
    }
    if samples[0][1] is not None:  # sequences to predict on have no targets
        batch["target"] = torch.stack([target for _, target, _ in samples])  # N | N x O
    return batch


class SequenceDataset(Dataset):
    """In-memory, already checked sequences and targets."""

    def __init__(self, arrays: SequenceArrays) -> None:
        self.sequences = [torch.from_numpy(s) for s in arrays.sequences]
        self.targets = torch.from_numpy(arrays.targets) if arrays.targets is not None else None

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        return self.sequences[index], None if self.targets is None else self.targets[index], index


def hold_out(count: int, fraction: float, seed: int | None, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: ``fraction`` of ``count`` (at least one) held out, seeded, or the last ones if None."""
    if count < 2:
        raise DataError(f"{source} has {count} training sequence(s); a validation split needs 2 or more.")
    held = min(count - 1, max(1, round(count * fraction)))
    if seed is None:
        return np.arange(count - held), np.arange(count - held, count)
    val = np.sort(np.random.default_rng(seed).choice(count, held, replace=False))
    return np.setdiff1d(np.arange(count), val), val


class SequenceDataModule(pl.LightningDataModule):
    """Loaders over ``self.datasets[split]`` for padded sequence batches; subclasses fill the datasets in ``setup``.

    Subclasses save the hyperparameters ``batch_size``, ``eval_batch_size`` and ``num_workers`` and fill
    ``self.datasets`` ("train", "val", optionally "test"). ``predict`` serves the test split, else val.
    """

    task: str
    input_size: int | None

    def __init__(self) -> None:
        super().__init__()
        self.datasets: dict[str, Dataset] = {}

    def missing_split(self, split: str) -> str:
        return f"this data has no {split} split."

    def loader(self, split: str, train: bool) -> DataLoader:
        hp = self.hparams
        if split not in self.datasets:
            raise DataError(self.missing_split(split))
        return split_loader(
            self.datasets[split],
            train=train,
            batch_size=split_batch_size(hp, train),
            num_workers=hp.num_workers,
            trainer=self.trainer,
            collate_fn=collate_sequences,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        split = "predict" if "predict" in self.datasets else "test" if "test" in self.datasets else "val"
        return self.loader(split, train=False)

    @classmethod
    def for_prediction(cls, hparams: dict[str, Any], inputs: Any, class_names: list[str]) -> ArrayDataModule:
        """Data for a model trained on any sequence arrays: an :class:`ArrayDataModule` that serves only
        ``inputs`` (one NPZ of x, or a CSV of values only) to ``predict``, with the checkpoint's classes."""
        files = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        if len(files) != 1:
            raise DataError(f"predict reads one NPZ or CSV file of sequences, got {len(files)} inputs: {files}")
        return ArrayDataModule(
            predict_path=str(files[0]),
            task=hparams.get("task") or cls.task,
            class_names=list(class_names),
            features=hparams.get("features", 1),
            batch_size=hparams.get("eval_batch_size") or hparams.get("batch_size", 64),
        )


class InMemorySequenceDataModule(SequenceDataModule):
    """Sequences read whole into memory (``SequenceArrays``, from NPZ or CSV files): the base of ``ArrayDataModule``
    and ``MNIST1DDataModule``. Checks train/test agreement and holds validation out of train."""

    def fill_datasets(
        self, train: SequenceArrays, test: SequenceArrays | None, val_fraction: float, seed: int | None
    ) -> None:
        for arrays in (train, test) if test is not None else (train,):
            self.check_agrees(arrays)
        train_indices, val_indices = hold_out(len(train.sequences), val_fraction, seed, train.source)
        self.datasets = {"train": SequenceDataset(train.subset(train_indices))}
        self.datasets["val"] = SequenceDataset(train.subset(val_indices))
        if test is not None:
            self.datasets["test"] = SequenceDataset(test)

    def check_agrees(self, arrays: SequenceArrays) -> None:
        """Every sequence has input_size features, labels index class_names, targets have num_classes columns."""
        sizes = np.array([s.shape[1] for s in arrays.sequences])
        if (bad := np.flatnonzero(sizes != self.input_size)).size:
            raise DataError(
                f"{arrays.source}: sequence {bad[0]} has {sizes[bad[0]]} features per step, the training data "
                f"{self.input_size}; every sequence needs the same number."
            )
        if self.task == "classification":
            if (bad := np.flatnonzero(arrays.targets >= self.num_classes)).size:
                raise DataError(
                    f"{arrays.source}: sequence {bad[0]} has label {arrays.targets[bad[0]]}, but there are "
                    f"{self.num_classes} classes ({self.class_names[:10]}...). Give class_names for every class."
                )
        elif arrays.targets.shape[1] != self.num_classes:
            raise DataError(
                f"{arrays.source} has {arrays.targets.shape[1]} regression targets per sequence; expected "
                f"{self.num_classes} ({self.class_names})."
            )


class ArrayDataModule(InMemorySequenceDataModule):
    """Labelled sequences from an NPZ or CSV file (formats: ``lit_models.datamodules.sequence_files``).

    ``num_classes``, ``class_names`` and ``input_size`` need the training file's labels and shape: they are read
    (and the whole file checked) at the first look, not in ``__init__``; with ``class_names`` given,
    ``num_classes`` is known without reading. Without ``class_names``, classification has max(label) + 1 classes
    named "0", "1", ...; regression targets are named "y" (one) or "y0", "y1", ....
    """

    def __init__(
        self,
        path: str | None = None,
        test_path: str | None = None,
        task: Literal["classification", "regression"] = "classification",
        val_fraction: float = 0.1,
        batch_size: int = 64,
        class_names: list[str] | None = None,
        label_columns: int = 1,
        features: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        split_seed: int | None = 0,
        predict_path: str | None = None,
    ) -> None:
        """Configure the data.

        Args:
            path: Training sequences: an .npz (keys x, y, optional lengths, optional x_test/y_test) or a .csv
                (one sequence per line: label field(s), then values). None: only ``predict_path`` is served.
            test_path: Test sequences in the same format; default: the NPZ's x_test/y_test, if any.
            task: "classification" (integer labels 0..K-1) or "regression" (float targets).
            val_fraction: Share of the training sequences held out for validation.
            batch_size: Training batch size per device.
            class_names: Names of the classes (classification) or targets (regression), in label order.
            label_columns: CSV only: leading fields of each line that are the label or targets.
            features: CSV only: values per step (stored step-major: t0 f0, t0 f1, t1 f0, ...).
            eval_batch_size: Validation/test/predict batch size per device (default: batch_size).
            num_workers: DataLoader worker processes per device.
            split_seed: Seed of the held-out validation sequences; None holds out the last ones.
            predict_path: Sequences for ``predict``, without labels: an .npz with x (and lengths) or a .csv of
                values only; default: the test split, else val.
        """
        super().__init__()
        self.save_hyperparameters()
        check_fractions(val_fraction)
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if label_columns < 1 or features < 1:
            raise ValueError(f"label_columns and features must be >= 1, got {label_columns} and {features}")
        if path is None and predict_path is None:
            raise DataError(
                "ArrayDataModule needs path (training sequences) or predict_path (sequences to predict on)."
            )
        self.path = Path(path).expanduser() if path is not None else None
        if self.path is not None and not self.path.is_file():
            raise DataError(
                f"sequence file {self.path} does not exist or is not a file. Pass --data.path an .npz file (arrays "
                "x, y, optionally lengths, x_test, y_test) or a .csv/.tsv/.txt file (one sequence per line: the "
                "label field(s), then the values)."
            )
        self.task = task
        self._class_names = list(class_names) if class_names else None

    def read(self, path: str | Path, test: bool = False) -> SequenceArrays | None:
        hp = self.hparams
        return read_sequences(path, self.task, test, hp.label_columns, hp.features)

    @cached_property
    def train_arrays(self) -> SequenceArrays:
        if self.path is None:
            raise DataError("this ArrayDataModule has no training file (path): it serves predict_path only.")
        return self.read(self.path)

    @cached_property
    def predict_arrays(self) -> SequenceArrays:
        return read_unlabelled(self.hparams.predict_path, self.hparams.features)

    @property
    def class_names(self) -> list[str]:
        if self._class_names is not None:
            return self._class_names
        if self.task == "classification":
            return [str(label) for label in range(int(self.train_arrays.targets.max()) + 1)]
        width = self.train_arrays.targets.shape[1]
        return ["y"] if width == 1 else [f"y{i}" for i in range(width)]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> int:
        return (self.train_arrays if self.path is not None else self.predict_arrays).input_size

    def missing_split(self, split: str) -> str:
        return f"{self.path} has no {split} split: give test_path, or save x_test and y_test in the NPZ."

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "predict" and hp.predict_path:  # only the sequences asked for
            sizes = {sequence.shape[1] for sequence in self.predict_arrays.sequences}
            if sizes != {self.input_size}:
                raise DataError(
                    f"{hp.predict_path}: sequences have {sorted(sizes)} features per step; the model reads "
                    f"{self.input_size}."
                )
            self.datasets["predict"] = SequenceDataset(self.predict_arrays)
            return
        if self.datasets:
            return
        test = self.read(hp.test_path) if hp.test_path else self.read(self.path, test=True)
        self.fill_datasets(self.train_arrays, test, hp.val_fraction, hp.split_seed)


class MNIST1DDataModule(InMemorySequenceDataModule):
    """MNIST-1D (Greydanus 2020): 10 classes of length-40 1-D digits, 4,000 train and 1,000 test, generated locally.

    ``prepare_data`` generates the sequences once with the ``mnist1d`` package (its ``make_dataset``, never
    the downloading ``get_dataset``) into ``root`` as an NPZ that ``setup`` reads like ``ArrayDataModule``.
    Validation is the last ``val_fraction`` of the training sequences (shuffled by the generator), so test stays
    the paper's 1,000. Reference test accuracy: logistic 32 %, MLP 68 %, CNN 94 %, GRU 91 %, human 96 %.
    """

    task = "classification"
    input_size = 1

    def __init__(
        self,
        root: str | None = None,
        num_samples: int = 5000,
        train_split: float = 0.8,
        val_fraction: float = 0.1,
        batch_size: int = 100,
        seed: int = 42,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        """Configure the data.

        Args:
            root: Folder for the generated NPZ (default: $LIT_MODELS_CACHE/mnist1d or ~/.cache/lit_models/mnist1d).
            num_samples: Sequences generated in all (500 per class by default).
            train_split: Share of them for training; the rest is the test split.
            val_fraction: Share of the training sequences (the last ones) held out for validation.
            batch_size: Training batch size per device.
            seed: The generator's seed (42 is the paper's dataset).
            eval_batch_size: Validation/test/predict batch size per device (default: batch_size).
            num_workers: DataLoader worker processes per device.
        """
        super().__init__()
        self.save_hyperparameters()
        check_fractions(val_fraction)
        if not 0 < train_split < 1:
            raise ValueError(f"train_split must be in (0, 1), got {train_split}")
        base = Path(root).expanduser() if root else default_cache_dir() / "mnist1d"
        self.root = mnist1d.export_folder(base, num_samples, train_split, seed)
        self.class_names = list(mnist1d.CLASS_NAMES)
        self.num_classes = len(self.class_names)

    @property
    def file(self) -> Path:
        return self.root / mnist1d.FILE_NAME

    def prepare_data(self) -> None:
        hp = self.hparams
        mnist1d.export_mnist1d(self.root, hp.num_samples, hp.train_split, hp.seed)

    def setup(self, stage: str) -> None:
        if self.datasets:
            return
        if not (self.root / COMPLETE_MARKER).exists():
            raise DataError(
                f"MNIST-1D is not generated in {self.root} yet: call prepare_data() before setup() "
                "(a Trainer does this itself)."
            )
        train = read_sequences(self.file, "classification")
        test = read_sequences(self.file, "classification", test=True)
        self.fill_datasets(train, test, self.hparams.val_fraction, seed=None)


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


class AddingProblemDataModule(SequenceDataModule):
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

    def setup(self, stage: str) -> None:
        hp = self.hparams
        sizes = {"train": hp.train_size, "val": hp.val_size, "test": hp.test_size}
        self.datasets = {split: AddingProblemDataset(hp.length, size, hp.seed, split) for split, size in sizes.items()}
