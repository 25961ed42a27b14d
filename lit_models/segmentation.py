"""Semantic segmentation: one training loop (Segmenter) and the FCN module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassJaccardIndex

from lit_models.callbacks import CLASS_COLOURS, SegmentationWriter
from lit_models.metrics import segmentation_metrics
from lit_models.nets.fcn import FCN as FCNNet
from lit_models.nets.fcn import Backbone
from lit_models.nets.resnet import ResNet as ResNetNet
from lit_models.nets.vgg import VGG as VGGNet
from lit_models.nets.weights import load_weights
from lit_models.pictures import Sample, displayable, image_statistics, overlay_mask, side_by_side
from lit_models.task import TaskModule

IGNORE_INDEX = 255  # void pixels (object borders in VOC, padding here): no loss, not counted by any metric


def split_segmentation_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    """Our DataModules yield dicts; plain (images, masks) tuples from anyone else's loader work too."""
    if isinstance(batch, Mapping):
        return batch["image"], batch.get("mask")
    return batch[0], batch[1] if len(batch) > 1 else None


class Segmenter(TaskModule):
    """The segmentation loop shared by every architecture.

    Per-pixel cross-entropy that ignores void (255); mIoU (``MulticlassJaccardIndex``) and pixel accuracy for
    val/test, logged as ``{stage}/miou``, ``{stage}/pixel_acc``, ``{stage}/loss``, and each class's IoU in test
    as ``test/iou/<class>``. ``predict`` returns each image's class-index mask, which the CLI's writer saves as
    palette PNGs and colour overlays. Subclasses only build ``net`` (N x 3 x H x W -> N x C x H x W scores).
    """

    monitor = "val/miou"
    prediction_writer = SegmentationWriter

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        loss_reduction: Literal["mean", "sum"] = "mean",
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """Wrap a network that maps images to per-pixel class scores of the same height and width.

        Args:
            net: The network.
            num_classes: Number of classes, background included (set from the data by the CLI).
            loss_reduction: "mean" over labelled pixels, or "sum" over pixels averaged over images (Caffe's
                ``normalize: false``, the FCN paper's, whose learning rates assume it).
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9). Paper recipes are in configs/.
            lr_scheduler: LR scheduler factory; default none.
        """
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        super().__init__(net, num_classes, optimizer, lr_scheduler)
        self.val_metrics = segmentation_metrics(num_classes, "val/", IGNORE_INDEX)
        self.test_metrics = segmentation_metrics(num_classes, "test/", IGNORE_INDEX)
        # NaN for a class absent from both masks and predictions: "not measured", rather than an IoU of 0.
        self.test_class_iou = MulticlassJaccardIndex(
            num_classes, average="none", ignore_index=IGNORE_INDEX, zero_division=float("nan")
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def loss(self, scores: Tensor, masks: Tensor) -> Tensor:
        if self.hparams.loss_reduction == "sum":
            return F.cross_entropy(scores, masks, ignore_index=IGNORE_INDEX, reduction="sum") / len(masks)
        if not (masks != IGNORE_INDEX).any():  # an all-void crop: nothing to learn, and mean would be NaN
            return scores.sum() * 0.0
        return F.cross_entropy(scores, masks, ignore_index=IGNORE_INDEX)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, masks = split_segmentation_batch(batch)
        loss = self.loss(self(images), masks)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(images))
        return loss

    def _evaluate(self, batch: Any, stage: str, metrics: MetricCollection) -> Tensor:
        images, masks = split_segmentation_batch(batch)
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
        self.test_class_iou.update(predictions, split_segmentation_batch(batch)[1])

    def on_test_epoch_end(self) -> None:
        names = self.class_names or [str(index) for index in range(self.num_classes)]
        for name, iou in zip(names, self.test_class_iou.compute(), strict=True):
            self.log(f"test/iou/{name}", iou)
        self.test_class_iou.reset()

    @torch.no_grad()
    def show(self, batch: Any, count: int) -> list[Sample]:
        """Each image twice, the true mask over it on the left and the predicted one on the right (one colour per
        class, as in the prediction overlays), with the image's pixel accuracy."""
        images, masks = split_segmentation_batch(batch)
        images = images[:count]
        predicted = self(images).argmax(dim=1).cpu()  # N x H x W
        sizes = batch["size"] if isinstance(batch, Mapping) else [tuple(images.shape[-2:])] * len(images)
        shown = []
        for index, image in enumerate(displayable(images, *image_statistics(self))):
            height, width = sizes[index]  # without the batch's padding
            image, guess = image[:, :height, :width], predicted[index, :height, :width]
            drawn = overlay_mask(image, guess, CLASS_COLOURS, self.num_classes)
            if masks is None:
                shown.append(Sample(image=drawn, caption="predicted"))
                continue
            truth = masks[index, :height, :width].cpu()
            labelled = truth != IGNORE_INDEX
            accuracy = (guess[labelled] == truth[labelled]).float().mean().item() if labelled.any() else float("nan")
            panels = side_by_side(overlay_mask(image, truth, CLASS_COLOURS, self.num_classes), drawn)
            shown.append(Sample(image=panels, caption=f"truth | predicted\npixel accuracy {accuracy:.2f}"))
        return shown

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        images, _ = split_segmentation_batch(batch)
        predictions = self(images).argmax(dim=1).to(torch.uint8).cpu()  # N x H x W (padded)
        if not isinstance(batch, Mapping):  # a plain tensor batch: no file names, so number the outputs
            names = [f"{batch_idx:06d}_{index:03d}" for index in range(len(images))]
            return {"mask": list(predictions), "path": [""] * len(images), "name": names}
        masks = [mask[:height, :width] for mask, (height, width) in zip(predictions, batch["size"], strict=True)]
        return {"mask": masks, "path": batch["path"], "name": batch["name"]}


class FCN(Segmenter):
    """Long, Shelhamer & Darrell 2015: FCN-32s/16s/8s on a convolutionalized VGG-16 (or a ResNet)."""

    def __init__(
        self,
        num_classes: int = 21,
        variant: Literal["32s", "16s", "8s"] = "8s",
        backbone: Backbone = "vgg16",
        width_mult: float = 1.0,
        hidden: int = 4096,
        dropout: float = 0.5,
        batch_norm: bool = False,
        backbone_weights: str | None = None,
        loss_reduction: Literal["mean", "sum"] = "mean",
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """FCN segmenter.

        Args:
            num_classes: Number of classes, background included (set from the data by the CLI).
            variant: "32s" (one 32x upsampling), "16s" (+ pool4 skip) or "8s" (+ pool3 skip).
            backbone: "vgg16" (the paper's) or "resnet18/34/50/101".
            width_mult: Multiplies the backbone's convolution widths (size knob for CPUs).
            hidden: Channels of fc6/fc7 (4096 in VGG-16; VGG backbone only).
            dropout: Dropout after fc6 and fc7 (VGG backbone only).
            batch_norm: VGG-16 with batch norm (torchvision's vgg16_bn), for training from scratch.
            backbone_weights: Local classifier weights to start from, as the paper starts from ImageNet: a
                torchvision vgg16/vgg16_bn/resnet state dict or a lit-models VGG/ResNet checkpoint. VGG's fc6/fc7
                are convolutionalized; its 1000-class layer, like ResNet's fc, is dropped.
            loss_reduction: "mean" over labelled pixels, or "sum" per image (the paper's unnormalised loss).
            bias_lr_mult: Learning-rate multiple for biases (2 in the reference solvers, Caffe's lr_mult).
            bias_weight_decay: False exempts biases from weight decay (the reference solvers' decay_mult 0).
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9). Paper recipes are in configs/.
            lr_scheduler: LR scheduler factory; default none.
        """
        net = FCNNet(num_classes, variant, backbone, width_mult, hidden, dropout, batch_norm)
        if backbone_weights:
            load_backbone(net, backbone, backbone_weights, width_mult, hidden, batch_norm)
        super().__init__(net, num_classes, loss_reduction, optimizer, lr_scheduler)
        self.bias_lr_mult = bias_lr_mult
        self.bias_weight_decay = bias_weight_decay


def load_backbone(net: FCNNet, backbone: str, path: str, width_mult: float, hidden: int, batch_norm: bool) -> None:
    """Load classifier weights into the FCN's encoder through the classifier they were saved from."""
    if backbone == "vgg16":
        vgg = VGGNet(depth=16, num_classes=1000, batch_norm=batch_norm, width_mult=width_mult, hidden=hidden)
        load_weights(vgg, path, num_classes=1000)
        net.convolutionalize(vgg)
        return
    resnet = ResNetNet(depth=int(backbone.removeprefix("resnet")), num_classes=1000, width_mult=width_mult)
    load_weights(resnet, path, num_classes=1000)
    state = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    net.encoder.net.load_state_dict(state)
