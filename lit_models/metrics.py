"""The metric builders of every family: what each logs, computed over the whole evaluation split."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import MeanSquaredError, Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchmetrics.detection import MeanAveragePrecision
from torchmetrics.text import Perplexity


def accuracy_metrics(num_classes: int, prefix: str) -> MetricCollection:
    # Micro averaging: the fraction of images classified right, which is what papers report as top-1/top-5
    # (torchmetrics defaults to macro).
    metrics = {"acc_top1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes >= 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


# Logged as {stage}/<name> in val and test; the headline (monitor) is miou.
SEGMENTATION_SCORES = ("pixel_acc", "mean_acc", "miou", "fwiou")


def segmentation_scores(confusion: Tensor) -> dict[str, Tensor]:
    """FCN's four metrics (Long, Shelhamer & Darrell 2015, §5) and each class's IU and accuracy from pixel counts.

    With n_ij the pixels of class i predicted as j and t_i = sum_j n_ij: ``pixel_acc`` sum_i n_ii / sum_i t_i,
    ``mean_acc`` (1/n_cl) sum_i n_ii / t_i, ``miou`` (1/n_cl) sum_i IU_i with IU_i = n_ii / (t_i + sum_j n_ji - n_ii),
    ``fwiou`` (sum_k t_k)^-1 sum_i t_i IU_i; ``iou`` and ``acc`` hold each class's IU_i and n_ii / t_i.

    n_cl counts the classes as the paper's reference code does (fcn.berkeleyvision.org, score.py: ``np.nanmean``):
    a class absent from the truth has no accuracy (NaN) and is left out of mean accuracy; a class neither true nor
    predicted has no IU (NaN) and is left out of mean IU, while one predicted but never true has IU 0 and counts.
    torchmetrics' MulticlassJaccardIndex agrees for ``average="macro"`` (mean IU) and ``"weighted"`` (frequency
    weighted IU), but gives 0 rather than NaN per class with ``average="none"``; its macro MulticlassAccuracy counts a
    class predicted but never true as accuracy 0, where the reference code leaves it out.

    Args:
        confusion: ``... x K x K`` pixel counts, rows true class, columns predicted (any leading dimensions: one
            matrix each, e.g. one per image).
    """
    # float64 on the CPU: counts over a whole split pass float32's 2^24 exact integers (and MPS has no float64).
    confusion = confusion.detach().cpu().double()
    hits = confusion.diagonal(dim1=-2, dim2=-1)  # n_ii
    truth = confusion.sum(dim=-1)  # t_i
    predicted = confusion.sum(dim=-2)  # sum_j n_ji
    class_acc = hits / truth  # NaN where t_i = 0
    class_iou = hits / (truth + predicted - hits)  # NaN where class i is neither true nor predicted
    total = truth.sum(dim=-1)
    scores = {
        "pixel_acc": hits.sum(dim=-1) / total,
        "mean_acc": class_acc.nanmean(dim=-1),
        "miou": class_iou.nanmean(dim=-1),
        # IU_i is defined wherever t_i > 0; classes with t_i = 0 weigh nothing.
        "fwiou": (truth * class_iou.nan_to_num()).sum(dim=-1) / total,
        "iou": class_iou,
        "acc": class_acc,
    }
    return {name: value.float() for name, value in scores.items()}


class SegmentationScores(MulticlassConfusionMatrix):
    """One K x K confusion matrix of pixel counts accumulated over the whole split (void pixels, ``ignore_index``,
    left out), from which ``compute`` gives all of :func:`segmentation_scores`: dataset-level, as VOC's evaluation
    and the FCN paper's are, not a mean of per-image scores. In DDP torchmetrics sums the matrix over the ranks (its
    state's ``dist_reduce_fx="sum"``) before computing, so every rank gets the whole split's values."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        super().__init__(num_classes, ignore_index=ignore_index)

    def compute(self) -> dict[str, Tensor]:
        return segmentation_scores(super().compute())


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


def gather_images(metric: Metric) -> None:
    """Give every rank the per-image detections and truth of all ranks (any number of images per rank), in rank
    order: for a metric whose states are all lists of per-image tensors (MeanAveragePrecision, VOCAveragePrecision)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for name in metric._defaults:  # the per-image list states (boxes, scores, labels, crowds, areas)
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
