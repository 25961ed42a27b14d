"""Runs that fail safely: a NaN loss stops every rank at its step with the batch's files named, a full disk leaves
the previous checkpoints as they were, and runs started together claim distinct ``version_N`` folders."""

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_quickstart
from pytorch_lightning import Callback
from test_cli import lit_models as run_command

from lit_models import ResNet
from lit_models.cli import LitModelsCLI
from lit_models.preemption import CHECKPOINT_NAME, SIGTERM_EXIT_CODE, CheckpointOnSigterm
from lit_models.run_safety import AtomicCheckpointIO, CheckpointWriteError
from lit_models.runs import claim_version

RUN = Path("runs") / "quickstart"
# 24 training images in batches of 8: 3 steps an epoch.
STEPS_PER_EPOCH = 3
# The checkpoint files of the run when the bad step began (NaNAtStep fills it).
BEFORE_BAD_STEP: dict[str, bytes] = {}


class NaNAtStep(ResNet):
    """ResNet whose training loss is NaN at global step ``$NAN_STEP`` on rank ``$NAN_RANK`` (as a learning rate that
    diverges makes it), which notes the checkpoint files as they are when that step begins."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_step != int(os.environ["NAN_STEP"]) or self.global_rank != int(os.environ["NAN_RANK"]):
            return loss
        folder = Path(self.trainer.checkpoint_callback.dirpath)
        BEFORE_BAD_STEP.update({path.name: path.read_bytes() for path in folder.glob("*.ckpt")})
        return loss * float("nan")


def checkpoints(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def global_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


# A ModelCheckpoint that saves when a run stops with an exception (a configured one replaces the module's two).
SAVES_ON_EXCEPTION = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath=kept",
                      "--trainer.callbacks.save_last=true", "--trainer.callbacks.save_on_exception=true"]  # fmt: skip


@pytest.mark.parametrize(("options", "folder"), [([], RUN / "version_0" / "checkpoints"), (SAVES_ON_EXCEPTION, "kept")])
def test_nan_loss_stops_at_its_step_naming_the_files_and_keeps_the_checkpoints(
    options, folder, image_tree, tmp_path, monkeypatch, seeded_one_thread
):
    bad = STEPS_PER_EPOCH * 2 + 1  # epoch 2, batch 1
    monkeypatch.setenv("NAN_STEP", str(bad))
    monkeypatch.setenv("NAN_RANK", "0")
    monkeypatch.chdir(tmp_path)
    BEFORE_BAD_STEP.clear()
    code, _, err = run_command("fit", *tiny_quickstart(image_tree), "--model", "test_run_safety.NaNAtStep",
                               "--trainer.max_epochs", "4", *options)  # fmt: skip

    assert code == 2
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: ") and "Traceback" not in err
    assert f"became nan at global step {bad} (epoch 2, batch 1)" in message
    assert str(image_tree / "train") in message and ".png" in message  # the batch's files
    assert "--trainer.gradient_clip_val" in message and "learning rate" in message
    assert "Checkpoints kept as they were: " in message and str(Path(folder) / "last.ckpt") in message
    # Nothing saved after the bad step: every checkpoint is byte for byte what it was when the step began.
    folder = tmp_path / folder
    assert checkpoints(folder) == BEFORE_BAD_STEP and "last.ckpt" in BEFORE_BAD_STEP
    assert global_step(folder / "last.ckpt") == 2 * STEPS_PER_EPOCH


def test_nan_loss_on_one_rank_under_ddp_stops_both_at_that_step(image_tree, tmp_path):
    ddp = ["--trainer", str(REPO / "configs" / "trainer" / "ddp_cpu.yaml"), "--data.init_args.batch_size", "4"]
    bad = STEPS_PER_EPOCH + 1  # epoch 1, batch 1 (12 images a rank in batches of 4)
    args = [
        "fit",
        *tiny_quickstart(image_tree),
        *ddp,
        "--model",
        "test_run_safety.NaNAtStep",
        "--trainer.max_epochs",
        "3",
    ]
    env = {**os.environ, "NAN_STEP": str(bad), "NAN_RANK": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "lit_models", *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=240)  # fmt: skip

    assert result.returncode == 2, result.stderr[-4000:]
    assert result.stderr.count("error: ") == 1  # rank 0 speaks for both
    message = result.stderr.strip().splitlines()[-1]
    assert f"global step {bad} (epoch 1, batch 1)" in message
    assert (
        "rank 1: " in message and "rank 0: " not in message and ".png" in message
    )  # the files of the rank that saw it
    assert global_step(tmp_path / RUN / "version_0" / "checkpoints" / "last.ckpt") == STEPS_PER_EPOCH


class DiskFullFrom:
    """``os.fsync`` that reports a full disk from its ``first``-th call on, as a file system does when the data
    written so far does not fit."""

    def __init__(self, first: int) -> None:
        self.first, self.calls = first, 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.calls >= self.first:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_write_replaces_the_file_whole_and_clears_what_a_killed_writer_left(tmp_path):
    target = tmp_path / "last.ckpt"
    (tmp_path / ".last.ckpt.partial-4242").write_bytes(b"half a checkpoint")  # its writer was killed
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)
    AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    assert torch.load(target, weights_only=True) == {"step": 2}
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_failed_write_leaves_the_previous_file_and_no_partial_one(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, target)
    before = target.read_bytes()
    monkeypatch.setattr(os, "fsync", DiskFullFrom(1))
    kept = r"the disk is full .*Nothing was replaced. Checkpoints kept as they were: .*last.ckpt"
    with pytest.raises(CheckpointWriteError, match=kept):
        AtomicCheckpointIO().save_checkpoint({"step": 2, "weights": torch.zeros(1000)}, target)
    assert target.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_full_disk_at_an_epoch_end_keeps_last_and_best_and_says_so(
    image_tree, tmp_path, monkeypatch, seeded_one_thread
):
    folder = tmp_path / RUN / "version_0" / "checkpoints"
    saved: dict[str, bytes] = {}

    class NoteCheckpoints(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            saved.clear()
            saved.update(checkpoints(folder) if folder.is_dir() else {})

    monkeypatch.setattr(os, "fsync", DiskFullFrom(3))  # epoch 0 saves best and last; epoch 1's first save fails
    monkeypatch.setattr(LitModelsCLI, "_add_callbacks", add_callback(LitModelsCLI._add_callbacks, NoteCheckpoints()))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_command("fit", *tiny_quickstart(image_tree), "--trainer.max_epochs", "3")

    assert code == 2 and "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert f"error: could not save the checkpoint {Path(RUN) / 'version_0' / 'checkpoints'}" in message
    assert "the disk is full" in message and "--trainer.logger.init_args.save_dir" in message
    assert "Checkpoints kept as they were: " in message and "last.ckpt" in message and "best-epoch=0" in message
    assert len(saved) == 2 and checkpoints(folder) == saved  # best and last of epoch 0, untouched, nothing partial


def add_callback(add_callbacks, callback: Callback):
    def patched(self) -> None:
        add_callbacks(self)
        self.trainer.callbacks.append(callback)

    return patched


class RequestStop(Callback):
    """As a SIGTERM received during one batch would: CheckpointOnSigterm stops at its end."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == 1:
            next(cb for cb in trainer.callbacks if isinstance(cb, CheckpointOnSigterm)).requested = True


def test_a_full_disk_at_sigterm_keeps_the_epochs_checkpoint_and_exits_143(
    image_tree, tmp_path, monkeypatch, caplog, seeded_one_thread
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lit-models"])
    cli = LitModelsCLI(args=[*tiny_quickstart(image_tree), "--trainer.max_epochs", "3"], run=False)
    cli.trainer.callbacks.insert(0, RequestStop())  # before CheckpointOnSigterm looks at the same batch end
    monkeypatch.setattr(os, "fsync", DiskFullFrom(3))  # after epoch 0's best and last
    with pytest.raises(SystemExit) as stopped:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    assert stopped.value.code == SIGTERM_EXIT_CODE
    folder = RUN / "version_0" / "checkpoints"
    assert f"could not save the checkpoint {folder / CHECKPOINT_NAME}: the disk is full" in caplog.text
    folder = tmp_path / folder
    assert sorted(path.name for path in folder.iterdir()) == ["best-epoch=0-step=3.ckpt", "last.ckpt"]
    assert global_step(folder / "last.ckpt") == STEPS_PER_EPOCH


def test_runs_claiming_at_once_get_distinct_folders(tmp_path):
    runs = tmp_path / "runs" / "quickstart"
    start = threading.Barrier(6)
    claimed = []

    def claim() -> None:
        start.wait()
        claimed.append(claim_version(runs))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == list(range(6))
    assert sorted(path.name for path in runs.iterdir()) == [f"version_{n}" for n in range(6)]


def test_a_run_takes_the_next_folder_when_another_claimed_its_number_first(
    image_tree, tmp_path, monkeypatch, seeded_one_thread
):
    """The other run created version_0 after this one listed the folders (an empty listing): this run's logs and
    checkpoints go to version_1, and version_0 is left alone."""
    other = tmp_path / RUN / "version_0"
    other.mkdir(parents=True)
    (other / "metrics.csv").write_text("the other run's\n")
    monkeypatch.setattr("lit_models.runs.run_versions", lambda runs: [])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lit-models"])
    LitModelsCLI(args=["fit", *tiny_quickstart(image_tree), "--trainer.max_epochs", "1"])

    assert [path.name for path in other.iterdir()] == ["metrics.csv"]
    assert (other / "metrics.csv").read_text() == "the other run's\n"
    ours = tmp_path / RUN / "version_1"
    assert (ours / "metrics.csv").is_file() and (ours / "checkpoints" / "last.ckpt").is_file()
