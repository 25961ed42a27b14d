"""A trained detector's detections over its data's test images, in the pixels of the image files, beside their
annotations: what ``python -m lit_models.detection.rescoring`` and ``benchmarks/detection_test_protocols.py``
measure.

The checkpoint carries the module and its DataModule's arguments (docs/architecture.md, rule 12), so nothing else
is needed. The images go through Lightning's predict loop as ``lit-models predict`` runs it, with the module's test
protocol (``test_flip``, a net's ``test_scales``, Fast R-CNN's ``svd_ranks``); the truth is read from the
annotations as they are, in the same pixels.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from lit_models.checkpoint_file import read_checkpoint, saved_class
from lit_models.datamodules.files import DataError
from lit_models.detection.base import Detector
from lit_models.inference import build_datamodule, build_module
from lit_models.metrics import evaluation_targets, mean_average_precision
from lit_models.predictions import start_up_lines_hidden

Boxes = dict[str, Tensor]  # {"boxes": N x 4 xyxy, "labels": N, and "scores" (detections) or "iscrowd" (truth)}
TRUTH_KEYS = ("boxes", "labels", "difficult", "iscrowd")


@dataclass
class SplitDetections:
    """A detector's detections on each test image and the image's truth, by image name, in the file's pixels.

    Attributes:
        found: boxes, scores, labels per image, best first.
        truth: boxes, labels, iscrowd (1: a difficult or crowd object, neither hit nor miss) per image.
        class_names: The detector's classes (label i is ``class_names[i]``; 0 is the background).
        seconds_per_image: Wall time of the predict steps (the detector on each batch; data loading left out) per
            image, the first batch left out where there are more (it pays for thread pools and allocations).
    """

    found: dict[str, Boxes]
    truth: dict[str, Boxes]
    class_names: list[str]
    seconds_per_image: float


def load_detector(
    checkpoint: str | os.PathLike, root: str | None = None, **options: Any
) -> tuple[Detector, pl.LightningDataModule]:
    """A checkpoint's detector and a DataModule of its data, its test images served to ``predict``.

    Args:
        checkpoint: A detector's ``.ckpt``, written by lit-models.
        root: Another folder of the same data (default: the one it was trained on; the embedded shapes are generated
            again where they are missing).
        options: The module's arguments to change for this test (``test_flip=True``, ``test_scales=[...]``).
    """
    saved = read_checkpoint(checkpoint)
    module_class = saved_class(saved, "model", checkpoint)
    if not issubclass(module_class, Detector):
        raise DataError(f"{checkpoint} holds a {module_class.__name__}, not a detector: give a detector's checkpoint.")
    overrides = {"predict_dir": None, "num_workers": 0, **({"root": root} if root is not None else {})}
    data_class, arguments = build_datamodule(checkpoint, saved, **overrides)
    if data_class is None:
        raise DataError(f"{checkpoint} names no DataModule to take its test images from.")
    return build_module(checkpoint, saved, **options), data_class(**arguments)


def detect_test_split(module: Detector, data: Any) -> SplitDetections:
    """``module``'s detections on every image of ``data``'s test split (a DataModule of :func:`load_detector`),
    and their truth.

    Raises:
        DataError: The data has no test split.
    """
    timer = StepTimer()
    with start_up_lines_hidden():
        trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, callbacks=[timer], enable_checkpointing=False,
                             enable_model_summary=False, enable_progress_bar=False)  # fmt: skip
        batches = trainer.predict(module, datamodule=data)  # the test images, else val's: checked below
    found = {
        record.name: {"boxes": record.boxes, "scores": record.scores, "labels": record.labels}
        for batch in batches
        for record in batch
    }
    listed = data.listed("test")
    if not listed:
        raise DataError(f"{data.root} has no annotated test split to measure mAP on: {data.missing_split('test')}")
    truth = {name: annotation_truth(targets) for _, targets, name in listed}
    if found.keys() != truth.keys():
        raise DataError(f"{data.root}: the images predicted are not those of the test list ({len(found)} against "
                        f"{len(truth)}).")  # fmt: skip
    return SplitDetections(found, truth, list(module.class_names or []), timer.seconds_per_image())


def annotation_truth(targets: dict[str, Any]) -> Boxes:
    """One image's annotation (the file's pixels) as mAP reads its truth."""
    return evaluation_targets([{key: torch.as_tensor(targets[key]) for key in TRUTH_KEYS}])[0]


def map_50(found: dict[str, Boxes], truth: dict[str, Boxes]) -> float:
    """mAP at IoU 0.5 (COCO's algorithm, as ``{stage}/map_50``) of the detections on the images of ``truth``."""
    metric = mean_average_precision(iou_thresholds=[0.5])
    names = list(truth)
    metric.update([found[name] for name in names], [truth[name] for name in names])
    return float(metric.compute()["map_50"])


class StepTimer(Callback):
    """The wall time and the number of images of each predict step."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, int]] = []
        self.started = 0.0

    def on_predict_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.started = time.perf_counter()

    def on_predict_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: list, *args: Any
    ) -> None:
        self.steps.append((time.perf_counter() - self.started, len(outputs)))

    def seconds_per_image(self) -> float:
        """Over the steps after the first, where there are more."""
        timed = self.steps[1:] or self.steps
        return sum(seconds for seconds, _ in timed) / max(sum(images for _, images in timed), 1)
