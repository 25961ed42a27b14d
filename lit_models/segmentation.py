"""Semantic segmentation: one training loop (Segmenter) and the FCN module."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassJaccardIndex

from lit_models.drawing import displayable, overlay_mask, side_by_side
from lit_models.metrics import segmentation_metrics
from lit_models.nets.fcn import FCN as FCNNet
from lit_models.nets.fcn import SKIP_LAYERS, STRIDES
from lit_models.pictures import Sample
from lit_models.predictions import MaskPrediction
from lit_models.stages import InitError, ParameterMapping, SourceModel
from lit_models.task import TaskModule, input_names
from lit_models.writers import SegmentationWriter

IGNORE_INDEX = 255  # void pixels (object borders in VOC, padding here): no loss, not counted by any metric


class Segmenter(TaskModule, ABC):
    """The segmentation loop shared by every architecture.

    Per-pixel cross-entropy that ignores void (255); mIoU (``MulticlassJaccardIndex``) and pixel accuracy for
    val/test, logged as ``{stage}/miou``, ``{stage}/pixel_acc``, ``{stage}/loss``, and each class's IoU in test
    as ``test/iou/<class>``. ``predict`` returns each image's class-index mask, which the CLI's writer saves as
    palette PNGs and colour overlays. An architecture's module defines ``build_net`` (N x 3 x H x W -> N x C x H x W
    scores), to which the rest of the constructor's arguments go.

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

    def __init__(
        self,
        num_classes: int = 21,
        loss_reduction: Literal["mean", "sum"] = "mean",
        weights_backbone: str | None = None,
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        **net_args: Any,
    ) -> None:
        """Build the architecture's net, which maps images to per-pixel class scores of the same height and width."""
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        super().__init__(num_classes, bias_lr_mult, bias_weight_decay, optimizer, lr_scheduler)
        self.net = self.build_net(num_classes, **net_args)
        if weights_backbone:
            self.net.load_backbone_weights(weights_backbone)
        self.val_metrics = segmentation_metrics(num_classes, "val/", IGNORE_INDEX)
        self.test_metrics = segmentation_metrics(num_classes, "test/", IGNORE_INDEX)
        # NaN for a class absent from both masks and predictions: "not measured", rather than an IoU of 0.
        self.test_class_iou = MulticlassJaccardIndex(
            num_classes, average="none", ignore_index=IGNORE_INDEX, zero_division=float("nan")
        )

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

    def _evaluate(self, batch: Any, stage: str, metrics: MetricCollection) -> Tensor:
        images, masks = self.split(batch)
        scores = self(images)
        predictions = scores.argmax(dim=1)
        metrics.update(predictions, masks)
        self.log(f"{stage}/loss", self.loss(scores, masks), prog_bar=True, sync_dist=True, batch_size=len(images))
        self.log_dict(metrics, prog_bar=True, batch_size=len(images))
        return predictions

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        predictions = self._evaluate(batch, "test", self.test_metrics)
        self.test_class_iou.update(predictions, self.split(batch)[1])

    def on_test_epoch_end(self) -> None:
        self.log_per_class("test/iou", self.test_class_iou.compute())
        self.test_class_iou.reset()

    @torch.no_grad()
    def show(self, batch: Any, count: int) -> list[Sample]:
        """Each image twice, the true mask over it on the left and the predicted one on the right (one colour per
        class, as in the prediction overlays), with the image's pixel accuracy."""
        images, masks = self.split(batch)
        images = images[:count]
        predicted = self(images).argmax(dim=1).cpu()  # N x H x W
        sizes = batch["size"] if isinstance(batch, Mapping) else [tuple(images.shape[-2:])] * len(images)
        shown = []
        for index, image in enumerate(displayable(images, *self.image_statistics())):
            height, width = sizes[index]  # without the batch's padding
            image, guess = image[:, :height, :width], predicted[index, :height, :width]
            drawn = overlay_mask(image, guess, self.num_classes)
            if masks is None:
                shown.append(Sample(image=drawn, caption="predicted"))
                continue
            truth = masks[index, :height, :width].cpu()
            labelled = truth != IGNORE_INDEX
            accuracy = (guess[labelled] == truth[labelled]).float().mean().item() if labelled.any() else float("nan")
            panels = side_by_side(overlay_mask(image, truth, self.num_classes), drawn)
            shown.append(Sample(image=panels, caption=f"truth | predicted\npixel accuracy {accuracy:.2f}"))
        return shown

    def predict_step(self, batch: Any, batch_idx: int) -> list[MaskPrediction]:
        images, _ = self.split(batch)
        predictions = self(images).argmax(dim=1).to(torch.uint8).cpu()  # N x H x W (padded)
        sizes = batch["size"] if isinstance(batch, Mapping) else [tuple(images.shape[-2:])] * len(images)
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
