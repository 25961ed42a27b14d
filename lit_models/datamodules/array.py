"""Labelled sequences from NPZ or CSV files (``ArrayDataModule``), and what every sequence-array DataModule shares.

Every sequence-array DataModule (this one, ``mnist1d.py``, ``adding.py``) knows, right after ``__init__``, its
``task`` ("classification" or "regression"), ``num_classes`` (classes; regression targets), ``class_names`` (class
names; target names) and ``input_size`` (features per step). Batches are dicts::

    inputs   N x T x input_size float32, zero after each sequence's length
    lengths  N int64, valid steps per sequence
    target   N int64 class indices (classification) | N x num_classes float32 (regression)
    index    N int64, each sequence's position in its split (names it in predictions)

Files are read and checked in the main process (in ``setup``, or at the first look at ``num_classes`` when the
file decides it), so a bad value is an error naming the file and row, never a traceback from a worker.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from lit_models.datamodules.base import SplitDataModule, check_fractions
from lit_models.datamodules.files import DataError
from lit_models.datamodules.sequence_files import SequenceArrays, read_sequences, read_unlabelled
from lit_models.datamodules.spec import DataSpec


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


class SequenceArraysDataModule(SplitDataModule):
    """Padded batches of float sequences (``collate_sequences``); ``predict`` serves the test split, else val.

    Subclasses set ``task``, ``class_names``, ``input_size`` and ``seq_len`` (steps of every sequence, None where
    they differ). A model trained on any of them predicts on sequence files: ``for_prediction`` gives an
    :class:`ArrayDataModule`.
    """

    task: str
    input_size: int | None
    seq_len: int | None

    def __init__(self) -> None:
        super().__init__()
        self.collate_fn = collate_sequences

    @property
    def spec(self) -> DataSpec:
        return DataSpec(self.task, "features", self.class_names, input_size=self.input_size, seq_len=self.seq_len)

    @classmethod
    def for_prediction(cls, hparams: dict[str, Any], inputs: Any, class_names: list[str]) -> ArrayDataModule:
        """An :class:`ArrayDataModule` with this data's task and batch sizes that serves only ``inputs`` (one NPZ of
        x, or a CSV of values only) to ``predict``, with the model's classes: generated data (MNIST-1D, the adding
        problem) has no files of its own to predict on. Arguments as ``SplitDataModule.for_prediction``'s."""
        if cls is ArrayDataModule:
            return super().for_prediction(hparams, inputs, class_names)
        # A CSV holds input_size values per step, which an ArrayDataModule's own arguments call features.
        defaults = {"task": cls.task, "features": cls.input_size}
        return ArrayDataModule.for_prediction({**defaults, **hparams}, inputs, class_names)

    @classmethod
    def prediction_arguments(cls, inputs: Any) -> dict[str, Any]:
        """``inputs``: one NPZ file of x (and lengths) or a CSV of values only, as ``predict_path``."""
        files = [inputs] if inputs is None or isinstance(inputs, (str, os.PathLike)) else list(inputs)
        if len(files) != 1:
            raise DataError(f"predict reads one NPZ or CSV file of sequences, got {len(files)} inputs: {files}")
        return {"path": None, "test_path": None, "predict_path": None if files[0] is None else str(files[0])}


class InMemorySequenceDataModule(SequenceArraysDataModule):
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

        With neither ``path`` nor ``predict_path`` (but ``class_names``), it serves nothing: a model's data rebuilt
        from its checkpoint (``from_checkpoint``), whose ``prediction_data`` serves files.
        """
        super().__init__()
        self.save_hyperparameters()
        check_fractions(val_fraction)
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if label_columns < 1 or features < 1:
            raise ValueError(f"label_columns and features must be >= 1, got {label_columns} and {features}")
        if path is None and predict_path is None and not class_names:
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

    def use_class_names(self, class_names: list[str]) -> None:
        self._class_names = class_names

    @property
    def shape_arrays(self) -> SequenceArrays | None:
        """The sequences that decide input_size and seq_len: the training file's, else predict_path's, else None."""
        if self.path is not None:
            return self.train_arrays
        return self.predict_arrays if self.hparams.predict_path else None

    @property
    def input_size(self) -> int | None:
        return self.shape_arrays.input_size if self.shape_arrays else None

    @property
    def seq_len(self) -> int | None:
        lengths = {len(sequence) for sequence in self.shape_arrays.sequences} if self.shape_arrays else set()
        return lengths.pop() if len(lengths) == 1 else None

    def missing_split(self, split: str) -> str:
        return f"give test_path, or save x_test and y_test in {self.path}."

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
