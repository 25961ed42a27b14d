"""Prediction writers: the CLI adds the one its model's family names (``prediction_writer``) to ``predict``."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from lit_models.datamodules.files import load_rgb
from lit_models.datamodules.voc_layout import voc_palette
from lit_models.pictures import Sample, sample_grid


def image_tensor(path: str) -> torch.Tensor:
    """The file as 3 x H x W uint8, what torchvision's drawing utilities take."""
    return torch.from_numpy(np.array(load_rgb(path))).permute(2, 0, 1)


# One RGB colour per class index: the PASCAL VOC colour map, so masks and boxes of a class look alike.
CLASS_COLOURS = [tuple(rgb) for rgb in np.array(voc_palette()).reshape(256, 3).tolist()]


def gather_rows(trainer: pl.Trainer, rows: list) -> list:
    """Every rank's rows, in rank order (each rank's own under DDP; all of them in one process)."""
    if trainer.world_size == 1:
        return rows
    gathered: list[Any] = [None] * trainer.world_size
    dist.all_gather_object(gathered, rows)
    return [row for part in gathered for row in part]


class PredictionWriter(BasePredictionWriter):
    """Where predictions go, and the refusal to overwrite what a user already has there."""

    default_name = "predictions"

    def __init__(self, output: str | None = None, overwrite: bool = False, write_interval: str = "epoch") -> None:
        super().__init__(write_interval=write_interval)
        self.output = output
        self.overwrite = overwrite
        self.path = Path(output) if output else None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resolved here, on every rank at once: trainer.log_dir is a collective (a broadcast from rank 0), which
        # must not run inside per-batch hooks that ranks call different numbers of times.
        self.path = Path(self.output) if self.output else Path(trainer.log_dir or ".") / self.default_name
        taken = [path for path in self.outputs() if path.exists() and (path.is_file() or any(path.iterdir()))]
        trainer.strategy.barrier()  # every rank has looked before any rank writes
        if taken and not self.overwrite:
            raise FileExistsError(
                f"{taken[0]} already exists; pass another --prediction_writer.output or "
                "--prediction_writer.overwrite true."
            )

    def outputs(self) -> list[Path]:
        """The files or folders this writer fills (``self.path`` resolved), which must not hold anything yet."""
        return [self.path]


class PredictionCSVWriter(PredictionWriter):
    """Classification: a CSV of file, then top-k class names with probabilities (rank 0 writes), and beside it a
    PNG of the first ``grid`` images (by path) captioned with their top class and its probability
    (``predictions.png`` next to ``predictions.csv``)."""

    default_name = "predictions.csv"

    def __init__(self, output: str | None = None, overwrite: bool = False, grid: int = 64) -> None:
        """Configure the CSV output.

        Args:
            output: CSV path; default ``predictions.csv`` in the run's log folder.
            overwrite: Replace existing files instead of stopping with an error.
            grid: Images drawn in the PNG beside the CSV; 0 draws none (the CLI's ``--plots false``).
        """
        super().__init__(output, overwrite, write_interval="epoch")
        self.grid = grid

    def outputs(self) -> list[Path]:
        return [self.path, self.path.with_suffix(".png")] if self.grid else [self.path]

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        names = getattr(pl_module, "class_names", None)
        rows = []
        for batch in predictions[0] if predictions and isinstance(predictions[0], list) else predictions:
            for path, indices, probs in zip(
                batch["path"], batch["indices"].tolist(), batch["probs"].tolist(), strict=True
            ):
                row = [path]
                for index, prob in zip(indices, probs, strict=True):
                    row += [names[index] if names else str(index), f"{prob:.6f}"]
                rows.append(row)
        rows = gather_rows(trainer, rows)
        if trainer.global_rank != 0:
            return
        rows.sort(key=lambda row: row[0])
        top_k = (len(rows[0]) - 1) // 2 if rows else 0
        path = self.path
        os.makedirs(path.parent, exist_ok=True)
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path"] + [f"{col}_{k}" for k in range(1, top_k + 1) for col in ("class", "prob")])
            writer.writerows(rows)
        print(f"wrote {len(rows)} predictions to {path}")
        shown = [row for row in rows if row[0]][: self.grid]  # rows of images read from files
        if shown:
            pictures = [thumbnail(row[0], f"{row[1]} {float(row[2]):.2f}") for row in shown]
            Image.fromarray(sample_grid(pictures, columns=8, cell=1.6)).save(path.with_suffix(".png"))
            print(f"drew the first {len(shown)} of them in {path.with_suffix('.png')}")


def thumbnail(path: str, caption: str, size: int = 128) -> Sample:
    """An image file shrunk to fit ``size`` pixels, with a caption."""
    image = load_rgb(path)
    image.thumbnail((size, size))
    return Sample(image=torch.from_numpy(np.array(image)).permute(2, 0, 1), caption=caption)


class SegmentationWriter(PredictionWriter):
    """Segmentation: per image, the class-index mask as a palette PNG and a colour overlay on the image.

    ``<output>/masks/<name>.png`` holds class indices with the PASCAL VOC colour map (VOC's own format, so the
    files read back as labels); ``<output>/overlays/<name>.png`` draws every non-background class over the
    image in the same colours. Each rank writes its own images as they come, so nothing is held in memory.
    """

    def __init__(self, output: str | None = None, overwrite: bool = False) -> None:
        """Configure the output folder.

        Args:
            output: Folder; default ``predictions/`` in the run's log folder.
            overwrite: Write into a non-empty folder, replacing files of the same names.
        """
        super().__init__(output, overwrite, write_interval="batch")
        self.palette = voc_palette()
        self.count = 0

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self.count = 0

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
        folder = self.path
        for mask, path, name in zip(prediction["mask"], prediction["path"], prediction["name"], strict=True):
            mask_file = folder / "masks" / f"{name}.png"
            overlay_file = folder / "overlays" / f"{name}.png"
            mask_file.parent.mkdir(parents=True, exist_ok=True)
            overlay_file.parent.mkdir(parents=True, exist_ok=True)
            indices = Image.fromarray(mask.numpy(), mode="P")
            indices.putpalette(self.palette)
            indices.save(mask_file)
            if path:
                self.overlay(path, mask).save(overlay_file)
            self.count += 1

    def overlay(self, image_path: str, mask: torch.Tensor) -> Image.Image:
        image = image_tensor(image_path)
        present = [int(c) for c in mask.unique() if c != 0]
        if not present:
            return Image.fromarray(image.permute(1, 2, 0).numpy())
        layers = torch.stack([mask == c for c in present])
        drawn = draw_segmentation_masks(image, layers, alpha=0.5, colors=[CLASS_COLOURS[c] for c in present])
        return Image.fromarray(drawn.permute(1, 2, 0).numpy())

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            print(f"wrote masks and overlays of {self.count} image(s) (this rank) to {self.path}")


class DetectionWriter(PredictionWriter):
    """Detection: each image with its boxes drawn, and one JSON file of every detection.

    ``<output>/images/<name>.png`` draws the detections scoring at least ``draw_score`` (class name and score on
    each box, one colour per class); ``<output>/detections.json`` lists, per image file, every detection the model
    returned (boxes ``[x1, y1, x2, y2]`` in the file's pixels, class name, label index, score), sorted by path.
    Images are written by each rank as they come; the JSON is gathered and written by rank 0.
    """

    def __init__(self, output: str | None = None, overwrite: bool = False, draw_score: float = 0.5) -> None:
        """Configure the output folder.

        Args:
            output: Folder; default ``predictions/`` in the run's log folder.
            overwrite: Write into a non-empty folder, replacing files of the same names.
            draw_score: Lowest score drawn on the pictures (the JSON keeps every detection).
        """
        super().__init__(output, overwrite, write_interval="batch")
        self.draw_score = draw_score
        self.records: list[dict[str, Any]] = []

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self.records = []

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
        names = pl_module.display_names
        for path, name, boxes, scores, labels in zip(
            prediction["path"],
            prediction["name"],
            prediction["boxes"],
            prediction["scores"],
            prediction["labels"],
            strict=True,
        ):
            detections = [
                {"label": names[label], "label_index": label, "score": round(score, 5), "box": [round(v, 2) for v in b]}
                for b, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True)
            ]
            self.records.append({"path": path, "name": name, "detections": detections})
            if path:
                picture = folder_file(self.path / "images", name)
                self.draw(path, boxes, scores, labels, names).save(picture)

    def draw(self, image_path: str, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, names: list):
        image = image_tensor(image_path)
        keep = scores >= self.draw_score
        if keep.any():
            captions = [f"{names[int(c)]} {s:.2f}" for c, s in zip(labels[keep], scores[keep].tolist(), strict=True)]
            colours = [CLASS_COLOURS[int(c) % 256] for c in labels[keep]]
            image = draw_bounding_boxes(image, boxes[keep], labels=captions, colors=colours, width=2)
        return Image.fromarray(image.permute(1, 2, 0).numpy())

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


def folder_file(folder: Path, name: str) -> Path:
    """``folder/name.png``, its folders made (a name keeps the input's sub-folders: ``street/0001``)."""
    path = folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
