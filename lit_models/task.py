"""What every family's LightningModule shares beside its loop: class names in checkpoints, checkpointing by the
family's headline metric, and injected optimizer / LR-scheduler factories."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_models.class_names import ClassNamesMismatchError, describe_difference
from lit_models.optim import build_optimizers


class TaskModule(pl.LightningModule):
    """Base of the family bases (ImageClassifier, and the segmentation/detection/sequence ones to come).

    A family sets ``monitor`` (its headline validation metric) and ``prediction_writer`` (the callback class,
    taking ``output`` and ``overwrite``, that the CLI adds to ``predict``), and passes its net, output size and
    the injected factories to ``__init__``.
    """

    monitor = "val/loss"
    monitor_mode: str | None = None  # "min" or "max"; None: "min" for a loss, else "max"
    prediction_writer: type | None = None
    class_names: list[str] | None = None
    # Caffe-era recipes (FCN, R-CNN family) train biases at twice the learning rate without weight decay; a
    # family that exposes this sets these from its arguments.
    bias_lr_mult = 1.0
    bias_weight_decay = True

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        # Every constructor argument up the subclass chain is saved, except the net (its arguments are) and the
        # factories: hyperparameters stay primitive so checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        self.net = net
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler

    def setup(self, stage: str) -> None:
        names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None)
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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("class_names")
        if saved is None:
            return
        if self.class_names is not None and list(saved) != self.class_names:
            raise ClassNamesMismatchError(describe_difference(list(saved), self.class_names))
        self.class_names = list(saved)

    def configure_optimizers(self) -> Any:
        return build_optimizers(
            self.named_parameters(),
            self.optimizer_factory,
            self.lr_scheduler_factory,
            bias_lr_mult=self.bias_lr_mult,
            bias_weight_decay=self.bias_weight_decay,
        )

    def configure_callbacks(self) -> list:
        """Replace Lightning's default checkpointing by ``best-*.ckpt`` (by ``monitor``) + ``last.ckpt``.

        Two callbacks because Lightning 2.6's ``save_last=True`` only copies the newest *top-k* save, so on a
        monitored callback last.ckpt would lag behind the real last epoch and a resume would repeat epochs.
        Only the default ``ModelCheckpoint()`` is replaced: one the user configured (a monitor, a folder, a
        period) stays as it is, and ``enable_checkpointing=False`` adds none.
        """
        checkpoints = [cb for cb in self.trainer.callbacks if isinstance(cb, ModelCheckpoint)]
        default = ModelCheckpoint()
        if len(checkpoints) != 1 or checkpoints[0].dirpath or checkpoints[0].state_key != default.state_key:
            return []
        mode = self.monitor_mode or ("min" if self.monitor.endswith("loss") else "max")
        # The monitored one first: Lightning's in-process ckpt_path="best" reads the first callback.
        best = ModelCheckpoint(monitor=self.monitor, mode=mode, filename="best-{epoch}-{step}")
        return [best, ModelCheckpoint(filename="last", save_top_k=1)]
