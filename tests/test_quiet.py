"""The filters that keep library noise off the console drop exactly the lines they name."""

import logging
import warnings

import pytest
from lightning_fabric.utilities.warnings import PossibleUserWarning

from lit_models.quiet import LOG_LINES, quiet_libraries


@pytest.fixture
def quiet(monkeypatch):
    """The filters installed, and removed again after the test."""
    for name in LOG_LINES:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "filters", list(logger.filters))
    monkeypatch.setattr("sys.warnoptions", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        yield caught


def test_library_noise_is_dropped_and_actionable_warnings_pass(quiet):
    dropped = [
        (FutureWarning, "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`"),
        (PossibleUserWarning, "The number of training batches (3) is smaller than the logging interval "
                              "Trainer(log_every_n_steps=20). Set a lower value for log_every_n_steps if you want"),
        (UserWarning, "The dirpath has changed from 'runs/a/version_0/checkpoints' to 'runs/a/version_1/checkpoints', "
                      "therefore `best_model_score` ... won't be reloaded. Only `best_model_path` will be reloaded."),
        (PossibleUserWarning, "You're resuming from a checkpoint that ended before the epoch ended and your loader"),
    ]  # fmt: skip
    kept = [
        (PossibleUserWarning, "The 'train_dataloader' does not have many workers which may be a bottleneck."),
        (UserWarning, "GPU available but not used. You can set it by doing `Trainer(accelerator='gpu')`."),
        (FutureWarning, "`torch.load` with weights_only=False is deprecated"),
    ]
    for category, message in dropped + kept:
        warnings.warn(message, category, stacklevel=1)
    assert [str(w.message) for w in quiet] == [message for _, message in kept]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_lightning_info_lines_dropped_by_message(quiet, monkeypatch, request):
    lightning, seed = (logging.getLogger(name) for name in LOG_LINES)
    shown = Lines()
    for logger in (lightning, seed):  # only here: Lightning's own handlers would print them too
        monkeypatch.setattr(logger, "handlers", [shown])
        monkeypatch.setattr(logger, "propagate", False)
        request.addfinalizer(lambda logger=logger, level=logger.level: logger.setLevel(level))
        logger.setLevel(logging.INFO)
    lightning.info("💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels](...)")
    lightning.info("The following callbacks returned in `LightningModule.configure_callbacks` will override "
                   "existing callbacks passed to Trainer: ModelCheckpoint")  # fmt: skip
    lightning.info("The following callbacks returned in `LightningModule.configure_callbacks` will override "
                   "existing callbacks passed to Trainer: EarlyStopping")  # fmt: skip
    lightning.info("Restoring states from the checkpoint path at runs/a/last.ckpt")
    lightning.info("Restored all states from the checkpoint at runs/a/last.ckpt")
    seed.info("[rank: 1] Seed set to 0")
    assert shown.lines == [
        "The following callbacks returned in `LightningModule.configure_callbacks` will override existing callbacks "
        "passed to Trainer: EarlyStopping",
        "Restoring states from the checkpoint path at runs/a/last.ckpt",
    ]
