"""The detection loop shared by every detector: summed multi-task loss, mAP, and predictions in image pixels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision

from lit_models.callbacks import DetectionWriter
from lit_models.task import TaskModule

# Logged from MeanAveragePrecision's result; the rest (per-size breakdowns, per-class tensors) stays out of the logs.
LOGGED = ("map_50", "map", "map_75", "mar_100")


def split_detection_batch(batch: Any) -> tuple[Tensor | list[Tensor], list[dict] | None]:
    """Our DataModule yields dicts; (images, targets) tuples from torchvision-style loaders work too."""
    if isinstance(batch, Mapping):
        return batch["image"], batch.get("target")
    return batch[0], batch[1] if len(batch) > 1 else None


def evaluation_targets(targets: list[dict]) -> list[dict[str, Tensor]]:
    """Ground truth for mAP: VOC's ``difficult`` objects are ignored like COCO's crowds (neither hit nor miss)."""
    evaluated = []
    for target in targets:
        ignored = target["iscrowd"].bool() if "iscrowd" in target else torch.zeros_like(target["labels"], dtype=bool)
        if "difficult" in target:
            ignored = ignored | target["difficult"].bool()
        evaluated.append({"boxes": target["boxes"], "labels": target["labels"], "iscrowd": ignored.long()})
    return evaluated


def mean_average_precision(**options: Any) -> MeanAveragePrecision:
    # faster_coco_eval: pycocotools' algorithm in C++, and correct for non-default max_detection_thresholds.
    # torchmetrics' own DDP sync gathers its per-image lists element by element, which needs the same number of
    # images on every rank; our evaluation shards are uneven (no image counted twice), so gather_images does it.
    return MeanAveragePrecision(
        box_format="xyxy", iou_type="bbox", backend="faster_coco_eval", sync_on_compute=False, **options
    )


def gather_images(metric: MeanAveragePrecision) -> None:
    """Give every rank the per-image detections and truth of all ranks (any number of images per rank)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for name in metric._defaults:  # the per-image list states: boxes, scores, labels, crowds, areas
        local = [tensor.cpu() for tensor in getattr(metric, name)]
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        setattr(metric, name, [tensor.to(metric.device) for part in gathered for tensor in part])


class Detector(TaskModule):
    """The detection loop shared by every architecture.

    The net exposes ``loss(images, targets) -> dict`` (the parts of its multi-task loss, summed here and each
    logged as ``train/<part>``) and ``predict(images) -> list[dict]`` (``boxes`` xyxy in input pixels,
    ``scores``, ``labels`` 1..K). Validation and test compute mAP with COCO's algorithm over the whole split:
    ``{stage}/map_50`` (IoU 0.5, the PASCAL VOC measure, the headline), ``{stage}/map`` (COCO's mean over IoU
    0.5:0.95), ``map_75`` and ``mar_100``; test adds each class's AP at IoU 0.5 as ``test/ap_50/<class>``.
    ``predict`` returns detections in the pixels of the original image files, which the CLI's writer draws and
    saves as JSON.

    Detectors that classify precomputed region proposals (R-CNN, SPPNet, Fast R-CNN) set ``uses_proposals``:
    their nets take ``loss(images, targets, proposals)`` and ``predict(images, proposals)``, with the batch's
    ``proposals`` (R x 4 per image, from ``DetectionDataModule(proposals=...)``).
    """

    monitor = "val/map_50"
    prediction_writer = DetectionWriter
    uses_proposals = False

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """Wrap a detection network.

        Args:
            net: The network, with ``loss`` and ``predict`` as above.
            num_classes: Number of classes, background included (set from the data by the CLI).
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9). Paper recipes are in configs/.
            lr_scheduler: LR scheduler factory; default none.
        """
        super().__init__(net, num_classes, optimizer, lr_scheduler)
        self.val_map = mean_average_precision()
        self.test_map = mean_average_precision()
        # VOC's per-class table: AP at IoU 0.5 only (class_metrics reports per class at the given thresholds).
        self.test_class_ap = mean_average_precision(iou_thresholds=[0.5], class_metrics=True)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data = getattr(self.trainer, "datamodule", None)
        if self.uses_proposals and data is not None and not getattr(data.hparams, "proposals", None):
            raise ValueError(
                f"{type(self).__name__} classifies region proposals, but data.proposals is null: set it to 'fast' "
                "or 'quality' (selective search, computed once and cached by prepare_data)."
            )

    def forward(self, images: Tensor | list[Tensor], proposals: list[Tensor] | None = None) -> list[dict[str, Tensor]]:
        return self.net.predict(images, proposals) if self.uses_proposals else self.net.predict(images)

    def proposals(self, batch: Any) -> list[Tensor] | None:
        """The batch's region proposals, for the detectors that use them (None for the others)."""
        if not self.uses_proposals:
            return None
        found = batch.get("proposals") if isinstance(batch, Mapping) else (batch[2] if len(batch) > 2 else None)
        if found is None:
            raise ValueError(
                f"{type(self).__name__} needs region proposals in every batch (the 'proposals' key): use "
                "DetectionDataModule with data.proposals set to 'fast' or 'quality'."
            )
        return found

    def detect(self, batch: Any) -> list[dict[str, Tensor]]:
        images, _ = split_detection_batch(batch)
        return self(images, self.proposals(batch))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, targets = split_detection_batch(batch)
        extra = [] if not self.uses_proposals else [self.proposals(batch)]
        parts = self.net.loss(images, targets, *extra)
        loss = torch.stack(list(parts.values())).sum()
        size = len(images)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=size)
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items()}, sync_dist=True, batch_size=size)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        _, targets = split_detection_batch(batch)
        self.val_map.update(self.detect(batch), evaluation_targets(targets))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        _, targets = split_detection_batch(batch)
        detections, truth = self.detect(batch), evaluation_targets(targets)
        self.test_map.update(detections, truth)
        self.test_class_ap.update(detections, truth)

    def log_map(self, stage: str, metric: MeanAveragePrecision) -> None:
        gather_images(metric)  # every rank then computes the same, global values
        result = metric.compute()
        self.log_dict({f"{stage}/{key}": result[key] for key in LOGGED}, prog_bar=True)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self.log_map("val", self.val_map)

    def on_test_epoch_end(self) -> None:
        self.log_map("test", self.test_map)
        gather_images(self.test_class_ap)
        result = self.test_class_ap.compute()
        names = self.class_names or [str(index) for index in range(self.num_classes)]
        # -1 marks a class with neither ground truth nor detections in the split: not measured.
        for label, ap in zip(result["classes"].tolist(), result["map_per_class"].reshape(-1).tolist(), strict=True):
            self.log(f"test/ap_50/{names[label]}", ap)
        self.test_class_ap.reset()

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        images, _ = split_detection_batch(batch)
        meta = batch if isinstance(batch, Mapping) else {}
        detections = self.detect(batch)
        originals = meta.get("orig_size") or [tuple(image.shape[-2:]) for image in images]
        boxes = []
        for image, found, (height, width) in zip(images, detections, originals, strict=True):
            # Back from the model's input (resized by data.image_size) to the pixels of the image file.
            scale_x, scale_y = width / image.shape[-1], height / image.shape[-2]
            boxes.append(found["boxes"].cpu() * torch.tensor([scale_x, scale_y, scale_x, scale_y]))
        return {
            "boxes": boxes,
            "scores": [found["scores"].cpu() for found in detections],
            "labels": [found["labels"].cpu() for found in detections],
            "path": meta.get("path") or [""] * len(images),
            "name": meta.get("name") or [str(batch_idx * len(images) + i) for i in range(len(images))],
        }
