"""Training shown as pictures: validation samples with prediction and truth, test summaries, and loss curves.

:class:`TrainingPictures` is a Lightning callback that stays family-agnostic: each family's base module renders its
own samples (``show``) and split-wide pictures (``summary_pictures``), and the callback decides where they go. The
``lit-models`` CLI adds it to ``fit``, ``validate`` and ``test`` (``--plots false`` leaves it out); from Python, add
it to the Trainer's callbacks.

Everything is drawn with matplotlib's Agg canvas on :class:`matplotlib.figure.Figure` objects, never through
pyplot, so no window opens and a notebook's own plotting backend is left alone.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor

log = logging.getLogger(__name__)

Picture = np.ndarray  # H x W x 3 uint8


@dataclass
class Sample:
    """One sample as shown: an image, or a sequence's input steps as curves, or generated text, with a caption.

    Attributes:
        image: 3 x H x W uint8 (several panels side by side, e.g. truth | prediction).
        series: T x D float, the input steps of a sequence, drawn as D curves.
        text: Generated text (language models); ``caption`` then holds the prompt.
        caption: The prediction and the truth, in words.
        colour: Caption colour (matplotlib name): green for a right class, red for a wrong one.
    """

    image: Tensor | None = None
    series: Tensor | None = None
    text: str | None = None
    caption: str = ""
    colour: str = "black"


# ----------------------------------------------------------------------------------------------- figures


def figure_array(figure: Figure) -> Picture:
    """The figure drawn by Agg into an H x W x 3 uint8 array."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def sample_grid(samples: Sequence[Sample], columns: int | None = None, cell: float = 2.4) -> Picture:
    """Samples with their captions in a grid.

    Args:
        samples: What to draw, at least one.
        columns: Samples per row; default four for square images, fewer for wide ones.
        cell: Height of one sample in inches (at 100 dpi).
    """
    first = samples[0]
    aspect = first.image.shape[2] / first.image.shape[1] if first.image is not None else 1.5
    columns = max(1, min(len(samples), columns or round(4 / max(1.0, aspect))))
    rows = math.ceil(len(samples) / columns)
    lines = max(caption.count("\n") + 1 for caption in (s.caption for s in samples))
    figure = Figure(figsize=(columns * cell * min(aspect, 3.0), rows * (cell + 0.18 * lines)), dpi=100)
    figure.set_layout_engine("constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, sample in zip(axes, samples, strict=False):
        if sample.image is not None:
            ax.imshow(sample.image.permute(1, 2, 0).cpu().numpy())
            ax.set_axis_off()
        elif sample.series is not None:
            ax.plot(sample.series.float().cpu().numpy(), linewidth=1)
            ax.tick_params(labelsize=7)
        ax.set_title(sample.caption, color=sample.colour, fontsize=9)
    for ax in axes[len(samples) :]:
        ax.set_axis_off()
    return figure_array(figure)


def sample_text(samples: Sequence[Sample]) -> str:
    """Generated texts, each after its prompt."""
    return "".join(f"=== prompt: {sample.caption!r}\n{sample.text}\n\n" for sample in samples)


def confusion_picture(
    matrix: Tensor, names: Sequence[str] | None, metric: Any = None, title: str | None = None
) -> Picture:
    """A confusion matrix (rows true, columns predicted) as a picture.

    Args:
        matrix: num_classes x num_classes counts.
        names: Class names for the axes.
        metric: The torchmetrics confusion-matrix metric whose ``plot`` draws it (class names on both axes, counts
            in the cells); past 50 classes the matrix is drawn alone, as names and counts would not fit.
        title: Text above the matrix (the classification family's most confused pairs).
    """
    count = len(matrix)
    side = min(4.0 + 0.35 * count, 24.0)
    title_height = 0.17 * (title.count("\n") + 1) if title else 0.0  # 9-pt lines: the matrix keeps its size
    figure = Figure(figsize=(side, side + title_height), dpi=100)
    figure.set_layout_engine("constrained")
    ax = figure.subplots()
    if metric is not None and count <= 50:
        metric.plot(val=matrix.cpu(), ax=ax, add_text=count <= 20, labels=list(names) if names else None)
    else:
        ax.imshow(matrix.cpu().numpy())
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    return figure_array(figure)


# ----------------------------------------------------------------------------------------------- curves


def csv_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) pairs of every key of a CSVLogger's metrics.csv."""
    found: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    found.setdefault(key, []).append((step, float(value)))
    return found


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) pairs of every scalar in a TensorBoard run folder's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def logged_scalars(trainer: pl.Trainer) -> dict[str, list[tuple[int, float]]]:
    """What the run's CSV or TensorBoard logger has recorded so far (flushed first); empty for other loggers."""
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            logger.save()
            path = Path(logger.experiment.metrics_file_path)
            return csv_scalars(path) if path.is_file() else {}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.flush()
            return tensorboard_scalars(Path(logger.log_dir))
    return {}


def curves_picture(scalars: dict[str, list[tuple[int, float]]], monitor: str | None) -> Picture | None:
    """Loss (train per step and per epoch, val), the headline metric, and the learning rate, against the step."""
    panels: list[tuple[str, list[tuple[str, str]]]] = []
    losses = [("train/loss_step", "train (step)"), ("train/loss", "train"), ("train/loss_epoch", "train (epoch)"),
              ("val/loss", "val")]  # fmt: skip
    panels.append(("loss", [(key, label) for key, label in losses if key in scalars]))
    if monitor and monitor in scalars and not monitor.endswith("loss"):
        name = monitor.split("/", 1)[-1]
        train = [key for key in (f"train/{name}", f"train/{name}_epoch") if key in scalars]
        panels.append((name, [(key, "train") for key in train[:1]] + [(monitor, monitor.split("/", 1)[0])]))
    rates = sorted(key for key in scalars if key.startswith(("train/lr", "lr-")))
    panels.append(("learning rate", [(key, key) for key in rates]))
    panels = [(title, lines) for title, lines in panels if lines]
    if not panels:
        return None
    figure = Figure(figsize=(4.5 * len(panels), 3.4), dpi=100)
    figure.set_layout_engine("constrained")
    for ax, (title, lines) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        for key, label in lines:
            steps, values = zip(*scalars[key], strict=True)
            faint = key.endswith("_step")
            many = len(steps) > 30
            ax.plot(steps, values, label=label, linewidth=0.8 if faint else 1.6, alpha=0.45 if faint else 1.0,
                    marker=None if many else "o", markersize=3)  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure_array(figure)


# ----------------------------------------------------------------------------------------------- callback


class TrainingPictures(Callback):
    """Show what the model does while it trains, for every family.

    * Each validation epoch (and once in test): ``samples`` samples spread over the evaluation split (the first
      few of evenly spaced batches, so a split sorted by class shows several classes), the same ones every epoch,
      drawn by the module's ``show(batch, count)`` with prediction and truth (classes in green or red, masks or
      boxes over the image, a sequence's steps, or text generated from a prompt).
      TensorBoard receives them as the image ``val/samples`` (or ``test/samples``); with other loggers they are
      written to ``<run folder>/pictures/val_samples_epoch<N>.png`` (``test_samples.png``). Generated text goes
      to TensorBoard's text tab and always to ``<run folder>/pictures/val_samples_epoch<N>.txt``.
    * At the end of test: the module's ``summary_pictures("test")`` (classification: the confusion matrix and the
      most confident mistakes), written to ``<run folder>/pictures/test_confusion_matrix.png`` (``test_mistakes.png``)
      and logged to TensorBoard as ``test/confusion_matrix`` (``test/mistakes``); every tag ``test/<name>`` is
      written as ``test_<name>.png`` (detection: ``errors``, ``confusion_matrix``, ``precision_recall``,
      ``false_positives``, ``missed``, ``proposal_recall``).
    * At the end of fit: ``<run folder>/pictures/curves.png``, train/val loss, the module's ``monitor`` metric and
      the learning rate, read back from the CSV logger's metrics.csv or TensorBoard's event files.

    Rank 0 draws and writes; the samples come from its own shard of the evaluation split. Drawing runs the model
    once more on the shown samples only, in evaluation mode, without touching the random number generators that
    training uses.
    """

    def __init__(self, samples: int = 8, curves: bool = True) -> None:
        """Configure what is drawn.

        Args:
            samples: Evaluation samples shown each epoch; 0 shows none.
            curves: Draw the loss and metric curves at the end of fit.
        """
        if samples < 0:
            raise ValueError(f"samples must be >= 0, got {samples}")
        self.samples = samples
        self.curves = curves
        self.folder: Path | None = None
        self.shown: list[Sample] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # trainer.log_dir is a broadcast from rank 0: asked here, where every rank calls it once.
        log_dir = trainer.log_dir
        self.folder = Path(log_dir) / "pictures" if log_dir else None

    @staticmethod
    def image_loggers(trainer: pl.Trainer) -> list[TensorBoardLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]

    def write_png(self, picture: Picture, name: str) -> Path | None:
        if self.folder is None:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.png"
        Image.fromarray(picture).save(path)
        return path

    # ------------------------------------------------------------------------------------------ samples

    def collect(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> None:
        wanted = self.samples - len(self.shown)
        if trainer.sanity_checking or not trainer.is_global_zero or dataloader_idx != 0 or wanted <= 0:
            return
        batches = trainer.num_test_batches if trainer.testing else trainer.num_val_batches
        total = batches[0] if batches else float("inf")
        if math.isfinite(total) and total > 1:
            # Evenly spaced batches, an equal share of samples from each; the last batch takes what is left.
            used = min(self.samples, int(total))
            chosen = {round(i * (total - 1) / max(used - 1, 1)) for i in range(used)}
            if batch_idx not in chosen:
                return
            if batch_idx != max(chosen):
                wanted = min(wanted, math.ceil(self.samples / len(chosen)))
        show = getattr(pl_module, "show", None)
        if show is not None:
            self.shown += list(show(batch, wanted))[:wanted]

    def publish(self, trainer: pl.Trainer, stage: str, epoch: int | None) -> None:
        samples, self.shown = self.shown, []
        if not samples or not trainer.is_global_zero:
            return
        tag = f"{stage}/samples"
        name = f"{stage}_samples" if epoch is None else f"{stage}_samples_epoch{epoch}"
        loggers = self.image_loggers(trainer)
        if all(sample.text is not None for sample in samples):
            text = sample_text(samples)
            for logger in loggers:  # markdown: a code block keeps line breaks and spacing
                logger.experiment.add_text(tag, "```\n" + text + "\n```", global_step=trainer.global_step)
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
                (self.folder / f"{name}.txt").write_text(text, encoding="utf-8")
            return
        picture = sample_grid([sample for sample in samples if sample.text is None])
        for logger in loggers:
            logger.experiment.add_image(tag, picture, global_step=trainer.global_step, dataformats="HWC")
        if not loggers:
            self.write_png(picture, name)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.shown = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.collect(trainer, pl_module, batch, batch_idx, dataloader_idx)

    # Test draws the same samples as validation does.
    on_test_epoch_start = on_validation_epoch_start
    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.publish(trainer, "val", trainer.current_epoch)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.publish(trainer, "test", None)
        summary = getattr(pl_module, "summary_pictures", None)
        # Every rank: computing a split-wide metric gathers it from all ranks.
        pictures = summary("test") if summary is not None else {}
        if not trainer.is_global_zero:
            return
        for tag, picture in pictures.items():
            path = self.write_png(picture, tag.replace("/", "_"))
            for logger in self.image_loggers(trainer):
                logger.experiment.add_image(tag, picture, global_step=trainer.global_step, dataformats="HWC")
            if path is not None:
                log.info("wrote %s", path)

    # ------------------------------------------------------------------------------------------ curves

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.curves or not trainer.is_global_zero or self.folder is None:
            return
        picture = curves_picture(logged_scalars(trainer), getattr(pl_module, "monitor", None))
        if picture is not None:
            log.info("wrote %s", self.write_png(picture, "curves"))
