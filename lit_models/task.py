"""What every family's LightningModule shares beside its loop: class names in checkpoints, checkpointing by the
family's headline metric, and injected optimizer / LR-scheduler factories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lit_models import predictions
from lit_models.checkpoint_file import CHECKPOINT_KEY
from lit_models.class_names import ClassNamesMismatchError, describe_difference
from lit_models.datamodules.spec import DataSpec
from lit_models.optim import build_optimizers
from lit_models.stages import InitError, ParameterMapping, SourceModel
from lit_models.version import __version__

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


def input_names(batch: Any, count: int, batch_idx: int) -> tuple[list[str], list[str]]:
    """The files of a predict batch's inputs ("" for images in memory) and the names their outputs are written
    under: the batch's own ``name`` (a file's path below its folder), else the file's path, else the input's
    position."""
    meta = batch if isinstance(batch, Mapping) else {}
    paths = list(meta.get("path") or [""] * count)
    names = list(meta.get("name") or [path or str(batch_idx * count + index) for index, path in enumerate(paths)])
    return paths, names


class TaskModule(pl.LightningModule):
    """Base of the family bases (ImageClassifier, Segmenter, Detector, SequenceModule).

    A family sets ``monitor`` (its headline validation metric), ``prediction_writer`` (the writer class of
    :mod:`lit_models.writers` that ``predict`` uses) and ``target`` (the batch key of its truth), makes its
    ``predict_step`` return one record of :mod:`lit_models.predictions` per input, passes its output size and the
    arguments below to ``__init__``, and sets ``self.net``: built by the architecture's ``build_net`` (image
    families, from the ``**net_args`` of the family's constructor, so jsonargparse lists the net's arguments under
    ``--model.*``) or from the data (sequence family). The hooks below (``use_data``, ``check_data``,
    ``export_graph``, ``set_generation``, ``show``, ``summary_pictures``) are where a family differs; nothing
    outside a family asks which family a module is.

    Args:
        bias_lr_mult: Learning-rate multiple of biases (Caffe-era recipes, FCN and the R-CNN family: 2).
        bias_weight_decay: Whether biases are weight-decayed (Caffe-era recipes: no, their ``decay_mult: 0``).
        optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9). Paper recipes are in configs/.
        lr_scheduler: LR scheduler factory; default none. A ReduceLROnPlateau watches ``monitor``.
        norm_weight_decay: Weight decay of the weights and biases of normalisation layers (batch, group, layer and
            instance norm, found by type); None: the optimizer's. torchvision's recent recipes use 0.
    """

    monitor = "val/loss"
    monitor_mode: str | None = None  # "min" or "max"; None: "min" for a loss, else "max"
    prediction_writer: type | None = None
    target = "label"
    class_names: list[str] | None = None
    # The data's description (DataModule.spec): taken in setup, saved in checkpoints, read by prediction and export.
    data_spec: DataSpec | None = None
    # The DataModule that rebuilds prediction data (its prediction_data(inputs)): the one trained on, or one rebuilt
    # from a checkpoint by lit_models.load. Not saved.
    prediction_source: Any = None
    # Where this module's weights started, when a run initialised it from an earlier stage (lit_models.stages):
    # {"checkpoint", "model", "stage"}; and this run's own place in a chain ({"chain", "stage"}). Both are
    # saved in its checkpoints.
    initialised_from: dict[str, Any] | None = None
    chain_stage: dict[str, Any] | None = None

    def __init__(
        self,
        num_classes: int,
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        norm_weight_decay: float | None = None,
    ) -> None:
        super().__init__()
        # Every constructor argument up the subclass chain is saved (the net's, given as **net_args, flattened in),
        # except the factories: hyperparameters stay primitive so checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.net: nn.Module | None = None
        self.num_classes = num_classes
        self.bias_lr_mult, self.bias_weight_decay = bias_lr_mult, bias_weight_decay
        if norm_weight_decay is not None and norm_weight_decay < 0:
            raise ValueError(f"norm_weight_decay must be >= 0 or null (the optimizer's), got {norm_weight_decay}")
        self.norm_weight_decay = norm_weight_decay
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.evaluation_losses = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})

    def split(self, batch: Any) -> tuple[Any, Any | None]:
        """The batch's inputs and targets (:func:`split_batch` with this family's ``target`` key)."""
        return split_batch(batch, self.target)

    @property
    def display_names(self) -> list[str]:
        """The class names, or the class indices as text where the data named none."""
        return self.class_names or [str(index) for index in range(self.num_classes)]

    def image_statistics(self) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
        """The data's normalisation ``mean`` and ``std``, to show its images (None, None where unknown)."""
        spec = self.data_spec
        return (spec.mean, spec.std) if spec is not None else (None, None)

    def log_per_class(self, tag: str, values: Sequence[float], labels: Sequence[int] | None = None) -> None:
        """Log one value per class as ``{tag}/<class name>`` (``labels``: the class of each value; default 0..)."""
        names = self.display_names
        for label, value in zip(range(len(values)) if labels is None else labels, values, strict=True):
            self.log(f"{tag}/{names[label]}", value)

    def log_evaluation_loss(self, stage: str, loss: Tensor, count: int) -> None:
        """Log ``{stage}/loss`` (``val`` or ``test``), the mean over every sample of the epoch, ``loss`` being the mean
        over this batch's ``count``. Under DDP the ranks' shards differ in size (no sample is evaluated twice), so
        Lightning's ``sync_dist`` mean of the ranks' means would differ from one process; the metric sums instead."""
        metric = self.evaluation_losses[stage]
        metric.update(loss.detach(), weight=count)
        self.log(f"{stage}/loss", metric, prog_bar=True, batch_size=count)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        self.use_data(datamodule.spec)
        if stage != "predict":  # a prediction DataModule serves only its inputs; the training one rebuilds any
            self.prediction_source = datamodule

    def use_data(self, spec: DataSpec) -> None:
        """Take the data's description: check that this module can run on it (``check_data``), that its classes are
        the ones a loaded checkpoint was trained on, and keep it for checkpoints, export and prediction. The CLI
        calls it right after building both, so a mismatch stops before any work; ``setup`` calls it for everyone
        else; a second call with the same description checks nothing again.
        """
        if spec == self.data_spec and self.class_names is not None:
            return
        self.check_data(spec)
        names = list(spec.class_names)
        if self.class_names is not None and self.class_names != names:
            # Weights loaded before the trainer started (load_from_checkpoint) meet different data.
            raise ClassNamesMismatchError(describe_difference(self.class_names, names))
        self.class_names, self.data_spec = names, spec

    def check_data(self, spec: DataSpec) -> None:
        """Raise ValueError, naming what to set, where this module cannot run on data of this description."""
        if spec.num_classes != self.num_classes:
            shown = ", ".join(spec.class_names[:10]) + (", ..." if spec.num_classes > 10 else "")
            raise ValueError(
                f"{type(self).__name__} has num_classes {self.num_classes} but the data has {spec.num_classes} "
                f"classes ({shown}): leave model.num_classes out (the CLI takes it from the data) or make them agree."
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.class_names is not None:
            checkpoint["class_names"] = list(self.class_names)
        # What lit_models.load needs to rebuild the module and its data's preprocessing from this file alone.
        source = self.prediction_source
        checkpoint[CHECKPOINT_KEY] = {
            "version": __version__,
            "model": type(self).__name__,
            "data": type(source).__name__ if source is not None else None,
            "data_spec": self.data_spec.to_dict() if self.data_spec is not None else None,
            "stage": {**(self.chain_stage or {}), "init_from": self.initialised_from},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("class_names")
        if saved is not None:
            if self.class_names is not None and list(saved) != self.class_names:
                raise ClassNamesMismatchError(describe_difference(list(saved), self.class_names))
            self.class_names = list(saved)
        entry = checkpoint.get(CHECKPOINT_KEY) or {}
        if entry.get("data_spec") is not None:
            self.data_spec = DataSpec.from_dict(entry["data_spec"])
        stage = dict(entry.get("stage") or {})  # a resumed run keeps the record of where its weights started
        self.initialised_from = stage.pop("init_from", None) or self.initialised_from
        self.chain_stage = self.chain_stage or stage or None

    def init_mapping(self, source: SourceModel) -> ParameterMapping:
        """How the checkpoint ``source`` initialises this module (``lit-models fit --init_from``, a chain's
        ``init_from``): which of its parameters go where, and which of this module's layers start fresh. This
        default takes a checkpoint of the same module with the same parameters (fine-tuning from an earlier run);
        an architecture that grows from another (FCN-16s from FCN-32s) declares its own mapping.

        Raises:
            InitError: ``source`` is another kind of model.
        """
        if source.model != type(self).__name__:
            raise InitError(
                f"{type(self).__name__} initialises from a {type(self).__name__} checkpoint; {source.describe()} "
                "is another model."
            )
        return ParameterMapping()

    def predict(self, inputs: Any, batch_size: int = 8) -> list[predictions.Prediction]:
        """Predict on files, folders, patterns, PIL images or image tensors (prompts or array files for sequence
        models): one record per input (:func:`lit_models.predictions.predict`). Works on a module from
        :func:`lit_models.load` and on one just trained (its DataModule rebuilds the evaluation preprocessing)."""
        return predictions.predict(self, inputs, batch_size)

    @property
    def preprocess(self) -> Any:
        """The evaluation transform of the data this module was trained on (a PIL image or C x H x W uint8 tensor,
        any mode, to the network's input)."""
        return predictions.preprocessing(self)

    def export_graph(self) -> tuple[nn.Module, Tensor, str]:
        """What ``lit-models export`` and ``summary`` trace: (the module to run, an example input, what the graph
        computes). Default: the net on an input of the data's shape, its first output."""
        if self.data_spec is None:
            raise ValueError(f"{type(self).__name__} has not met its data yet: fit it, or load a checkpoint.")
        return FirstOutput(self.net), self.data_spec.example_input(), self.graph_description

    graph_description = "inputs -> scores"

    def set_generation(self, **settings: float) -> None:
        """Change how a language model samples text (``temperature``, ``generate_length``) for this run."""
        raise ValueError(f"{type(self).__name__} does not generate text; {sorted(settings)} are for language models.")

    @property
    def monitor_goal(self) -> str:
        """How ``monitor`` improves: "min" or "max"."""
        return self.monitor_mode or ("min" if self.monitor.endswith("loss") else "max")

    def configure_optimizers(self) -> Any:
        return build_optimizers(
            self,
            self.optimizer_factory,
            self.lr_scheduler_factory,
            plateau_monitor=self.monitor,
            plateau_mode=self.monitor_goal,
            bias_lr_mult=self.bias_lr_mult,
            bias_weight_decay=self.bias_weight_decay,
            norm_weight_decay=self.norm_weight_decay,
            max_epochs=self._trainer.max_epochs if self._trainer is not None else None,
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


class FirstOutput(nn.Module):
    """A net whose forward returns a tuple or NamedTuple (GoogLeNet's logits, a sequence net's outputs), reduced to
    its first tensor: the one an exported graph gives."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inputs: Tensor) -> Tensor:
        output = self.net(inputs)
        return output if isinstance(output, Tensor) else output[0]
