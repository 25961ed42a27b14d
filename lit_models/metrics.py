"""The metric builders of every family: what each logs, computed over the whole evaluation split."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
from torchmetrics.detection import MeanAveragePrecision
from torchmetrics.text import Perplexity


def accuracy_metrics(num_classes: int, prefix: str) -> MetricCollection:
    # Micro averaging: the fraction of images classified right, which is what papers report as top-1/top-5
    # (torchmetrics defaults to macro).
    metrics = {"acc_top1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes >= 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


def segmentation_metrics(num_classes: int, prefix: str, ignore_index: int) -> MetricCollection:
    # Both accumulate over the whole split (a confusion matrix), as VOC's evaluation does: mIoU is the mean over
    # classes of dataset-level IoU, not a mean of per-image scores. Classes absent from both the masks and the
    # predictions are left out of the mean.
    return MetricCollection(
        {
            "miou": MulticlassJaccardIndex(num_classes, ignore_index=ignore_index),
            "pixel_acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index),
        },
        prefix=prefix,
    )


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


def voc07_average_precision(class_metrics: bool = False) -> MeanAveragePrecision:
    """PASCAL VOC 2007's 11-point interpolated AP at IoU 0.5, as ``map_50``: COCO's algorithm with the precision
    envelope read at recalls 0, 0.1, ..., 1 and averaged (VOC's devkit does the same; matching: see Detector)."""
    recalls = [step / 10 for step in range(11)]
    return mean_average_precision(iou_thresholds=[0.5], rec_thresholds=recalls, class_metrics=class_metrics)


def gather_images(metric: MeanAveragePrecision) -> None:
    """Give every rank the per-image detections and truth of all ranks (any number of images per rank)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for name in metric._defaults:  # the per-image list states: boxes, scores, labels, crowds, areas
        local = [tensor.cpu() for tensor in getattr(metric, name)]
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        setattr(metric, name, [tensor.to(metric.device) for part in gathered for tensor in part])


class BitsPerToken(Perplexity):
    """log2 of the perplexity: the mean cross-entropy in bits, per character for a character-level model."""

    def compute(self) -> Tensor:
        return torch.log2(super().compute())


def sequence_metrics(task: str, num_classes: int, stage: str, ignore_index: int) -> MetricCollection:
    prefix = f"{stage}/"
    if task == "classification":
        return accuracy_metrics(num_classes, prefix)
    if task == "language_model":
        return MetricCollection(
            {
                "perplexity": Perplexity(ignore_index=ignore_index),
                "bits_per_token": BitsPerToken(ignore_index=ignore_index),
            },
            prefix=prefix,
        )
    return MetricCollection({"mse": MeanSquaredError()}, prefix=prefix)
