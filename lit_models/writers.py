"""Prediction writers: what ``lit-models predict`` writes, one writer per family (its ``prediction_writer``).

Each consumes the prediction records its family's ``predict_step`` makes (:mod:`lit_models.predictions`), one per
input, and draws with :mod:`lit_models.drawing`, as the training pictures do. Every writer refuses to write over
files a user already has unless told to (``overwrite``).
"""

from __future__ import annotations

import csv
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter

from lit_models.datamodules.files import load_rgb
from lit_models.datamodules.voc_layout import voc_palette
from lit_models.drawing import DRAW_SCORE, draw_boxes, image_tensor, overlay_mask
from lit_models.pictures import Sample, sample_grid
from lit_models.predictions import ClassPrediction, Prediction


def gather_rows(trainer: pl.Trainer, rows: list) -> list:
    """Every rank's rows, in rank order (each rank's own under DDP; all of them in one process)."""
    if trainer.world_size == 1:
        return rows
    gathered: list[Any] = [None] * trainer.world_size
    dist.all_gather_object(gathered, rows)
    return [row for part in gathered for row in part]


def records_of(predictions: Any) -> list[Prediction]:
    """The records of an epoch's predictions: a list of batches (each a list of records), or of dataloaders'."""
    batches = predictions[0] if predictions and predictions[0] and isinstance(predictions[0][0], list) else predictions
    return [record for batch in batches for record in batch]


class PredictionWriter(BasePredictionWriter):
    """Where predictions go, and the refusal to overwrite what a user already has there.

    Args:
        output: Where to write; default: ``default_name`` in the run's log folder.
        overwrite: Write into a non-empty folder (or over a file), replacing files of the same names.
        draw_score: Detections: the lowest score drawn on the pictures (the JSON keeps every detection); None: the
            model's ``draw_score``.
        grid: Classification: images drawn, captioned, in a PNG beside the CSV; 0 draws none.
    """

    default_name = "predictions"

    def __init__(
        self,
        output: str | None = None,
        overwrite: bool = False,
        draw_score: float | None = None,
        grid: int = 64,
        write_interval: str = "epoch",
    ) -> None:
        super().__init__(write_interval=write_interval)
        self.output = output
        self.overwrite = overwrite
        self.draw_score = draw_score
        self.grid = grid
        self.path = Path(output) if output else None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resolved here, on every rank at once: trainer.log_dir is a collective (a broadcast from rank 0), which
        # must not run inside per-batch hooks that ranks call different numbers of times.
        self.path = Path(self.output) if self.output else Path(trainer.log_dir or ".") / self.default_name
        taken = [path for path in self.outputs() if path.exists() and (path.is_file() or any(path.iterdir()))]
        trainer.strategy.barrier()  # every rank has looked before any rank writes
        if taken and not self.overwrite:
            raise FileExistsError(
                f"{taken[0]} already exists; choose another --output, or pass --overwrite to replace it."
            )

    def outputs(self) -> list[Path]:
        """The files or folders this writer fills (``self.path`` resolved), which must not hold anything yet."""
        return [self.path]


class BatchWriter(PredictionWriter, ABC):
    """A writer that writes each batch's records as they come (``write_interval="batch"``): nothing held in memory."""

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self.write_batch(pl_module, prediction)

    @abstractmethod
    def write_batch(self, pl_module: pl.LightningModule, prediction: list[Prediction]) -> None:
        """Write one batch's records."""


def class_columns(records: list[ClassPrediction]) -> list[str]:
    """``class_1, prob_1, class_2, prob_2, ...`` for the top-k of these records."""
    top_k = max((len(record.classes) for record in records), default=0)
    return [f"{column}_{k}" for k in range(1, top_k + 1) for column in ("class", "prob")]


def class_row(first: Any, record: ClassPrediction) -> list:
    """``first``, then each of the record's classes with its probability."""
    row = [first]
    for name, prob in zip(record.classes, record.probs, strict=True):
        row += [name, f"{prob:.6f}"]
    return row


class ClassificationWriter(PredictionWriter):
    """Classification: a CSV of file, then top-k class names with probabilities, sorted by path (rank 0 writes), and
    beside it a PNG of the first ``grid`` images captioned with their top class and its probability
    (``predictions.png`` next to ``predictions.csv``)."""

    default_name = "predictions.csv"

    def outputs(self) -> list[Path]:
        return [self.path, self.path.with_suffix(".png")] if self.grid else [self.path]

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        records = records_of(predictions)
        rows = gather_rows(trainer, [class_row(record.path or record.name, record) for record in records])
        if trainer.global_rank != 0:
            return
        rows.sort(key=lambda row: row[0])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", *class_columns(records)])
            writer.writerows(rows)
        print(f"wrote {len(rows)} predictions to {self.path}")
        shown = [row for row in rows if Path(str(row[0])).is_file()][: self.grid]  # rows of images read from files
        if shown:
            pictures = [thumbnail(row[0], f"{row[1]} {float(row[2]):.2f}") for row in shown]
            Image.fromarray(sample_grid(pictures, columns=8, cell=1.6)).save(self.path.with_suffix(".png"))
            print(f"drew the first {len(shown)} of them in {self.path.with_suffix('.png')}")


def thumbnail(path: str, caption: str, size: int = 128) -> Sample:
    """An image file shrunk to fit ``size`` pixels, with a caption."""
    image = load_rgb(path)
    image.thumbnail((size, size))
    return Sample(image=torch.from_numpy(np.array(image)).permute(2, 0, 1), caption=caption)


def folder_file(folder: Path, name: str) -> Path:
    """``folder/name.png``, its folders made (a name keeps the input's sub-folders: ``street/0001``)."""
    path = folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class SegmentationWriter(BatchWriter):
    """Segmentation: per image, the class-index mask as a palette PNG and a colour overlay on the image.

    ``<output>/masks/<name>.png`` holds class indices with the PASCAL VOC colour map (VOC's own format, so the
    files read back as labels); ``<output>/overlays/<name>.png`` draws every non-background class over the
    image in the same colours. Each rank writes its own images as they come, so nothing is held in memory.
    """

    def __init__(self, output: str | None = None, overwrite: bool = False, **options: Any) -> None:
        super().__init__(output, overwrite, write_interval="batch", **options)
        self.palette = voc_palette()
        self.count = 0

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self.count = 0

    def write_batch(self, pl_module: pl.LightningModule, prediction: list[Prediction]) -> None:
        for record in prediction:
            indices = Image.fromarray(record.mask.numpy(), mode="P")
            indices.putpalette(self.palette)
            indices.save(folder_file(self.path / "masks", record.name))
            if record.path:
                drawn = overlay_mask(image_tensor(record.path), record.mask)
                Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(folder_file(self.path / "overlays", record.name))
            self.count += 1

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            print(f"wrote masks and overlays of {self.count} image(s) (this rank) to {self.path}")


class DetectionWriter(BatchWriter):
    """Detection: each image with its boxes drawn, and one JSON file of every detection.

    ``<output>/images/<name>.png`` draws the detections scoring at least ``draw_score`` (class name and score on
    each box, one colour per class); ``<output>/detections.json`` lists, per image file, every detection the model
    returned (boxes ``[x1, y1, x2, y2]`` in the file's pixels, class name, label index, score), sorted by path.
    Images are written by each rank as they come; the JSON is gathered and written by rank 0.
    """

    def __init__(self, output: str | None = None, overwrite: bool = False, **options: Any) -> None:
        super().__init__(output, overwrite, write_interval="batch", **options)
        self.records: list[dict[str, Any]] = []

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self.records = []

    def write_batch(self, pl_module: pl.LightningModule, prediction: list[Prediction]) -> None:
        names = pl_module.display_names
        lowest = self.draw_score if self.draw_score is not None else getattr(pl_module, "draw_score", DRAW_SCORE)
        for record in prediction:
            self.records.append(record.as_json())
            if record.path:
                image = image_tensor(record.path)
                drawn = draw_boxes(image, record.boxes, record.labels, names, record.scores, lowest)
                Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(folder_file(self.path / "images", record.name))

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        records = gather_rows(trainer, self.records)
        if not trainer.is_global_zero:
            return
        records.sort(key=lambda record: (record["path"], record["name"]))
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "detections.json", "w") as handle:
            json.dump(records, handle, indent=1)
        found = sum(len(record["detections"]) for record in records)
        print(f"wrote {found} detections of {len(records)} image(s) to {self.path / 'detections.json'}")


class SequenceWriter(PredictionWriter):
    """Sequences: ``<output>/predictions.csv`` (classification: the sequence's index, then top-k classes with
    probabilities; regression: the index, then one column per target) or ``<output>/generated.txt`` (language
    model: each prompt followed by its generated text). Rank 0 writes, after gathering every rank's rows."""

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        records = records_of(predictions)
        if records and hasattr(records[0], "generated"):
            self.write_texts(trainer, [(record.prompt, record.generated) for record in records])
            return
        if records and hasattr(records[0], "values"):
            header = ["index", *records[0].targets]
            rows = [[r.index, *(f"{v:.6g}" for v in r.values)] for r in records]
        else:
            header = ["index", *class_columns(records)]
            rows = [class_row(record.index, record) for record in records]
        rows = gather_rows(trainer, rows)
        if trainer.global_rank != 0:
            return
        rows.sort(key=lambda row: row[0])
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / "predictions.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        print(f"wrote {len(rows)} predictions to {path}")

    def write_texts(self, trainer: pl.Trainer, rows: list[tuple[str, str]]) -> None:
        rows = gather_rows(trainer, rows)
        if trainer.global_rank != 0:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / "generated.txt"
        path.write_text("".join(f"=== prompt: {prompt!r}\n{prompt}{text}\n\n" for prompt, text in rows))
        print(f"wrote {len(rows)} generated text(s) to {path}:\n{rows[0][0]}{rows[0][1]}" if rows else "")
