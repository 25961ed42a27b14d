"""The real `lit-models` entry point in subprocesses: fit, validate, test, predict, DDP on 2 CPU processes; and how
it finds the checkpoints that ``--ckpt_path last|best`` name."""

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CLASSES, REPO, run_cli, tiny_quickstart

from lit_models.cli import resolve_checkpoint_alias

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def last_value(run_dir: Path, key: str) -> float:
    return float([row[key] for row in metrics(run_dir) if row.get(key)][-1])


def test_help_and_print_config(tmp_path):
    assert "{fit,validate,test,predict}" in run_cli("--help", cwd=tmp_path).stdout
    model_help = " ".join(run_cli("fit", "--model.help", "ResNet", cwd=tmp_path).stdout.split())
    assert "--model.depth {18,34,50,101,152,20,32,44,56,110}" in model_help and "plain network" in model_help
    printed = run_cli("fit", "--config", QUICKSTART, "--print_config", cwd=tmp_path).stdout
    assert "class_path: lit_models.ResNet" in printed and "seed_everything: 0" in printed


def test_fit_then_validate_test_predict_in_new_processes(image_tree, tmp_path):
    run_cli("fit", *tiny_quickstart(image_tree), "--trainer.max_epochs", "3", cwd=tmp_path)
    runs = tmp_path / "runs" / "quickstart"
    fit_rows = [r for r in metrics(runs / "version_0") if r.get("val/acc_top1")]
    assert len(fit_rows) == 3
    best_fit_acc = max(float(r["val/acc_top1"]) for r in fit_rows)
    assert (runs / "version_0" / "config.yaml").exists()
    last = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["class_names"] == CLASSES  # the real last epoch, not the best one

    # A new process finds the run's best checkpoint and reproduces its validation accuracy exactly.
    run_cli("validate", *tiny_quickstart(image_tree), "--ckpt_path", "best", cwd=tmp_path)
    assert last_value(runs / "version_1", "val/acc_top1") == pytest.approx(best_fit_acc, abs=1e-7)

    run_cli("test", *tiny_quickstart(image_tree), "--ckpt_path", "best", cwd=tmp_path)
    test_acc = last_value(runs / "version_2", "test/acc_top1")
    assert 0.0 <= test_acc <= 1.0

    run_cli("predict", *tiny_quickstart(image_tree), "--ckpt_path", "last", cwd=tmp_path)
    with open(runs / "version_3" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9  # the test split: 3 classes x 3 images
    assert list(rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]
    for row in rows:
        assert Path(row["path"]).is_file() and {row["class_1"], row["class_2"], row["class_3"]} == set(CLASSES)
        probs = [float(row[f"prob_{k}"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-4)
    # An existing predictions file is never overwritten.
    target = runs / "version_3" / "predictions.csv"
    failed = subprocess.run(
        [sys.executable, "-m", "lit_models", "predict", *tiny_quickstart(image_tree), "--ckpt_path", "last",
         "--prediction_writer.output", str(target)],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert failed.returncode != 0 and "already exists" in failed.stderr

    # `fit --ckpt_path last` resumes the newest run: only the 4th epoch is trained.
    run_cli("fit", *tiny_quickstart(image_tree), "--trainer.max_epochs", "4", "--ckpt_path", "last", cwd=tmp_path)
    newest = max(runs.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    resumed = [r["epoch"] for r in metrics(newest) if r.get("val/acc_top1")]
    assert resumed == ["3"]


def test_last_is_slurms_requeue_checkpoint_when_that_is_newer(tmp_path):
    trainer = SimpleNamespace(checkpoint_callbacks=[], default_root_dir=str(tmp_path),
                              logger=SimpleNamespace(save_dir=str(tmp_path / "runs"), name="quickstart"))  # fmt: skip
    requeued = tmp_path / "hpc_ckpt_1.ckpt"
    requeued.write_bytes(b"")
    assert resolve_checkpoint_alias("last", trainer) == str(requeued)  # requeued before any epoch ended
    last = tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    os.utime(requeued, (1, 1))
    assert resolve_checkpoint_alias("last", trainer) == str(last)
    newer = tmp_path / "hpc_ckpt_2.ckpt"
    newer.write_bytes(b"")
    os.utime(last, (2, 2))
    assert resolve_checkpoint_alias("last", trainer) == str(newer)


def test_bad_root_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lit_models", "fit", "--config", QUICKSTART, "--data.init_args.root", "nowhere"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "data root nowhere does not exist" in result.stderr


def test_ddp_on_two_cpu_processes_matches_single_process(image_tree, tmp_path):
    ddp = ["--trainer", str(REPO / "configs" / "trainer" / "ddp_cpu.yaml")]
    single = ["--trainer", str(REPO / "configs" / "trainer" / "default.yaml"), "--trainer.accelerator", "cpu"]
    run_cli("fit", *tiny_quickstart(image_tree), *ddp, "--trainer.max_epochs", "1", cwd=tmp_path)
    runs = tmp_path / "runs" / "quickstart"
    assert (runs / "version_0" / "checkpoints" / "last.ckpt").exists()

    run_cli("validate", *tiny_quickstart(image_tree), *ddp, "--ckpt_path", "last", cwd=tmp_path)
    run_cli("validate", *tiny_quickstart(image_tree), *single, "--ckpt_path", "last", cwd=tmp_path)
    # 9 validation images over 2 ranks: a padding sampler would count one twice and change the accuracy.
    assert last_value(runs / "version_1", "val/acc_top1") == last_value(runs / "version_2", "val/acc_top1")


IMAGENET_RECIPES = sorted((REPO / "configs" / "classification").glob("*_imagenet.yaml"))


@pytest.mark.parametrize("config", IMAGENET_RECIPES, ids=lambda p: p.stem)
def test_every_imagenet_recipe_fits_and_tests_on_an_image_folder(config, image_tree, tmp_path, monkeypatch):
    """One real step of each paper recipe (full-size net, 224 px) on an ImageNet-style tree, in-process."""
    from lit_models.cli import LitModelsCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lit-models"])
    common = ["--config", str(config), "--data.init_args.root", str(image_tree), "--data.init_args.batch_size", "2",
              "--data.init_args.num_workers", "0", "--trainer.fast_dev_run", "1",
              "--trainer.enable_progress_bar", "false"]  # fmt: skip
    cli = LitModelsCLI(args=["fit", *common])
    assert cli.trainer.global_step == 1 and cli.model.num_classes == 3
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    tested = LitModelsCLI(args=["test", *common])
    assert 0.0 <= float(tested.trainer.callback_metrics["test/acc_top1"]) <= 1.0
