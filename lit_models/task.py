"""What every family's LightningModule shares beside its loop: class names in checkpoints, checkpointing by the
family's headline metric, and injected optimizer / LR-scheduler factories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchvision.transforms import v2

from lit_models import __version__, inference
from lit_models.class_names import ClassNamesMismatchError, describe_difference
from lit_models.inference import CHECKPOINT_KEY, class_path
from lit_models.optim import build_optimizers

if TYPE_CHECKING:  # drawing (matplotlib) is imported where a family draws
    from lit_models.pictures import Picture, Sample


def split_batch(batch: Any, target: str) -> tuple[Any, Any | None]:
    """A batch's inputs and targets (None where it has none, as in predict).

    Our DataModules yield dicts (``image`` and the family's ``target`` key); plain ``(inputs, targets)`` tuples from
    anyone else's loader work too.
    """
    if isinstance(batch, Mapping):
        return batch["image"], batch.get(target)
    return batch[0], batch[1] if len(batch) > 1 else None


class TaskModule(pl.LightningModule):
    """Base of the family bases (ImageClassifier, Segmenter, Detector, SequenceModule).

    A family sets ``monitor`` (its headline validation metric), ``prediction_writer`` (the callback class, taking
    ``output`` and ``overwrite``, that the CLI adds to ``predict``) and ``target`` (the batch key of its truth),
    defines ``prediction_results(prediction, data)`` (one plain result per input from a ``predict_step`` output;
    ``data``: the DataModule that served the batch, with which a language model decodes its tokens), passes its
    output size and the arguments below to ``__init__``, and sets ``self.net``: built by the
    architecture's ``build_net`` (image families, from the ``**net_args`` of the family's constructor, so
    jsonargparse lists the net's arguments under ``--model.*``) or from the data (sequence family).

    Args:
        bias_lr_mult: Learning-rate multiple of biases (Caffe-era recipes, FCN and the R-CNN family: 2).
        bias_weight_decay: Whether biases are weight-decayed (Caffe-era recipes: no, their ``decay_mult: 0``).
        optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9). Paper recipes are in configs/.
        lr_scheduler: LR scheduler factory; default none. A ReduceLROnPlateau watches ``monitor``.
    """

    monitor = "val/loss"
    monitor_mode: str | None = None  # "min" or "max"; None: "min" for a loss, else "max"
    prediction_writer: type | None = None
    target = "label"
    class_names: list[str] | None = None

    def __init__(
        self,
        num_classes: int,
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        # Every constructor argument up the subclass chain is saved (the net's, given as **net_args, flattened in),
        # except the factories: hyperparameters stay primitive so checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.net: nn.Module | None = None
        self.num_classes = num_classes
        self.bias_lr_mult, self.bias_weight_decay = bias_lr_mult, bias_weight_decay
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler

    def split(self, batch: Any) -> tuple[Any, Any | None]:
        """The batch's inputs and targets (:func:`split_batch` with this family's ``target`` key)."""
        return split_batch(batch, self.target)

    @property
    def display_names(self) -> list[str]:
        """The class names, or the class indices as text where the data named none."""
        return self.class_names or [str(index) for index in range(self.num_classes)]

    def log_per_class(self, tag: str, values: Sequence[float], labels: Sequence[int] | None = None) -> None:
        """Log one value per class as ``{tag}/<class name>`` (``labels``: the class of each value; default 0..)."""
        names = self.display_names
        for label, value in zip(range(len(values)) if labels is None else labels, values, strict=True):
            self.log(f"{tag}/{names[label]}", value)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self.check_data(datamodule)
        names = getattr(datamodule, "class_names", None)
        if names is None:
            return
        names = [str(name) for name in names]
        if self.class_names is not None and self.class_names != names:
            # Weights loaded before the trainer started (load_from_checkpoint) meet different data.
            raise ClassNamesMismatchError(describe_difference(self.class_names, names))
        self.class_names = names

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.class_names is not None:
            checkpoint["class_names"] = list(self.class_names)
        # What lit_models.load needs to rebuild the module and its data's preprocessing from this file alone.
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        checkpoint[CHECKPOINT_KEY] = {
            "version": __version__,
            "model": class_path(type(self)),
            "data": class_path(type(datamodule)) if datamodule is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("class_names")
        if saved is None:
            return
        if self.class_names is not None and list(saved) != self.class_names:
            raise ClassNamesMismatchError(describe_difference(list(saved), self.class_names))
        self.class_names = list(saved)

    def predict(self, inputs: Any, batch_size: int = 8) -> list[dict[str, Any]]:
        """Predict on files, folders, patterns, PIL images or image tensors (:func:`lit_models.inference.predict`)
        with a module from :func:`lit_models.load`."""
        return inference.predict(self, inputs, batch_size)

    @property
    def preprocess(self) -> Any:
        """The evaluation transform of the data this module was trained on (PIL image -> network input), for a
        module from :func:`lit_models.load`."""
        return v2.Compose([v2.ToImage(), inference.prediction_data(self, None).transform(train=False)])

    @property
    def monitor_goal(self) -> str:
        """How ``monitor`` improves: "min" or "max"."""
        return self.monitor_mode or ("min" if self.monitor.endswith("loss") else "max")

    def configure_optimizers(self) -> Any:
        return build_optimizers(
            self.named_parameters(),
            self.optimizer_factory,
            self.lr_scheduler_factory,
            plateau_monitor=self.monitor,
            plateau_mode=self.monitor_goal,
            bias_lr_mult=self.bias_lr_mult,
            bias_weight_decay=self.bias_weight_decay,
        )

    @classmethod
    def data_arguments(cls, model_args: dict[str, Any], data_args: dict[str, Any]) -> dict[str, Any]:
        """The DataModule arguments this model needs, decided by the CLI before either is built.

        Given this module's arguments and the DataModule's (``data_args`` holds only those the DataModule takes),
        return the data arguments to change so the pair trains as configured (YOLO v1's input size where the data
        sets none); raise ValueError naming both arguments where the data contradicts the model. Without the CLI
        the same disagreement stops ``setup`` (``check_data``).
        """
        return {}

    def check_data(self, datamodule: pl.LightningDataModule) -> None:
        """Raise ValueError, naming what to set, where this module cannot train on this DataModule as configured.

        Called by ``setup``, and by the CLI right after building both, so a mismatch stops before any work.
        """

    def configure_callbacks(self) -> list:
        """Replace Lightning's default checkpointing by ``best-*.ckpt`` (by ``monitor``) + ``last.ckpt``, and log
        the learning rate in every fit.

        Two callbacks because Lightning 2.6's ``save_last=True`` only copies the newest *top-k* save, so on a
        monitored callback last.ckpt would lag behind the real last epoch and a resume would repeat epochs.
        Only the default ``ModelCheckpoint()`` is replaced: one the user configured (a monitor, a folder, a
        period) stays as it is, and ``enable_checkpointing=False`` adds none. A ``LearningRateMonitor`` is added
        to ``fit`` when there is a logger and none was configured.
        """
        trainer = self.trainer
        monitors = [] if trainer.state.fn != "fit" or not trainer.loggers else [LearningRateMonitor()]
        if any(isinstance(cb, LearningRateMonitor) for cb in trainer.callbacks):
            monitors = []
        checkpoints = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
        default = ModelCheckpoint()
        if len(checkpoints) != 1 or checkpoints[0].dirpath or checkpoints[0].state_key != default.state_key:
            return monitors
        # The monitored one first: Lightning's in-process ckpt_path="best" reads the first callback.
        best = ModelCheckpoint(monitor=self.monitor, mode=self.monitor_goal, filename="best-{epoch}-{step}")
        return [best, ModelCheckpoint(filename="last", save_top_k=1), *monitors]

    def show(self, batch: Any, count: int) -> list[Sample]:
        """The first ``count`` samples of an evaluation batch with the model's prediction and the truth, as
        :class:`lit_models.pictures.TrainingPictures` draws them each validation epoch. Called in evaluation
        mode; a family that has nothing to show returns an empty list.

        Args:
            batch: A batch as ``validation_step`` receives it (on the module's device).
            count: Samples wanted; fewer when the batch is smaller.
        """
        return []

    def summary_pictures(self, stage: str) -> dict[str, Picture]:
        """Pictures of a whole evaluation split by tag (``"test/confusion_matrix"``), drawn at the end of its epoch.
        Called on every rank (computing a split-wide metric gathers it from all of them); rank 0 writes them.

        Args:
            stage: "test".
        """
        return {}
