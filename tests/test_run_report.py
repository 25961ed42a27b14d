"""What a run tells its user: a plain line per epoch in a log file, one warning when validation loss explodes, and
where the checkpoints are at the end of fit. On a stand-in trainer: the real one is in tests/test_cli.py."""

from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lit_models.run_report import RunReport, epoch_scalars


def trainer(metrics: dict[str, float], epoch: int = 0, **more) -> SimpleNamespace:
    return SimpleNamespace(**{
        "callback_metrics": {name: torch.tensor(value) for name, value in metrics.items()},
        "current_epoch": epoch, "max_epochs": 10, "is_global_zero": True, "sanity_checking": False,
        "state": SimpleNamespace(fn="fit"), "fast_dev_run": False, "progress_bar_callback": object(), **more,
    })  # fmt: skip


def epoch(report: RunReport, fake: SimpleNamespace, validated: bool = True) -> None:
    """The hooks Lightning calls around one training epoch."""
    report.on_train_epoch_start(fake, None)
    if validated:
        report.on_validation_end(fake, None)
    report.on_train_epoch_end(fake, None)


def test_epoch_scalars_one_value_per_name_train_then_val_loss_first():
    metrics = {"val/acc_top1": 0.9, "train/loss_step": 0.5, "train/loss": 0.4, "train/loss_epoch": 0.4,
               "val/loss": 0.3, "val/iou/cat": 0.2, "train/acc_top1": 0.8, "lr-SGD": 0.1}  # fmt: skip
    scalars = epoch_scalars({name: torch.tensor(value) for name, value in metrics.items()})
    assert list(scalars) == ["train/loss", "train/acc_top1", "val/loss", "val/acc_top1"]
    assert scalars["train/loss"] == pytest.approx(0.4)


def test_one_plain_line_per_epoch_where_no_progress_bar_shows_it(capsys, monkeypatch):
    report = RunReport()
    fake = trainer({"train/loss": 0.4123, "val/loss": 0.388, "val/acc_top1": 0.912}, epoch=2)
    report.on_fit_start(fake, None)  # capsys: stdout is no terminal
    epoch(report, fake)
    epoch(report, fake, validated=False)  # no validation this epoch: the last one's values are not repeated
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith("epoch 3/10  train/loss 0.4123  val/loss 0.388  val/acc_top1 0.912  (")
    assert first.endswith(" s)") and "val/" not in second

    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    quiet = RunReport()  # a terminal: Lightning's progress bar shows it
    quiet.on_fit_start(fake, None)
    epoch(quiet, fake)
    assert capsys.readouterr().out == ""
    barless = RunReport()  # a terminal without a progress bar (--trainer.enable_progress_bar false)
    barless.on_fit_start(trainer({}, progress_bar_callback=None), None)
    assert barless.epoch_lines


def test_exploding_validation_loss_is_one_warning_with_what_to_try(caplog):
    report = RunReport(epoch_lines=False)
    with caplog.at_level("WARNING", logger="lit_models"):
        epoch(report, trainer({"train/loss": 0.05, "val/loss": 0.9}))  # 18x, but small: overfitting a little
        epoch(report, trainer({"train/loss": 0.3, "val/loss": 2.0}))  # large, but under 10x
        assert caplog.records == []
        epoch(report, trainer({"train/loss": 0.3, "val/loss": 45.0}, epoch=2))
        epoch(report, trainer({"train/loss": 0.3, "val/loss": float("inf")}, epoch=3))
    (warning,) = caplog.records
    assert warning.getMessage().startswith("val/loss 45 is 150x the training loss 0.3 (epoch 2)")
    assert "lower learning rate" in warning.getMessage() and "smaller recipe" in warning.getMessage()


def test_end_of_fit_names_the_checkpoints_and_the_next_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "quickstart" / "version_0"
    best = ModelCheckpoint(dirpath=run / "checkpoints", monitor="val/acc_top1", mode="max")
    best.best_model_path, best.best_model_score = str(run / "checkpoints" / "best-epoch=1.ckpt"), torch.tensor(0.9)
    last = ModelCheckpoint(dirpath=run / "checkpoints", filename="last")
    last.best_model_path = str(run / "checkpoints" / "last.ckpt")
    fake = trainer({}, checkpoint_callbacks=[best, last])

    text = RunReport(config="--config quickstart").summary(fake, str(run))
    assert "  run folder       runs/quickstart/version_0/" in text
    assert "  best checkpoint  runs/quickstart/version_0/checkpoints/best-epoch=1.ckpt (val/acc_top1 0.9)" in text
    assert "  last checkpoint  runs/quickstart/version_0/checkpoints/last.ckpt" in text
    assert "  lit-models test --config quickstart --ckpt_path best" in text
    assert "  lit-models predict runs/quickstart/version_0/checkpoints/best-epoch=1.ckpt " in text
    # Options beyond a recipe: the run's own config.yaml repeats them.
    text = RunReport().summary(fake, str(run))
    assert "  lit-models test --config runs/quickstart/version_0/config.yaml --ckpt_path best" in text
