"""TaskModule, the base of every family: class names checked against the data and the checkpoint, and the
checkpoint callbacks it puts in place of Lightning's default."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from lit_models.class_names import ClassNamesMismatchError
from lit_models.datamodules.spec import DataSpec
from lit_models.task import TaskModule


class Tiny(TaskModule):
    monitor = "val/acc"

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__(num_classes)
        self.net = nn.Linear(2, num_classes)


def attach(model: TaskModule, trainer: pl.Trainer, class_names: list[str] | None = None) -> None:
    spec = DataSpec("classification", "images", class_names) if class_names else None
    trainer.datamodule = SimpleNamespace(spec=spec) if class_names else None
    model.trainer = trainer


def test_class_names_come_from_the_data_and_must_agree_with_a_loaded_checkpoint(tmp_path):
    model = Tiny()
    attach(model, pl.Trainer(default_root_dir=tmp_path, logger=False), ["cat", "dog", "owl"])
    model.setup("fit")
    assert model.class_names == ["cat", "dog", "owl"]
    saved = {}
    model.on_save_checkpoint(saved)
    assert saved["class_names"] == ["cat", "dog", "owl"]

    attach(model, model.trainer, ["dog", "cat", "owl"])  # the same names in another order
    with pytest.raises(ClassNamesMismatchError, match=r"\['cat', 'dog', 'owl'\].*\['dog', 'cat', 'owl'\]"):
        model.setup("validate")
    fresh = Tiny()
    fresh.class_names = ["ant", "bee", "cow"]  # the data the run was built on
    with pytest.raises(ClassNamesMismatchError):
        fresh.on_load_checkpoint(saved)
    untouched = Tiny()
    untouched.on_load_checkpoint(saved)
    assert untouched.class_names == ["cat", "dog", "owl"]


def test_default_checkpointing_becomes_best_and_last_but_a_configured_one_stays(tmp_path):
    model = Tiny()
    attach(model, pl.Trainer(default_root_dir=tmp_path, logger=False))
    best, last = model.configure_callbacks()
    assert (best.monitor, best.mode, best.filename) == ("val/acc", "max", "best-{epoch}-{step}")
    assert last.monitor is None and last.filename == "last"  # rewritten every epoch, for resuming
    model.monitor = "val/loss"
    assert model.configure_callbacks()[0].mode == "min"

    for trainer in (
        pl.Trainer(default_root_dir=tmp_path, logger=False, callbacks=[ModelCheckpoint(every_n_train_steps=100)]),
        pl.Trainer(default_root_dir=tmp_path, logger=False, callbacks=[ModelCheckpoint(dirpath=tmp_path / "mine")]),
        pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False),
    ):
        attach(model, trainer)
        assert model.configure_callbacks() == []


def test_fit_with_a_logger_logs_the_learning_rate_once(tmp_path):
    model = Tiny()
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=CSVLogger(tmp_path))
    trainer.state.fn = "fit"
    attach(model, trainer)
    assert sum(isinstance(cb, LearningRateMonitor) for cb in model.configure_callbacks()) == 1
    attach(model, pl.Trainer(default_root_dir=tmp_path, logger=CSVLogger(tmp_path), callbacks=[LearningRateMonitor()]))
    model.trainer.state.fn = "fit"
    assert not any(isinstance(cb, LearningRateMonitor) for cb in model.configure_callbacks())
