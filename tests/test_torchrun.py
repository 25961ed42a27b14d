"""``torchrun --nproc_per_node 2 -m lit_models ...``: two processes that torchrun starts train as one DDP run, into one
run folder, and evaluate a checkpoint to the metrics of one process."""

from __future__ import annotations

import csv
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli, tiny_quickstart
from jsonargparse import Namespace
from pytorch_lightning.utilities import rank_zero_only
from test_detection import tiny
from test_preemption import step, wait_for

from lit_models.cli import show_package_logs
from lit_models.errors import UsageError
from lit_models.preemption import CHECKPOINT_NAME
from lit_models.torchrun import follow_launch, refuse_in_many_processes

SINGLE = ["--trainer", str(REPO / "configs" / "trainer" / "default.yaml"), "--trainer.accelerator", "cpu"]


# torchrun's processes on the CPU, one thread each.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "lit_models"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, cwd: Path) -> str:
    """``torchrun --nproc_per_node 2 --standalone -m lit_models ARGS``; its output."""
    command = [*TORCHRUN, *args, "--trainer.accelerator", "cpu"]
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"torchrun ... {' '.join(args)} failed:\n{output[-6000:]}"
    return output


def logged(path: Path, stage: str) -> dict[str, float]:
    """The last value of each ``{stage}/...`` metric in a CSVLogger's metrics.csv."""
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return {key: float(value) for row in rows for key, value in row.items() if key.startswith(f"{stage}/") and value}


def assert_same_metrics(ours: dict[str, float], theirs: dict[str, float]) -> None:
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert value == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key  # float32 sums in another order


def test_torchrun_fits_one_run_that_validates_as_one_process(image_tree, tmp_path, one_thread):
    args = [*tiny_quickstart(image_tree), "--trainer.max_epochs", "1"]
    output = torchrun("fit", *args, cwd=tmp_path)
    runs = tmp_path / "runs" / "quickstart"
    assert [path.name for path in runs.iterdir()] == ["version_0"]  # rank 0 chose it, rank 1 made none of its own
    checkpoints = runs / "version_0" / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["best-epoch=0-step=1.ckpt", "last.ckpt"]
    # The trainer took torchrun's two processes: 24 training images at 8 a batch make one step on each rank
    # (a process training alone would take three).
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 1
    assert output.count("Done.") == 1 and output.count("epoch 1/1") == 1  # only rank 0 reports

    run_cli("validate", *args, *SINGLE, "--ckpt_path", "last", cwd=tmp_path)
    # 9 validation images over 2 ranks (5 and 4): accuracy and the loss are over every image once, as in one process
    # validating the weights that the epoch's validation saw.
    alone = logged(runs / "version_0" / "validate" / "metrics.csv", "val")
    assert_same_metrics(logged(runs / "version_0" / "metrics.csv", "val"), alone)
    assert {"val/acc_top1", "val/loss"} <= alone.keys()


def test_torchrun_tests_a_detector_as_one_process(shapes_tree, tmp_path, one_thread):
    # Fitted and tested on the 3 val scenes, for 30 one-step epochs: a detector that finds some of the shapes, so
    # that its mAP and error analysis are more than zeros to compare.
    scenes = ["--data.init_args.splits.train", "val", "--data.init_args.splits.test", "val"]
    args = tiny("yolov1", shapes_tree, *scenes, "--model.init_args.voc07_ap", "true", "--plots", "false")
    fit = ["--model.init_args.optimizer.init_args.lr", "0.002", "--trainer.max_epochs", "30",
           "--trainer.check_val_every_n_epoch", "30"]  # fmt: skip
    run_cli("fit", *args, *fit, *SINGLE, cwd=tmp_path)
    folder = tmp_path / "runs" / "yolov1_shapes" / "version_0" / "test"
    torchrun("test", *args, "--ckpt_path", "last", cwd=tmp_path)
    on_two = logged(folder / "metrics.csv", "test")
    run_cli("test", *args, *SINGLE, "--ckpt_path", "last", cwd=tmp_path)
    # 3 scenes over 2 ranks (2 and 1): mAP, per-class AP and the error analysis gather every scene once.
    assert_same_metrics(on_two, logged(folder / "metrics.csv", "test"))
    assert on_two["test/map_50"] > 0 and on_two["test/errors/correct"] > 0
    assert {"test/map", "test/map_50_voc07", "test/ap_50/circle"} <= on_two.keys()


def test_sigterm_to_torchrun_stops_its_processes_at_one_step(image_tree, tmp_path):
    args = [*tiny_quickstart(image_tree), "--data.init_args.batch_size", "1", "--trainer.max_epochs", "100",
            "--trainer.accelerator", "cpu", "--plots", "false"]  # fmt: skip
    folder = tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints"
    with open(tmp_path / "fit.log", "w") as log:  # a file, not a pipe: nobody reads while it runs
        process = subprocess.Popen([*TORCHRUN, "fit", *args], cwd=tmp_path, env=ENV, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    wait_for(folder / "last.ckpt", process, tmp_path)
    process.send_signal(signal.SIGTERM)  # to torchrun alone, as a scheduler stops its job: it hands it on
    sent = time.monotonic()
    try:
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = (tmp_path / "fit.log").read_text()
    assert code != 0 and output.count("Stopped by SIGTERM") == 1, output[-4000:]  # rank 0 speaks for both
    assert time.monotonic() - sent < 30  # both ended themselves: torchrun kills what is left after 30 s
    assert step(folder / CHECKPOINT_NAME)[0] > step(folder / "last.ckpt")[0]  # saved at that step, not the epoch's


def launch(monkeypatch: pytest.MonkeyPatch, rank: int, per_node: int, nodes: int) -> None:
    """This process's environment as torchrun sets it for one of its processes."""
    for name, value in {"TORCHELASTIC_RUN_ID": "test", "RANK": rank, "WORLD_SIZE": per_node * nodes,
                        "LOCAL_WORLD_SIZE": per_node}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))


@pytest.mark.parametrize("devices", [1, "auto", None])
def test_a_single_device_trainer_takes_torchruns_processes(devices, monkeypatch):
    launch(monkeypatch, rank=0, per_node=4, nodes=2)
    trainer = Namespace(devices=devices, num_nodes=1)
    follow_launch(trainer)
    assert (trainer.devices, trainer.num_nodes) == (4, 2)


@pytest.mark.parametrize("devices", [4, "4", [0, 1, 2, 3], "0,1,2,3", -1])
def test_a_trainer_that_names_torchruns_processes_or_leaves_them_to_lightning_is_kept(devices, monkeypatch):
    launch(monkeypatch, rank=0, per_node=4, nodes=2)
    trainer = Namespace(devices=devices, num_nodes=2)
    follow_launch(trainer)
    assert (trainer.devices, trainer.num_nodes) == (devices, 2)


def test_a_trainer_that_names_other_processes_is_an_error_from_rank_0_alone(monkeypatch):
    launch(monkeypatch, rank=0, per_node=2, nodes=1)
    with pytest.raises(UsageError, match=r"torchrun started 2 process\(es\) per node on 1 node\(s\), but the trainer "
                       r"has devices=3 and num_nodes=1: give --trainer.devices 2 --trainer.num_nodes 1"):  # fmt: skip
        follow_launch(Namespace(devices=3, num_nodes=1))
    launch(monkeypatch, rank=1, per_node=2, nodes=1)
    with pytest.raises(SystemExit) as stopped:
        follow_launch(Namespace(devices=3, num_nodes=1))
    assert stopped.value.code == 2


def test_outside_torchrun_the_trainer_is_kept(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    trainer = Namespace(devices=1, num_nodes=1)
    follow_launch(trainer)
    assert (trainer.devices, trainer.num_nodes) == (1, 1)
    refuse_in_many_processes("export")  # nothing to refuse


def test_one_process_commands_refuse_several_torchrun_processes(monkeypatch, capsys):
    launch(monkeypatch, rank=0, per_node=2, nodes=1)
    with pytest.raises(SystemExit) as stopped:
        refuse_in_many_processes("export")
    assert stopped.value.code == 2
    assert "error: lit-models export runs in one process: start it without torchrun" in capsys.readouterr().err
    launch(monkeypatch, rank=0, per_node=1, nodes=1)
    refuse_in_many_processes("export")  # one process: nothing done twice


def test_other_ranks_show_only_the_packages_warnings(monkeypatch, capsys):
    package = logging.getLogger("lit_models")
    handlers, level = list(package.handlers), package.level
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    try:
        package.handlers[:] = []
        show_package_logs()
        logging.getLogger("lit_models.stages").info("Initialised ResNet from ...")  # rank 0 says it
        logging.getLogger("lit_models.datamodules.files").warning("skipped a file")  # this rank's shard alone
    finally:
        package.handlers[:] = handlers
        package.setLevel(level)
    assert capsys.readouterr().err == "skipped a file\n"
