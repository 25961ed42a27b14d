"""Runs that fail safely: a non-finite training loss stops every rank at that step, a checkpoint is written whole or
not at all (a full disk leaves the previous one as it was), and a new run claims its own ``version_N`` folder.

Each failure ends the command with one message (:class:`RunError`) saying what happened, what was kept and what to
try, and no checkpoint is written after it.
"""

from __future__ import annotations

import errno
import glob
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher
from pytorch_lightning.trainer.connectors.signal_connector import _get_sigkill_signal
from torch import Tensor

from lit_models.runs import claim_version

# The batch files a message names before "and N more".
FILES_SHOWN = 8


class RunError(RuntimeError):
    """A run stopped because continuing would train on nonsense or lose a checkpoint; the message says what was
    kept and what to try."""


class NonFiniteLossError(RunError):
    """The training loss became NaN or infinite."""


class CheckpointWriteError(RunError):
    """A checkpoint could not be written (a full disk, a read-only folder); the previous files were left as they
    were."""


def kept_checkpoints(folders: list[Path]) -> str:
    """The sentence of a message that says what was kept: the checkpoint files in ``folders``, or that there were
    none."""
    found = sorted(path for folder in folders for path in folder.glob("*.ckpt"))
    if not found:
        return "No checkpoint had been saved yet."
    return f"Checkpoints kept as they were: {', '.join(str(path) for path in found)}."


def checkpoint_folders(trainer: pl.Trainer) -> list[Path]:
    """The folders this run's ModelCheckpoints write into (resolved at setup)."""
    folders = {Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)}
    return sorted(folders)


# ----------------------------------------------------------------------------------------------- checkpoint writes


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with a save that cannot destroy the previous file.

    Lightning writes through an fsspec transaction whose temporary file lies in the system's temporary folder; where
    that is another file system than the run's, the final move copies into the target in place, so a disk that
    fills up mid-copy truncates ``last.ckpt``. Here the checkpoint goes to a hidden file beside its target, is
    flushed to the disk (many file systems report a full disk only then) and renamed over the target, which is
    atomic. A failed write removes the partial file and raises :class:`CheckpointWriteError`; ModelCheckpoint
    removes an older best or last checkpoint only after a save returned, so those stay too. Remote paths (``s3://``)
    keep Lightning's way.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        # Serialised first, as Lightning does: torch.save reports a failed write as a RuntimeError without errno.
        data = io.BytesIO()
        torch.save(checkpoint, data)
        partial = path.with_name(f"{partial_prefix(path)}{os.getpid()}")  # no *.ckpt name: never taken for one
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as file:
                file.write(data.getbuffer())
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise CheckpointWriteError(describe_failed_write(path, error)) from error
        # What a process killed while writing this file left (one run folder has one writer: rank 0).
        for stale in path.parent.glob(glob.escape(partial_prefix(path)) + "*"):
            stale.unlink(missing_ok=True)


def partial_prefix(path: Path) -> str:
    """The start of the name a checkpoint has while it is written: hidden, and not ending in ``.ckpt``."""
    return f".{path.name}.partial-"


def describe_failed_write(path: Path, error: OSError) -> str:
    kept = kept_checkpoints([path.parent])
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        cause = f"the disk is full ({error.strerror})"
        remedy = (
            "Free space on that disk, or write the run elsewhere (--trainer.logger.init_args.save_dir DIR; without "
            "a logger, --trainer.default_root_dir DIR), then continue with the same command and --ckpt_path last."
        )
    else:
        cause = error.strerror or str(error)
        remedy = "Make the folder writable or write the run elsewhere (--trainer.logger.init_args.save_dir DIR)."
    return f"could not save the checkpoint {path}: {cause}. Nothing was replaced. {kept} {remedy}"


# ------------------------------------------------------------------------------------------------------ the guard


def describe_batch(batch: Any) -> str:
    """The files of a training batch for a message: the ``path`` our file DataModules put in their batches, the
    rows of array data (``index``), else what kind of data it was."""
    if not isinstance(batch, Mapping):
        return "an (inputs, targets) batch without file names"
    paths = list(batch.get("path") or [])
    if paths:
        more = f" and {len(paths) - FILES_SHOWN} more" if len(paths) > FILES_SHOWN else ""
        return ", ".join(str(path) for path in paths[:FILES_SHOWN]) + more
    rows = batch.get("index")
    if rows is not None:
        return f"array data, rows {', '.join(str(int(row)) for row in rows)}"
    return "array or generated data without file names"


def advice(trainer: pl.Trainer) -> str:
    """What to try after a non-finite loss, as a sentence."""
    tips = [
        "a lower learning rate (--model.optimizer.lr) or a longer warm-up (lit_models.optim.WarmupCosineLR's "
        "warmup_epochs)",
        "gradient clipping (--trainer.gradient_clip_val 1.0)",
    ]
    if str(trainer.precision).startswith("16"):
        tips.append("bf16 instead of fp16 (--trainer.precision bf16-mixed), whose range does not overflow")
    tips.append("a look at the files named above (lit-models check --config RECIPE reads every file)")
    return "Try " + "; ".join(tips) + "."


class RunSafety(Callback):
    """What every run of the CLI gets (docs/cli.md, "When a run goes wrong"):

    - the loss of every training batch is checked before its backward pass; where it is NaN or infinite on any rank,
      every rank stops at that step (one all-reduce of a flag, so no rank waits in a collective the others left) and
      the command ends with a message naming the step, the batch's files on each rank that saw it, and what to try;
    - checkpoints are written by :class:`AtomicCheckpointIO` (unless another CheckpointIO was configured);
    - after either failure no ModelCheckpoint saves on the way out (``save_on_exception``): the last good
      ``last.ckpt`` and best checkpoint stay the newest.
    """

    def __init__(self) -> None:
        self.batch: Any = None
        self.batch_idx = 0
        self.stopped = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.stopped = False
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # the default: a configured one is kept
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.batch, self.batch_idx = batch, idx  # described only if its loss is bad

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.batch = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        self.stopped = True
        seen = (trainer.global_rank, None if finite else float(loss.detach().float().sum()), describe_batch(self.batch))
        reports = [seen]
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            reports = [None] * trainer.world_size
            torch.distributed.all_gather_object(reports, seen)  # on the failing step only
        if not trainer.is_global_zero:
            raise SystemExit(2)  # rank 0 speaks for every rank
        raise NonFiniteLossError(self.describe(trainer, [report for report in reports if report[1] is not None]))

    def describe(self, trainer: pl.Trainer, bad: list[tuple[int, float, str]]) -> str:
        value = bad[0][1]
        where = f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self.batch_idx})"
        ranks = trainer.world_size > 1  # name the ranks whose batch it was
        files = "; ".join(f"rank {rank}: {files}" if ranks else files for rank, _, files in bad)
        kept = kept_checkpoints(checkpoint_folders(trainer))
        return (
            f"the training loss became {value} at {where}; training stopped before that update and nothing was "
            f"saved after it. {kept} The batch's files: {files}. {advice(trainer)}"
        )

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Runs before the ModelCheckpoints' own on_exception (Lightning calls checkpoint callbacks last).
        if self.stopped or isinstance(exception, CheckpointWriteError):
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    callback.save_on_exception = False
        launcher = trainer.strategy.launcher
        if isinstance(exception, CheckpointWriteError) and isinstance(launcher, _SubprocessScriptLauncher):
            # Only rank 0 writes, so only it failed; the other ranks wait in the save's barrier until its process
            # ends, then fail with the backend's "connection closed" traceback. Ended now, as Lightning ends them
            # on Ctrl+C, so that rank 0's message is the run's last word.
            launcher.kill(_get_sigkill_signal())


# ---------------------------------------------------------------------------------------------------- run folders


def claim_run_folders(trainer: pl.Trainer) -> None:
    """Give each folder-versioned logger (CSV, TensorBoard) without a version its own ``version_N``, created now.

    Lightning's loggers list the existing folders and create theirs later, so two runs of one recipe started
    together can take the same number and write into each other's logs and checkpoints. Creating the folder is
    the claim (:func:`lit_models.runs.claim_version`). Rank 0 claims; the other ranks take its folder, as they
    already do through Lightning's broadcast of the log and checkpoint folders.
    """
    if trainer.global_rank != 0:
        return
    claimed: dict[Path, int] = {}  # a CSV and a TensorBoard logger of one folder share the run
    for logger in trainer.loggers:
        # The constructor's ``version``: None means "the next free one", which only the claim may decide.
        if isinstance(logger, (CSVLogger, TensorBoardLogger)) and logger._version is None:
            runs = Path(logger.root_dir)
            if runs not in claimed:
                claimed[runs] = claim_version(runs)
            logger._version = claimed[runs]
