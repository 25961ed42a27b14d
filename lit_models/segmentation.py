"""Semantic segmentation: one training loop (Segmenter) and the FCN module."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_confusion_matrix

from lit_models.drawing import displayable, overlay_mask, side_by_side
from lit_models.metrics import SEGMENTATION_SCORES, SegmentationScores, segmentation_scores
from lit_models.nets.fcn import FCN as FCNNet
from lit_models.nets.fcn import SKIP_LAYERS, STRIDES
from lit_models.pictures import Picture, Sample, sample_grid
from lit_models.predictions import MaskPrediction
from lit_models.stages import InitError, ParameterMapping, SourceModel
from lit_models.task import TaskModule, input_names
from lit_models.writers import SegmentationWriter

IGNORE_INDEX = 255  # void pixels (object borders in VOC, padding here): no loss, not counted by any metric


def image_sizes(batch: Any, images: Tensor) -> list[tuple[int, int]]:
    """Each image's own height and width: a batch of the DataModule pads its images to one size."""
    return batch["size"] if isinstance(batch, Mapping) else [tuple(images.shape[-2:])] * len(images)


class Segmenter(TaskModule, ABC):
    """The segmentation loop shared by every architecture.

    Per-pixel cross-entropy that ignores void (255). Val and test log ``{stage}/loss`` and the FCN paper's four
    metrics (§5) from one confusion matrix over the split (:class:`lit_models.metrics.SegmentationScores`):
    ``{stage}/pixel_acc``, ``{stage}/mean_acc``, ``{stage}/miou``, ``{stage}/fwiou``; test adds each class's IU and
    accuracy as ``test/iou/<class>`` and ``test/acc/<class>``, and keeps the ``lowest_iou_count`` test images of
    lowest IoU for the picture ``test/lowest_iou``. ``predict`` returns each image's class-index mask, which the
    CLI's writer saves as palette PNGs and colour overlays. An architecture's module defines ``build_net``
    (N x 3 x H x W -> N x C x H x W scores), to which the rest of the constructor's arguments go.

    Args:
        num_classes: Number of classes, background included (set from the data by the CLI).
        loss_reduction: "mean" over labelled pixels, or "sum" over pixels averaged over images (Caffe's
            ``normalize: false``, the FCN paper's, whose learning rates assume it).
        weights_backbone: Classifier weights for the backbone, as the paper starts from ImageNet: torchvision's by
            name (IMAGENET1K_V1, DEFAULT), or a local vgg16/vgg16_bn/resnet state dict or lit-models VGG/ResNet
            checkpoint.
    """

    monitor = "val/miou"
    prediction_writer = SegmentationWriter
    graph_description = "images N x 3 x H x W -> per-pixel scores N x K x H x W"
    target = "mask"
    lowest_iou_count = 8  # test images of lowest IoU drawn at the end of test

    def __init__(
        self,
        num_classes: int = 21,
        loss_reduction: Literal["mean", "sum"] = "mean",
        weights_backbone: str | None = None,
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        norm_weight_decay: float | None = None,
        **net_args: Any,
    ) -> None:
        """Build the architecture's net, which maps images to per-pixel class scores of the same height and width."""
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        super().__init__(num_classes, bias_lr_mult, bias_weight_decay, optimizer, lr_scheduler, norm_weight_decay)
        self.net = self.build_net(num_classes, **net_args)
        if weights_backbone:
            self.net.load_backbone_weights(weights_backbone)
        self.val_metrics = SegmentationScores(num_classes, IGNORE_INDEX)
        self.test_metrics = SegmentationScores(num_classes, IGNORE_INDEX)
        self.lowest_iou: list[tuple[float, Sample]] = []  # ascending IoU, at most lowest_iou_count

    @abstractmethod
    def build_net(self, num_classes: int, **net_args: Any) -> nn.Module:
        """The architecture's network, from the constructor's ``**net_args`` (each module defines it)."""

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def loss(self, scores: Tensor, masks: Tensor) -> Tensor:
        if self.hparams.loss_reduction == "sum":
            return F.cross_entropy(scores, masks, ignore_index=IGNORE_INDEX, reduction="sum") / len(masks)
        if not (masks != IGNORE_INDEX).any():  # an all-void crop: nothing to learn, and mean would be NaN
            return scores.sum() * 0.0
        return F.cross_entropy(scores, masks, ignore_index=IGNORE_INDEX)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, masks = self.split(batch)
        loss = self.loss(self(images), masks)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(images))
        return loss

    def _evaluate(self, batch: Any, stage: str, metric: SegmentationScores) -> Tensor:
        images, masks = self.split(batch)
        scores = self(images)
        predictions = scores.argmax(dim=1)
        metric.update(predictions, masks)
        self.log_evaluation_loss(stage, self.loss(scores, masks), len(images))
        return predictions

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        predictions = self._evaluate(batch, "test", self.test_metrics)
        self.keep_lowest_iou(batch, batch_idx, predictions)

    def log_scores(self, stage: str, metric: SegmentationScores) -> dict[str, Tensor]:
        """Log the split's four metrics as ``{stage}/<name>``, then start a new split; returns every score."""
        # Logged as values once the split is done: Lightning logs one value per metric object, and these four come
        # from one matrix, which compute() has already summed over the DDP ranks.
        scores = metric.compute()
        metric.reset()
        for name in SEGMENTATION_SCORES:
            self.log(f"{stage}/{name}", scores[name], prog_bar=name in ("miou", "pixel_acc"))
        return scores

    def on_validation_epoch_end(self) -> None:
        self.log_scores("val", self.val_metrics)

    def on_test_epoch_start(self) -> None:
        # Kept past the epoch's end: TrainingPictures draws them after it (summary_pictures).
        self.lowest_iou = []

    def on_test_epoch_end(self) -> None:
        scores = self.log_scores("test", self.test_metrics)
        self.log_per_class("test/iou", scores["iou"].tolist())
        self.log_per_class("test/acc", scores["acc"].tolist())

    def mask_panels(self, image: Tensor, truth: Tensor, predicted: Tensor) -> Tensor:
        """The true mask over the image on the left, the predicted one on the right, one colour per class as in the
        prediction overlays (3 x H x W uint8 image, H x W masks)."""
        return side_by_side(*(overlay_mask(image, mask, self.num_classes) for mask in (truth, predicted)))

    @torch.no_grad()
    def keep_lowest_iou(self, batch: Any, batch_idx: int, predictions: Tensor) -> None:
        """Keep the ``lowest_iou_count`` test images of lowest IoU seen so far, drawn as ``show`` draws them.

        An image's IoU is the split's mean IU formula applied to that image alone: the mean over the classes in its
        truth or its prediction of their IU (so a class predicted but absent counts 0), void pixels left out. An
        image without labelled pixels has none and is not kept.
        """
        images, masks = self.split(batch)
        per_image = [
            multiclass_confusion_matrix(guess, truth, self.num_classes, ignore_index=IGNORE_INDEX, validate_args=False)
            for guess, truth in zip(predictions, masks, strict=True)
        ]
        ious = segmentation_scores(torch.stack(per_image))["miou"].tolist()  # N x K x K counts -> N
        names = input_names(batch, len(images), batch_idx)[1]
        sizes = image_sizes(batch, images)
        for iou, index in sorted((iou, index) for index, iou in enumerate(ious) if not math.isnan(iou)):
            if len(self.lowest_iou) == self.lowest_iou_count and iou >= self.lowest_iou[-1][0]:
                break
            height, width = sizes[index]  # without the batch's padding
            image = displayable(images[index : index + 1], *self.image_statistics())[0, :, :height, :width]
            truth, guess = masks[index, :height, :width].cpu(), predictions[index, :height, :width].cpu()
            caption = f"{names[index]}\ntruth | predicted, IoU {iou:.2f}"
            self.lowest_iou.append((iou, Sample(image=self.mask_panels(image, truth, guess), caption=caption)))
            self.lowest_iou.sort(key=lambda kept: kept[0])
            del self.lowest_iou[self.lowest_iou_count :]

    def summary_pictures(self, stage: str) -> dict[str, Picture]:
        """The test images of lowest IoU over all ranks, lowest first, as ``test/lowest_iou`` (on rank 0)."""
        if stage != "test":
            return {}
        kept = self.lowest_iou
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            every_rank: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(every_rank, kept)
            kept = sorted((item for part in every_rank for item in part), key=lambda item: item[0])
        if self.global_rank != 0 or not kept:
            return {}
        return {"test/lowest_iou": sample_grid([sample for _, sample in kept[: self.lowest_iou_count]])}

    @torch.no_grad()
    def show(self, batch: Any, count: int) -> list[Sample]:
        """Each image twice, the true mask over it on the left and the predicted one on the right (one colour per
        class, as in the prediction overlays), with the image's pixel accuracy."""
        images, masks = self.split(batch)
        images = images[:count]
        predicted = self(images).argmax(dim=1).cpu()  # N x H x W
        sizes = image_sizes(batch, images)
        shown = []
        for index, image in enumerate(displayable(images, *self.image_statistics())):
            height, width = sizes[index]  # without the batch's padding
            image, guess = image[:, :height, :width], predicted[index, :height, :width]
            if masks is None:
                shown.append(Sample(image=overlay_mask(image, guess, self.num_classes), caption="predicted"))
                continue
            truth = masks[index, :height, :width].cpu()
            labelled = truth != IGNORE_INDEX
            accuracy = (guess[labelled] == truth[labelled]).float().mean().item() if labelled.any() else float("nan")
            shown.append(Sample(image=self.mask_panels(image, truth, guess),
                                caption=f"truth | predicted\npixel accuracy {accuracy:.2f}"))  # fmt: skip
        return shown

    def predict_step(self, batch: Any, batch_idx: int) -> list[MaskPrediction]:
        images, _ = self.split(batch)
        predictions = self(images).argmax(dim=1).to(torch.uint8).cpu()  # N x H x W (padded)
        sizes = image_sizes(batch, images)
        paths, names = input_names(batch, len(images), batch_idx)
        if not isinstance(batch, Mapping):  # a plain tensor batch: no file names, so number the outputs
            names = [f"{batch_idx:06d}_{index:03d}" for index in range(len(images))]
        return [
            MaskPrediction(path=path, name=name, mask=mask[:height, :width])
            for mask, (height, width), path, name in zip(predictions, sizes, paths, names, strict=True)
        ]


class FCN(Segmenter):
    """Long, Shelhamer & Darrell 2015: FCN-32s/16s/8s on a convolutionalized VGG-16 (or a ResNet).

    Staged training (§4.2) initialises each finer variant from the trained coarser one (``init_from``, a chain
    recipe such as segmentation/fcn_staged_shapes): everything the coarser net has carries over, its final
    upsampling excepted (its stride changes), and the skip score layers start at zero. With the ResNet backbone's
    upsamplers, whose 2x kernel composed with the 16x one is exactly the 32x one, the finer net then computes the
    coarser net's scores exactly until its first step; the VGG reference nets' crop offsets make that approximate.
    """

    def build_net(self, num_classes: int, **net_args: Any) -> FCNNet:
        """``net_args``: :class:`lit_models.nets.fcn.FCN`'s arguments."""
        return FCNNet(num_classes, **net_args)

    def init_mapping(self, source: SourceModel) -> ParameterMapping:
        """From an FCN checkpoint of the same or a coarser variant on the same backbone (staged training)."""
        if source.model != "FCN":
            raise InitError(
                f"FCN initialises from an FCN checkpoint of the same or a coarser variant; "
                f"{source.describe()} is not one (classifier weights go to --model.weights_backbone)."
            )
        mine, theirs = self.net.variant, source.hparams.get("variant", "8s")
        if STRIDES[theirs] < STRIDES[mine] or source.hparams.get("backbone", "vgg16") != self.net.backbone:
            raise InitError(f"FCN-{mine} ({self.net.backbone}) initialises from FCN-{mine} or a coarser variant on the "
                            f"same backbone; {source.describe()} is FCN-{theirs} on "
                            f"{source.hparams.get('backbone', 'vgg16')}.")  # fmt: skip
        if theirs == mine:
            return ParameterMapping()
        added = [f"net.{layer}." for layer in SKIP_LAYERS[mine] if layer not in SKIP_LAYERS[theirs]]
        return ParameterMapping(sources={"net.upscore.": None}, new=("net.upscore.", *added))
