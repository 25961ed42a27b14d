"""A run stopped by SIGTERM (Kubernetes, spot instances, ``scancel``, most schedulers) saves where it stands and exits
as a killed process would, so ``fit --ckpt_path last`` continues from that step instead of the last epoch's end."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.seed import pl_worker_init_function
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lit_models.run_safety import CheckpointWriteError

log = logging.getLogger(__name__)

# What a shell reports for a process that SIGTERM ended (128 + 15): schedulers and scripts tell it from success.
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM
# A last*.ckpt name, so that `--ckpt_path last` takes it when it is the newest (lit_models.runs.checkpoint_folders).
CHECKPOINT_NAME = "last-sigterm.ckpt"


def checkpoint_folder(trainer: pl.Trainer) -> Path:
    """Where this run's ModelCheckpoints write (resolved on every rank at setup), else the log folder's
    ``checkpoints``, as Lightning's default ModelCheckpoint would choose."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a worker keeps serving batches through a SIGTERM sent to every process of the
    job (SLURM's ``scancel`` and preemption, a machine shutting down), so its trainer can finish the batch and save.

    PyTorch's workers die on any SIGTERM but their parent's, and the parent then fails at its next batch. Here the
    signal is blocked and a thread takes it: from the parent (its DataLoader shutting down) the worker exits as
    PyTorch's would, from anyone else it is dropped. Where Lightning seeds workers (``seed_everything(workers=True)``,
    which LightningCLI does) it still does: Lightning adds its own ``worker_init_fn`` only where none is set.
    """
    if hasattr(signal, "sigwaitinfo"):  # not on macOS, whose DataLoaders spawn rather than fork anyway
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit the mask
        threading.Thread(target=exit_on_parents_sigterm, args=(os.getppid(),), daemon=True).start()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id)


def exit_on_parents_sigterm(parent: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)  # what PyTorch's worker handler does for its parent's terminate()


class CheckpointOnSigterm(Callback):
    """On SIGTERM during ``fit``: finish the batch, save ``last-sigterm.ckpt`` beside the run's other checkpoints,
    and exit with status 143.

    Lightning 2.6 alone exits 0 after SIGTERM with nothing saved since the last epoch, and its handler is unsafe
    under DDP: it calls ``dist.broadcast`` from inside the signal handler, which pairs with whatever collective the
    other rank is in (DDP's buffer broadcast, a gradient all-reduce) and hangs or breaks the process group (measured
    on 2 CPU processes: 2 of 4 runs hung). So for ``fit`` this callback puts its own handler in the place of that
    notifier before Lightning installs it: the handler only notes the signal; at each optimizer-step boundary every
    rank learns with one all-reduce whether any rank was signalled, and all of them stop together. Lightning's
    SLURM SIGUSR1 requeue handler is untouched. DataLoader workers survive a job-wide SIGTERM through
    ``worker_init_fn`` (the package's DataModules set it).

    The checkpoint is taken where Lightning's ``ModelCheckpoint(every_n_train_steps=...)`` takes its own, at train
    batch end, so a resume restores the global step and the position in the epoch as Lightning does for those.
    ``trainer.save_checkpoint`` is collective: every rank calls it, rank 0 writes, through a temporary file.
    A validation in progress when the signal comes runs to its end first. In ``validate`` / ``test``, which have
    nothing to resume, Lightning's own handling stops the run, and the exit status is 143 as well.
    """

    def __init__(self) -> None:
        self.requested = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.requested = False
        # Lightning installs this notifier (with its SLURM handlers) when the run starts and restores the previous
        # handlers at teardown; only the notifier is replaced, and only for fit (a trainer may test after fitting).
        connector = trainer._signal_connector
        if stage == "fit":
            connector._sigterm_notifier_fn = self._note_sigterm
        else:
            vars(connector).pop("_sigterm_notifier_fn", None)

    def _note_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.fit_loop._should_accumulate():
            return  # mid-accumulation gradients are not in a checkpoint
        # A collective on every rank at every step boundary, as Lightning's own DDP SIGTERM broadcast is.
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        message = f"Stopped by SIGTERM at epoch {trainer.current_epoch}, step {trainer.global_step}"
        if trainer.checkpoint_callbacks:  # enable_checkpointing=False asked for no files
            path = checkpoint_folder(trainer) / CHECKPOINT_NAME
            try:
                trainer.save_checkpoint(path, weights_only=False)  # the full training state, not weights alone
                message += f"; saved {path}. Continue with the same command and --ckpt_path last"
            except CheckpointWriteError as error:  # rank 0's write failed (a full disk): the older files stay
                trainer.strategy.barrier("Trainer.save_checkpoint")  # where the other ranks wait for rank 0's write
                message += f"; {str(error).rstrip('.')}"
        if trainer.is_global_zero:
            log.warning(message + ".")
        raise SIGTERMException(SIGTERM_EXIT_CODE)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and exception.code is None:  # Lightning's, in validate / test
            exception.code = SIGTERM_EXIT_CODE

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # Lightning warns about this case with advice for library authors; a user resuming needs to know what it means.
        loops = checkpoint.get("loops", {}).get("fit_loop", {})
        progress = loops.get("epoch_loop.batch_progress", {})
        done = progress.get("current", {}).get("processed", 0)
        if trainer.state.fn == "fit" and done and not progress.get("is_last_batch", True):
            # The package's training loaders save their place (datamodules/resumable.py); another DataLoader does not.
            rest = "the epoch goes on with the batches it had left"
            if not loops.get("state_dict", {}).get("combined_loader"):
                rest = "the DataLoader starts a new pass, so the rest of this epoch may repeat or skip a few samples"
            log.info(f"Resuming mid-epoch (epoch {checkpoint.get('epoch', 0)}, after {done} batches): {rest}.")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning 2.6 resuming from a checkpoint of an epoch's last batch (every_n_train_steps, SIGTERM) counts
        # that epoch as done but keeps treating the next one as resumed mid-epoch: it never counts it as started
        # and skips its on_train_epoch_start, so a checkpoint taken during it is resumed as a finished epoch and its
        # batches are trained again (measured: 2 extra steps after a kill). The next epoch starts as a new one here.
        fit_loop = trainer.fit_loop
        if (
            fit_loop.restarted_mid_epoch
            and fit_loop.epoch_loop.restarted_on_train_batch_end
            and fit_loop.epoch_loop.batch_progress.is_last_batch
        ):
            fit_loop.reset_restart_stage()
