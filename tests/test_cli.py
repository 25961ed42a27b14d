"""The `lit-models` command: in subprocesses fit, validate, test, predict, DDP on 2 CPU processes; in-process what a
run tells its user, that an evaluation writes into the run it evaluates, and how ``--ckpt_path last|best`` finds a
run's checkpoints."""

import contextlib
import csv
import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CLASSES, REPO, make_image_tree, run_cli, tiny_quickstart
from pytorch_lightning import LightningModule
from pytorch_lightning.callbacks import ModelSummary
from pytorch_lightning.utilities.model_summary import summarize

from lit_models import commands
from lit_models.quiet import MODEL_SUMMARY, quiet_libraries
from lit_models.runs import resolve_checkpoint_alias

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def last_value(run_dir: Path, key: str) -> float:
    return float([row[key] for row in metrics(run_dir) if row.get(key)][-1])


def test_help_and_print_config(tmp_path):
    listed = run_cli("--help", cwd=tmp_path).stdout
    assert all(f"  {name} " in listed for name in ("fit", "validate", "test", "predict", "export", "recipes"))
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

    # A new process finds the run's best checkpoint and reproduces its validation accuracy exactly, in the run's
    # own folder.
    run_cli("validate", *tiny_quickstart(image_tree), "--ckpt_path", "best", cwd=tmp_path)
    assert last_value(runs / "version_0" / "validate", "val/acc_top1") == pytest.approx(best_fit_acc, abs=1e-7)

    run_cli("test", *tiny_quickstart(image_tree), "--ckpt_path", "best", cwd=tmp_path)
    test_acc = last_value(runs / "version_0" / "test", "test/acc_top1")
    assert 0.0 <= test_acc <= 1.0

    run_cli("predict", *tiny_quickstart(image_tree), "--ckpt_path", "last", cwd=tmp_path)
    with open(runs / "version_0" / "predict" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9  # the test split: 3 classes x 3 images
    assert list(rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]
    for row in rows:
        assert Path(row["path"]).is_file() and {row["class_1"], row["class_2"], row["class_3"]} == set(CLASSES)
        probs = [float(row[f"prob_{k}"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-4)
    # An existing predictions file is never overwritten.
    target = runs / "version_0" / "predict" / "predictions.csv"
    failed = subprocess.run(
        [sys.executable, "-m", "lit_models", "predict", *tiny_quickstart(image_tree), "--ckpt_path", "last",
         "--prediction_writer.output", str(target)],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert failed.returncode == 2 and "already exists" in failed.stderr.splitlines()[-1]
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]  # every evaluation went into the run

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

    # Each validation writes into the run's validate/ folder, replacing the one before.
    run_cli("validate", *tiny_quickstart(image_tree), *ddp, "--ckpt_path", "last", cwd=tmp_path)
    on_two = last_value(runs / "version_0" / "validate", "val/acc_top1")
    run_cli("validate", *tiny_quickstart(image_tree), *single, "--ckpt_path", "last", cwd=tmp_path)
    # 9 validation images over 2 ranks: a padding sampler would count one twice and change the accuracy.
    assert on_two == last_value(runs / "version_0" / "validate", "val/acc_top1")


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


# ------------------------------------------------------------------------------- one fit, in-process, for the rest


def lit_models(*argv: str) -> tuple[int, str, str]:
    """``lit-models *argv`` in this process, in the working folder: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["lit-models"])  # pytest's own arguments are not the command's
        try:
            commands.main(list(argv))
            code = 0
        except SystemExit as stopped:
            code = stopped.code or 0
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> SimpleNamespace:
    """One tiny two-epoch fit of the quickstart recipe through the command table, in its own folder, with the
    model summary on (what the command printed: ``.out``)."""
    folder = tmp_path_factory.mktemp("fitted")
    tree = make_image_tree(folder / "shapes", {"train": 8, "val": 3, "test": 3})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        short = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2"]
        code, out, err = lit_models("fit", *tiny_quickstart(tree), *short, "--trainer.enable_model_summary", "true")
    torch.set_num_threads(threads)
    assert code == 0, err
    run = folder / "runs" / "quickstart" / "version_0"
    return SimpleNamespace(folder=folder, tree=tree, out=out, run=run, args=tiny_quickstart(tree))


def test_fit_says_each_epoch_and_where_its_checkpoints_are(fitted):
    lines = fitted.out.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]  # stdout is no terminal here: a log file's lines
    assert [line.split("  ")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all("  train/loss " in line and "  val/loss " in line and "  val/acc_top1 " in line for line in epochs)
    (best,) = fitted.run.glob("checkpoints/best-*.ckpt")
    assert "  run folder       runs/quickstart/version_0/" in lines
    assert any(line.startswith(f"  best checkpoint  runs/quickstart/version_0/checkpoints/{best.name} (val/acc_top1 ")
               for line in lines)  # fmt: skip
    assert "  last checkpoint  runs/quickstart/version_0/checkpoints/last.ckpt" in lines
    # Options beyond the recipe (the tiny data and net): the run's config.yaml repeats them all.
    assert "  lit-models test --config runs/quickstart/version_0/config.yaml --ckpt_path best" in lines
    assert any(line.startswith(f"  lit-models predict runs/quickstart/version_0/checkpoints/{best.name} ")
               for line in lines)  # fmt: skip


def test_the_model_summary_shows_no_flops_it_did_not_measure(fitted):
    assert "Total params" in fitted.out and "net" in fitted.out  # the rich summary, on stdout
    assert "FLOPs" not in fitted.out


def test_the_text_model_summary_shows_no_flops_it_did_not_measure():
    class Tiny(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 3)

    summary = summarize(Tiny())
    shown = []
    handler = logging.Handler()
    handler.emit = lambda record: shown.append(record.getMessage())
    logger = logging.getLogger(MODEL_SUMMARY)
    logger.addHandler(handler)
    try:
        quiet_libraries()
        ModelSummary.summarize(summary._get_summary_data(), summary.total_parameters, summary.trainable_parameters,
                               summary.model_size, summary.total_training_modes, total_flops=0)  # fmt: skip
    finally:
        logger.removeHandler(handler)
    (table,) = shown
    assert "Flops" not in table and "FLOPs" not in table and "Total params" in table
    lines = table.splitlines()
    assert lines[1:4] == ["  | Name  | Type   | Params | Mode ", "-" * 41, "0 | layer | Linear | 9      | train"]
    assert lines[4] == "-" * 41  # Lightning's dividers are 6 wider than its rows, with or without the column


def test_evaluations_write_into_the_run_they_evaluate(fitted, monkeypatch, one_thread):
    monkeypatch.chdir(fitted.folder)
    before = {path: path.read_bytes() for path in fitted.run.rglob("*") if path.is_file()}

    assert lit_models("test", *fitted.args, "--ckpt_path", "best")[0] == 0
    assert lit_models("validate", *fitted.args, "--ckpt_path", str(fitted.run / "checkpoints" / "last.ckpt"))[0] == 0
    code, out, _ = lit_models("predict", *fitted.args, "--ckpt_path", "best")
    assert code == 0 and "predictions" in out

    assert sorted(p.name for p in fitted.run.parent.iterdir()) == ["version_0"]  # no new version_N
    assert "test/acc_top1" in (fitted.run / "test" / "metrics.csv").read_text()
    assert "val/acc_top1" in (fitted.run / "validate" / "metrics.csv").read_text()
    assert len((fitted.run / "predict" / "predictions.csv").read_text().splitlines()) == 1 + 9
    # Nothing the fit wrote was changed: its metrics, config, checkpoints and pictures.
    assert {path: path.read_bytes() for path in before} == before

    # A second predict into the same place stops; --overwrite (the checkpoint form's flag) replaces it.
    code, _, err = lit_models("predict", *fitted.args, "--ckpt_path", "best")
    assert code == 2 and err.splitlines()[-1].startswith(f"error: {Path('runs/quickstart/version_0/predict')}")
    assert "already exists" in err.splitlines()[-1]
    assert lit_models("predict", *fitted.args, "--ckpt_path", "best", "--overwrite")[0] == 0


def test_predict_from_the_checkpoint_alone_with_output_and_overwrite(fitted, monkeypatch, one_thread):
    monkeypatch.chdir(fitted.folder)
    (best,) = fitted.run.glob("checkpoints/best-*.ckpt")
    photos = str(fitted.tree / "test")
    assert lit_models("predict", str(best), photos, "--output", "out")[0] == 0
    assert len((fitted.folder / "out" / "predictions.csv").read_text().splitlines()) == 1 + 9
    code, _, err = lit_models("predict", str(best), photos, "--output", "out")
    assert code == 2 and err.splitlines()[-1].startswith("error: out") and "already exists" in err
    assert lit_models("predict", str(best), photos, "--output", "out", "--overwrite")[0] == 0


def test_test_before_any_fit_says_where_it_looked_and_what_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = lit_models("test", "--config", "quickstart", "--ckpt_path", "best")
    assert code == 2
    assert err.splitlines()[-1] == (
        "error: --ckpt_path best: no earlier fit of this configuration saved a last.ckpt; searched runs/quickstart/ "
        "(no version_* folder there). Train first (lit-models fit --config quickstart), or pass --ckpt_path a "
        "checkpoint file."
    )
