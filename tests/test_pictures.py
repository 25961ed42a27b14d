"""Training shown as pictures: every family's samples in TensorBoard and as PNG files, the loss curves, the test
confusion matrix, the predict grid, and the CLI's --plots switch."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import run_cli, tiny_quickstart
from families import FAMILIES, build
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_models.classification import most_confused
from lit_models.pictures import Sample, TrainingPictures, curves_picture, sample_grid
from lit_models.predictions import ClassPrediction
from lit_models.writers import ClassificationWriter

pytestmark = pytest.mark.usefixtures("one_thread")


def fit(model, data, logger, tmp_path: Path, samples: int = 3) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=2, logger=logger, callbacks=[TrainingPictures(samples)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, data)
    return trainer


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_shows_samples_in_tensorboard(family, request, tmp_path):
    model, data = build(family, request)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    fit(model, data, logger, tmp_path)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    pictures = Path(logger.log_dir) / "pictures"
    if family == "language_model":  # generated text: TensorBoard's text tab and a file
        assert "val/samples/text_summary" in events.Tags()["tensors"]
        text = (pictures / "val_samples_epoch0.txt").read_text()
        assert text.count("=== prompt: ") == 3  # the 2 streams of the first batch, then 1 of the second
        return
    assert "val/samples" in events.Tags()["images"]
    shown = events.Images("val/samples")
    assert len(shown) == 1 and shown[0].width > 100 and shown[0].height > 100
    # The logger took the samples, so no PNG copies; the curves are read back from the event files.
    assert sorted(p.name for p in pictures.iterdir()) == ["curves.png"]


@pytest.mark.parametrize("family", ["segmentation", "detection", "sequence_classification"])
def test_without_an_image_logger_samples_and_curves_are_png_files(family, request, tmp_path):
    model, data = build(family, request)
    logger = CSVLogger(str(tmp_path), name="csv")
    fit(model, data, logger, tmp_path, samples=4)
    pictures = Path(logger.log_dir) / "pictures"
    assert sorted(p.name for p in pictures.iterdir()) == ["curves.png", "val_samples_epoch0.png"]
    shown = np.array(Image.open(pictures / "val_samples_epoch0.png"))
    assert shown.ndim == 3 and shown.shape[2] == 3 and shown.std() > 10  # drawn, not blank


def test_classification_fit_curves_learning_rate_and_test_confusion_matrix(request, tmp_path):
    model, data = build("classification", request)
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer = fit(model, data, logger, tmp_path)
    pictures = Path(logger.log_dir) / "pictures"
    assert (pictures / "val_samples_epoch0.png").exists() and (pictures / "curves.png").exists()
    with open(Path(logger.log_dir) / "metrics.csv") as handle:
        assert "lr-SGD" in next(csv.reader(handle))  # no scheduler: Lightning's name for the optimizer's rate
    trainer.test(model, data, verbose=False)
    matrix = Image.open(pictures / "test_confusion_matrix.png")
    pairs = most_confused(model.test_confusion.compute(), model.display_names)
    lines = len(pairs) + 1 if pairs else 0  # the most confused pairs above the matrix, under a heading
    assert matrix.size[0] == 505  # 4 + 0.35 inch per class, at 100 dpi
    assert abs(matrix.size[1] - (505 + 17 * lines)) <= 1  # and 0.17 inch per line of text
    assert (pictures / "test_samples.png").exists()


def test_curves_read_the_monitor_and_skip_what_was_not_logged():
    scalars = {"train/loss_step": [(0, 2.0), (1, 1.5)], "val/acc_top1": [(1, 0.4)], "train/lr": [(0, 0.1)]}
    picture = curves_picture(scalars, "val/acc_top1")
    assert picture.shape == (340, 3 * 450, 3)  # loss, the headline metric, the learning rate
    assert curves_picture({}, "val/acc_top1") is None
    assert curves_picture({"val/map_50": [(1, 0.1)]}, "val/map_50").shape == (340, 450, 3)


def test_grid_places_wide_samples_in_fewer_columns():
    square = [Sample(image=torch.zeros(3, 20, 20, dtype=torch.uint8), caption="a")] * 8
    wide = [Sample(image=torch.zeros(3, 20, 44, dtype=torch.uint8), caption="a")] * 8
    assert sample_grid(square).shape[1] > sample_grid(square, columns=2).shape[1]
    assert sample_grid(wide).shape[0] > sample_grid(square).shape[0]  # 2 per row: 4 rows instead of 2


def test_cli_plots_switch_ddp_test_with_tensorboard_and_predict_grid(image_tree, tmp_path):
    tiny = [*tiny_quickstart(image_tree), "--trainer.max_epochs", "1"]
    runs = tmp_path / "runs" / "quickstart"
    run_cli("fit", *tiny, "--plots", "false", cwd=tmp_path)
    assert not (runs / "version_0" / "pictures").exists()
    with open(runs / "version_0" / "metrics.csv") as handle:
        assert "train/lr" in next(csv.reader(handle))  # the recipe's scheduler names it

    # Two processes: rank 0 draws its shard's samples; the confusion matrix is gathered from both ranks.
    overlays = ["--trainer", "ddp_cpu", "--trainer", "tensorboard"]
    run_cli("test", *tiny, *overlays, "--ckpt_path", "last", cwd=tmp_path)
    events = EventAccumulator(str(runs / "version_0" / "test"), size_guidance={"images": 0})
    events.Reload()
    assert {"test/samples", "test/confusion_matrix"} <= set(events.Tags()["images"])
    # 3 classes wide (the height grows with the most confused pairs written above the matrix).
    assert Image.open(runs / "version_0" / "test" / "pictures" / "test_confusion_matrix.png").size[0] == 505

    run_cli("predict", *tiny, "--ckpt_path", "last", cwd=tmp_path)
    grid = Image.open(runs / "version_0" / "predict" / "predictions.png")
    assert grid.size[0] >= 1000  # 8 columns of thumbnails: the 9 test images in 2 rows


@pytest.mark.parametrize("grid", [0, 2])
def test_prediction_grid_caps_its_images_and_zero_draws_none(grid, image_tree, tmp_path):
    writer = ClassificationWriter(output=str(tmp_path / "out.csv"), grid=grid)
    writer.path = tmp_path / "out.csv"
    files = sorted(str(p) for p in (image_tree / "test").rglob("*.png"))
    batch = [ClassPrediction(path=f, name=f, classes=["circle"], indices=[0], probs=[1.0]) for f in files]
    run = SimpleNamespace(world_size=1, global_rank=0)
    writer.write_on_epoch_end(run, SimpleNamespace(class_names=["circle", "square", "stripes"]), [batch], [])
    assert (tmp_path / "out.csv").exists()
    if grid == 0:  # what --plots false sets
        assert not (tmp_path / "out.png").exists()
    else:  # the first 2 images only: one row of 2 thumbnails
        assert Image.open(tmp_path / "out.png").size[0] < 400


def test_samples_are_spread_over_the_split():
    """A split sorted by class shows several classes: the first samples of evenly spaced batches."""

    class Shower:
        def show(self, batch, count):
            return [Sample(image=None, caption=f"{batch}.{index}") for index in range(count)]

    callback = TrainingPictures(samples=5)
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, testing=False, num_val_batches=[10])
    for batch_idx in range(10):
        callback.collect(trainer, Shower(), batch_idx, batch_idx, 0)
    assert [sample.caption for sample in callback.shown] == ["0.0", "2.0", "4.0", "7.0", "9.0"]
    callback.shown = []
    trainer.num_val_batches = [2]  # fewer batches than samples: 3 from the first, the rest from the last
    for batch_idx in range(2):
        callback.collect(trainer, Shower(), batch_idx, batch_idx, 0)
    assert [sample.caption for sample in callback.shown] == ["0.0", "0.1", "0.2", "1.0", "1.1"]
