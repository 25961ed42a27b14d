"""Reading labelled sequences from NPZ and CSV files, checked in the main process with errors naming file and row.

NPZ keys (``np.savez``):

- ``x``: float N x T (one feature per step) or N x T x D; or an object array (a list) of N sequences, each T_i
  or T_i x D, of any lengths. Object arrays are pickled by NumPy: load only files you trust.
- ``y``: N class labels (integers 0..K-1) or regression targets; N x O for O regression targets.
- ``lengths`` (optional, with a padded ``x``): N valid steps per sequence; steps after them are ignored.
- ``x_test``, ``y_test``, ``lengths_test`` (optional): a test split in the same file.

CSV (``.csv``, ``.tsv``, ``.txt``): one sequence per line; fields separated by commas, else by whitespace. The
first ``label_columns`` fields are the label (classification: one integer) or the regression targets, the rest
the values, ``features`` per step in step-major order (t0 f0, t0 f1, t1 f0, ...). Lines may differ in length
(trailing empty fields are ignored, so padded exports read as variable-length); blank lines and lines starting
with ``#`` are skipped. There is no header line.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lit_models.datamodules.files import DataError

Task = Literal["classification", "regression"]
CSV_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass
class SequenceArrays:
    """Checked sequences (each T_i x D float32, T_i >= 1) and targets (N int64, or N x O float32; None for
    sequences to predict on)."""

    sequences: list[np.ndarray]
    targets: np.ndarray | None
    source: str  # the file (and keys) named in later messages

    @property
    def input_size(self) -> int:
        return self.sequences[0].shape[1]

    def subset(self, indices: np.ndarray) -> SequenceArrays:
        return SequenceArrays([self.sequences[i] for i in indices], self.targets[indices], self.source)


def read_sequences(
    path: str | Path, task: Task, test: bool = False, label_columns: int = 1, features: int = 1
) -> SequenceArrays | None:
    """The sequences of an NPZ or CSV file (an NPZ's ``x_test``/``y_test`` when ``test``; None if it has none)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"sequence file {path} does not exist or is not a file.")
    if path.suffix.lower() == ".npz":
        sequences, targets, where = read_npz(path, "_test" if test else "")
        if sequences is None:
            return None
    elif path.suffix.lower() in CSV_SUFFIXES:
        if test:
            return None
        sequences, targets, where = read_csv(path, label_columns, features)
    else:
        raise DataError(f"{path}: unknown sequence file type {path.suffix!r}; use .npz or .csv (see ArrayDataModule).")
    return SequenceArrays(sequences, check_targets(targets, task, path, where), str(path))


def read_unlabelled(path: str | Path, features: int = 1) -> SequenceArrays:
    """Sequences to predict on: an NPZ's x (and lengths; any y is ignored) or a CSV of values only (no label
    fields, ``features`` values per step). Their targets are None."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"sequence file {path} does not exist or is not a file.")
    if path.suffix.lower() == ".npz":
        sequences = read_npz(path, "", labelled=False)[0]
    elif path.suffix.lower() in CSV_SUFFIXES:
        sequences = read_csv(path, 0, features)[0]
    else:
        raise DataError(f"{path}: unknown sequence file type {path.suffix!r}; use .npz or .csv (see ArrayDataModule).")
    if not sequences:
        raise DataError(f"{path} holds no sequences.")
    return SequenceArrays(sequences, None, str(path))


def read_npz(
    path: Path, suffix: str, labelled: bool = True
) -> tuple[list[np.ndarray] | None, np.ndarray | None, list[str]]:
    """(sequences T_i x D, raw targets, how each index is named in messages) of keys x{suffix}, y{suffix}; without
    ``labelled``, y is not read (None)."""
    x_key, y_key, lengths_key = f"x{suffix}", f"y{suffix}", f"lengths{suffix}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if suffix and x_key not in keys:
                return None, np.empty(0), []
            missing = [key for key in (x_key, y_key)[: 2 if labelled else 1] if key not in keys]
            if missing:
                raise DataError(
                    f"{path} has no {' or '.join(missing)} array (it holds {sorted(keys)}). An NPZ of sequences needs "
                    f"x (N x T [x D] floats, or a list of sequences) and y (N labels or targets): "
                    f"np.savez(path, x=..., y=...)."
                )
            try:
                x = archive[x_key]
            except ValueError:  # an object array (variable-length sequences) is pickled
                with np.load(path, allow_pickle=True) as pickled:
                    x = pickled[x_key]
            y = archive[y_key] if labelled else None
            lengths = archive[lengths_key] if lengths_key in keys else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"cannot read {path} as NPZ: {error}. Write it with numpy.savez.") from error
    where = [f"{path} [{x_key}] index {i}" for i in range(len(x))]
    if x.dtype == object:
        if lengths is not None:
            raise DataError(
                f"{path}: {lengths_key} goes with a padded {x_key}; a list of sequences has its own lengths."
            )
        sequences = [as_steps(np.asarray(s), where[i]) for i, s in enumerate(x)]
    else:
        if x.ndim not in (2, 3) or not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{path}: {x_key} must be N x T or N x T x D numbers, got {x.dtype} of shape {x.shape}.")
        padded = x[..., None] if x.ndim == 2 else x
        valid = np.full(len(x), x.shape[1], dtype=np.int64)
        if lengths is not None:
            valid = check_lengths(lengths, len(x), x.shape[1], path, lengths_key)
        sequences = [as_steps(padded[i, : valid[i]], where[i]) for i in range(len(x))]
    if y is not None and len(y) != len(sequences):
        raise DataError(f"{path}: {x_key} holds {len(sequences)} sequences but {y_key} {len(y)} labels/targets.")
    return sequences, y, where


def check_lengths(lengths: np.ndarray, count: int, steps: int, path: Path, key: str) -> np.ndarray:
    if lengths.shape != (count,) or not np.issubdtype(lengths.dtype, np.integer):
        raise DataError(f"{path}: {key} must be {count} integers, got {lengths.dtype} of shape {lengths.shape}.")
    bad = np.flatnonzero((lengths < 1) | (lengths > steps))
    if len(bad):
        raise DataError(
            f"{path}: {key}[{bad[0]}] = {lengths[bad[0]]} is outside 1..{steps} (the padded length); every sequence "
            "needs at least one step. Remove empty sequences."
        )
    return lengths.astype(np.int64)


def as_steps(sequence: np.ndarray, where: str) -> np.ndarray:
    """One sequence as T x D float32, refusing empty ones and NaN/inf values."""
    if sequence.dtype == object or not np.issubdtype(sequence.dtype, np.number):
        raise DataError(f"{where}: values must be numbers, got {sequence.dtype}.")
    steps = sequence.reshape(-1, 1) if sequence.ndim == 1 else sequence
    if steps.ndim != 2:
        raise DataError(f"{where}: a sequence must be T or T x D values, got shape {sequence.shape}.")
    if len(steps) == 0:
        raise DataError(f"{where} is an empty (zero-length) sequence; remove it, every sequence needs a step.")
    finite = np.isfinite(steps)
    if not finite.all():
        step = int(np.argwhere(~finite)[0][0])
        raise DataError(
            f"{where} holds {steps[step][~finite[step]][0]} at step {step}; NaN and inf are not valid inputs. "
            "Fill or drop the missing values (or give shorter lengths) before training."
        )
    return np.ascontiguousarray(steps, dtype=np.float32)


def read_csv(path: Path, label_columns: int, features: int) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """(sequences T_i x features, targets N x label_columns, "file line L" for each row)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8 CSV.") from error
    sequences, targets, where = [], [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(",") if "," in line else line.split()
        while fields and not fields[-1].strip():
            fields.pop()
        name = f"{path} line {number}"
        try:
            values = np.array(fields, dtype=np.float64)
        except ValueError:
            column = next(i for i, f in enumerate(fields) if not is_number(f))
            raise DataError(
                f"{name}, field {column + 1}: {fields[column].strip()!r} is not a number. Every field must be a number "
                "(labels as integers); there is no header line (start comment lines with #)."
            ) from None
        if len(values) < label_columns:
            raise DataError(f"{name} has {len(values)} fields; it needs {label_columns} label field(s) and values.")
        values_part = values[label_columns:]
        if len(values_part) % features:
            raise DataError(
                f"{name} has {len(values_part)} values after its {label_columns} label field(s), not a multiple of "
                f"features={features}."
            )
        sequences.append(as_steps(values_part.reshape(-1, features), name))
        targets.append(values[:label_columns])
        where.append(name)
    if not sequences:
        raise DataError(f"{path} holds no sequences (no non-blank, non-comment lines).")
    return sequences, np.stack(targets), where


def is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def check_targets(targets: np.ndarray, task: Task, path: Path, where: list[str]) -> np.ndarray:
    """Classification: N int64 labels >= 0. Regression: N x O finite float32."""
    if not np.issubdtype(targets.dtype, np.number) or targets.dtype == np.bool_:
        raise DataError(f"{path}: labels/targets must be numbers, got {targets.dtype}.")
    if task == "classification":
        labels = targets.reshape(len(targets), -1)
        if labels.shape[1] != 1:
            raise DataError(
                f"{path}: classification needs one label per sequence, got {labels.shape[1]} "
                "(task='regression' for several targets)."
            )
        labels = labels[:, 0]
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 0))
        if len(bad):
            raise DataError(
                f"{where[bad[0]]}: label {labels[bad[0]]} is not a class index. Classification labels are integers "
                "0..K-1 (indices into class_names): remap them, or use task='regression'."
            )
        return labels.astype(np.int64)
    values = targets.reshape(len(targets), -1).astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad):
        raise DataError(f"{where[bad[0]]}: regression target {values[bad[0]].tolist()} is not finite; fix or drop it.")
    return values
