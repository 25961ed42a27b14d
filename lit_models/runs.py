"""Run folders as the loggers write them (``<save_dir>/<name>/version_N/``), the checkpoints inside them, and what
``--ckpt_path last|best`` names in a new process."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lit_models.datamodules.files import DataError
from lit_models.errors import UsageError

if TYPE_CHECKING:
    from pytorch_lightning import Trainer


class CheckpointNotFoundError(UsageError):
    """``--ckpt_path last|best`` names no checkpoint: no earlier ``fit`` of this configuration saved one."""


def run_versions(runs: Path) -> list[Path]:
    """The ``version_N`` folders of a run folder, newest (highest N) first."""
    found = [p for p in runs.glob("version_*") if re.fullmatch(r"version_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.removeprefix("version_")), reverse=True)


def claim_version(runs: Path) -> int:
    """Create the next free ``version_N`` folder under ``runs`` and return N.

    ``mkdir`` fails where the folder exists, so of several processes claiming at once each gets its own folder:
    one that loses a number to another takes the next.
    """
    runs.mkdir(parents=True, exist_ok=True)
    versions = run_versions(runs)
    number = int(versions[0].name.removeprefix("version_")) + 1 if versions else 0
    while True:
        try:
            (runs / f"version_{number}").mkdir()
            return number
        except FileExistsError:
            number += 1


def recorded_best(last: Path) -> Path | None:
    """The best checkpoint that a ``last.ckpt`` records (its monitored ModelCheckpoint's state), None if none."""
    # mmap: only the callback states are read, not the weights and optimizer state around them.
    try:
        saved = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a truncated or foreign file: say which, not pickle's internals
        raise DataError(f"{last} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}).") from None
    state = saved.get("callbacks") if isinstance(saved, dict) else None
    for key, value in state.items() if isinstance(state, dict) else ():
        best = value.get("best_model_path") if isinstance(value, dict) else None
        if isinstance(best, str) and best and str(key).startswith("ModelCheckpoint") and value.get("monitor"):
            return Path(best)
    return None


def logger_runs(trainer: Trainer) -> Path | None:
    """The folder holding the logger's ``version_*`` runs (``<save_dir>/<name>``), None without a logger."""
    if trainer.logger is None or trainer.logger.save_dir is None:
        return None
    return Path(trainer.logger.save_dir) / str(trainer.logger.name)


def checkpoint_folders(trainer: Trainer) -> list[Path]:
    """Folders that may hold this configuration's checkpoints, newest run first.

    With an explicit ModelCheckpoint ``dirpath`` that folder; otherwise every ``version_*/checkpoints`` of the
    logger's run folder, because a new ``test`` process has a new version number of its own.
    """
    fixed = [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
    runs = logger_runs(trainer)
    if fixed or runs is None:
        return fixed
    return [version / "checkpoints" for version in run_versions(runs)]


def requeue_checkpoint(trainer: Trainer) -> Path | None:
    """The newest ``hpc_ckpt_<n>.ckpt``: what Lightning saves into ``default_root_dir`` when SLURM signals a requeue
    (configs/trainer/slurm.yaml)."""
    found = sorted(Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def resolve_checkpoint_alias(alias: str, trainer: Trainer) -> str:
    """Turn ``last`` / ``best`` into a file from an earlier ``fit`` of the same configuration. ``last`` is the run's
    last.ckpt, or SLURM's requeue checkpoint when that is newer (Lightning itself takes it only without a
    ``ckpt_path``).

    Raises:
        CheckpointNotFoundError: No earlier fit saved one; the message names the folders searched.
    """
    requeued = requeue_checkpoint(trainer) if alias == "last" else None
    folders = checkpoint_folders(trainer)
    for folder in folders:
        lasts = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not lasts:
            continue
        if alias == "last":
            newer = requeued is not None and requeued.stat().st_mtime > lasts[-1].stat().st_mtime
            return str(requeued if newer else lasts[-1])
        best = recorded_best(lasts[-1])
        if best is None:
            raise CheckpointNotFoundError(
                f"--ckpt_path best: {lasts[-1]} records no best checkpoint (no monitored ModelCheckpoint); "
                "pass --ckpt_path last or a checkpoint file."
            )
        for candidate in (best, folder / best.name):  # the run folder may have moved since
            if candidate.exists():
                return str(candidate)
        raise CheckpointNotFoundError(f"--ckpt_path best: {lasts[-1]} names {best} as the best checkpoint, but it is "
                                      "gone; pass --ckpt_path last or a checkpoint file.")  # fmt: skip
    if requeued is not None:  # requeued before the first epoch's last.ckpt
        return str(requeued)
    runs = logger_runs(trainer)
    if folders:
        searched = ", ".join(f"{folder}/" for folder in folders)
    elif runs is not None:
        searched = f"{runs}/ (no version_* folder there)"
    else:
        searched = "nothing (no logger and no ModelCheckpoint dirpath)"
    raise CheckpointNotFoundError(f"--ckpt_path {alias}: no earlier fit of this configuration saved a last.ckpt; "
                                  f"searched {searched}.")  # fmt: skip


def run_of_checkpoint(checkpoint: str | Path, runs: Path | None) -> Path | None:
    """The ``version_N`` folder under ``runs`` whose ``checkpoints/`` holds ``checkpoint``, else None."""
    path = Path(checkpoint).resolve()
    run = path.parent.parent
    if runs is None or path.parent.name != "checkpoints" or not re.fullmatch(r"version_\d+", run.name):
        return None
    return run if run.parent == runs.resolve() else None
