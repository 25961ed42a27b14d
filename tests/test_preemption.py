"""SIGTERM during ``fit``: a checkpoint at that step, exit status 143, and ``fit --ckpt_path last`` continuing from it,
in one process, under DDP, and beside SLURM's SIGUSR1 requeue."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli, tiny_quickstart
from pytorch_lightning import Callback
from test_cli import metrics

from lit_models.cli import LitModelsCLI
from lit_models.preemption import CHECKPOINT_NAME, SIGTERM_EXIT_CODE, CheckpointOnSigterm

RUN = Path("runs") / "quickstart"


def start_fit(args: list[str], cwd: Path) -> subprocess.Popen:
    """A long `fit` in its own process group (as a scheduler's job is), its output in fit.log."""
    with open(cwd / "fit.log", "w") as log:  # a file, not a pipe: nobody reads while it runs
        return subprocess.Popen(
            [sys.executable, "-m", "lit_models", "fit", *args, "--trainer.max_epochs", "100"],
            cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def wait_for(path: Path, process: subprocess.Popen, cwd: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} never appeared:\n{(cwd / 'fit.log').read_text()[-4000:]}")
        time.sleep(0.05)


def stop(process: subprocess.Popen, cwd: Path, whole_group: bool) -> str:
    """SIGTERM to the job's every process (as SLURM and a shutting-down machine send it) or to the first one only (as
    Kubernetes does); the exit status must be a killed process's."""
    if whole_group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"no exit 2 minutes after SIGTERM:\n{(cwd / 'fit.log').read_text()[-4000:]}") from None
    output = (cwd / "fit.log").read_text()
    assert code == SIGTERM_EXIT_CODE, output[-4000:]
    return output


def step(path: Path) -> tuple[int, int]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint["global_step"], checkpoint["epoch"]


def test_sigterm_saves_that_step_exits_143_and_fit_last_continues_there(image_tree, tmp_path):
    # Batch 1: 24 steps an epoch, so the signal comes mid-epoch; a DataLoader worker, which gets the signal too.
    args = [*tiny_quickstart(image_tree), "--data.init_args.batch_size", "1", "--data.init_args.num_workers", "1",
            "--trainer.log_every_n_steps", "1"]  # fmt: skip
    folder = tmp_path / RUN / "version_0" / "checkpoints"
    process = start_fit(args, tmp_path)
    wait_for(folder / "last.ckpt", process, tmp_path)
    output = stop(process, tmp_path, whole_group=True)
    assert f"saved {RUN / 'version_0' / 'checkpoints' / CHECKPOINT_NAME}" in output

    stopped_at, epoch = step(folder / CHECKPOINT_NAME)
    assert stopped_at > step(folder / "last.ckpt")[0]  # newer than the last epoch's end

    # The resumed run trains the rest of the stopped epoch only, from the saved step on, then one more epoch.
    resume = ["fit", *args, "--trainer.max_epochs", str(epoch + 2), "--ckpt_path", "last"]
    output += run_cli(*resume, cwd=tmp_path, env={"PYTHONWARNINGS": ""}).stderr  # warnings as a user sees them
    resumed = tmp_path / RUN / "version_1"
    assert int(metrics(resumed)[0]["step"]) == stopped_at
    assert step(resumed / "checkpoints" / "last.ckpt") == (24 * (epoch + 2), epoch + 1)
    assert "Resuming mid-epoch" in output
    noise = ["LeafSpec", "💡", "will override existing callbacks", "dirpath has changed", "than the logging interval",
             "ended before the epoch ended", "Seed set to", "weights_only"]  # fmt: skip
    assert not [line for line in output.splitlines() if any(word in line for word in noise)]


def test_sigterm_to_rank_0_under_ddp_stops_every_rank_at_one_step(image_tree, tmp_path):
    ddp = ["--trainer", str(REPO / "configs" / "trainer" / "ddp_cpu.yaml"), "--data.init_args.batch_size", "1"]
    folder = tmp_path / RUN / "version_0" / "checkpoints"
    process = start_fit([*tiny_quickstart(image_tree), *ddp], tmp_path)
    wait_for(folder / "last.ckpt", process, tmp_path)
    output = stop(process, tmp_path, whole_group=False)  # rank 1 learns it from rank 0
    assert output.count("Stopped by SIGTERM") == 1  # rank 0 speaks for both
    assert step(folder / CHECKPOINT_NAME)[0] > step(folder / "last.ckpt")[0]


class SendSigterm(Callback):
    """Sends this process SIGTERM at the end of one batch, after checking whose handlers will receive it."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.handlers: dict[str, list] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx != self.batch:
            return
        for name in ("SIGTERM", "SIGUSR1"):
            handler = signal.getsignal(getattr(signal, name))
            self.handlers[name] = [getattr(f, "__func__", f) for f in getattr(handler, "signal_handlers", [])]
        # Sending it without our handler in place would end the test process itself.
        assert CheckpointOnSigterm._note_sigterm in self.handlers["SIGTERM"]
        os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_beside_slurm_requeue_stops_at_the_next_batch_end(image_tree, tmp_path, monkeypatch):
    """In-process with the SLURM overlay (on one CPU): the SIGUSR1 requeue handler stays, the step is exact, and the
    process's own SIGTERM handler is back after the run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lit-models"])
    for name, value in {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1", "SLURM_PROCID": "0",
                        "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "lit-models",
                        "SLURM_NODELIST": "localhost"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("MASTER_ADDR", "MASTER_PORT"):  # SLURMEnvironment writes them: monkeypatch undoes that
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    slurm = ["--trainer", str(REPO / "configs" / "trainer" / "slurm.yaml"), "--trainer.accelerator", "cpu",
             "--trainer.strategy", "auto", "--trainer.precision", "32-true"]  # fmt: skip
    args = [*tiny_quickstart(image_tree), *slurm, "--trainer.max_epochs", "1"]
    before = signal.getsignal(signal.SIGTERM)
    cli = LitModelsCLI(args=args, run=False)
    sender = SendSigterm(batch=1)
    cli.trainer.callbacks.insert(0, sender)  # before CheckpointOnSigterm looks at the same batch end
    with pytest.raises(SystemExit) as stopped:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert stopped.value.code == SIGTERM_EXIT_CODE
    assert any(f.__name__ == "_slurm_sigusr_handler_fn" for f in sender.handlers["SIGUSR1"])
    assert signal.getsignal(signal.SIGTERM) == before
    assert step(tmp_path / RUN / "version_0" / "checkpoints" / CHECKPOINT_NAME) == (2, 0)  # after batches 0 and 1


class SigtermWhileTesting(Callback):
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler is in place for test (checked by its flag)


def test_sigterm_stops_test_with_status_143_and_writes_nothing(image_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lit-models"])
    cli = LitModelsCLI(args=[*tiny_quickstart(image_tree), "--data.init_args.eval_batch_size", "2"], run=False)
    cli.trainer.callbacks.append(SigtermWhileTesting())
    with pytest.raises(SystemExit) as stopped:
        cli.trainer.test(cli.model, datamodule=cli.datamodule)
    assert stopped.value.code == SIGTERM_EXIT_CODE and cli.trainer.received_sigterm
    assert not list(tmp_path.rglob("*.ckpt"))
