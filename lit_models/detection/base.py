"""The detection loop shared by every detector: summed multi-task loss, mAP, and predictions in image pixels."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision

from lit_models.datamodules.spec import DataSpec
from lit_models.drawing import DRAW_SCORE, displayable, draw_boxes, side_by_side
from lit_models.metrics import evaluation_targets, gather_images, mean_average_precision, voc07_average_precision
from lit_models.pictures import Sample
from lit_models.predictions import BoxPrediction
from lit_models.task import TaskModule, input_names
from lit_models.writers import DetectionWriter

log = logging.getLogger(__name__)

# Logged from MeanAveragePrecision's result; the rest (per-size breakdowns, per-class tensors) stays out of the logs.
LOGGED = ("map_50", "map", "map_75", "mar_100")


class Detector(TaskModule, ABC):
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
    ``proposals`` (R x 4 per image, from ``DetectionDataModule(proposals=...)``). An architecture's module
    defines ``build_net``, to which the rest of the constructor's arguments go.

    Args:
        num_classes: Classes including background (set from the data by the CLI).
        weights_backbone: Classifier weights for the backbone: torchvision's by name (IMAGENET1K_V1, DEFAULT), or a
            local torchvision state dict or lit-models checkpoint; a VGG-16 trunk with a 4096-wide head also
            initialises fc6/fc7 from them, as the papers do.
        voc07_ap: Also log PASCAL VOC 2007's 11-point interpolated AP at IoU 0.5, the measure of the R-CNN,
            SPPNet, Fast/Faster R-CNN and YOLO tables, as ``{stage}/map_50_voc07`` (and per class in test,
            ``test/ap_50_voc07/<class>``). It is COCO's evaluation at recalls 0, 0.1, ..., 1 (the precision
            envelope's value at each, averaged), with difficult objects ignored; COCO's matching gives a detection
            the best box not yet matched, where VOC's devkit counts it false when its best box is taken.
    """

    monitor = "val/map_50"
    prediction_writer = DetectionWriter
    target = "target"
    uses_proposals = False
    # The lowest score drawn on pictures: the training samples and ``predict``'s images (``--draw_score``).
    draw_score = DRAW_SCORE
    graph_description = "images -> the trunk's feature map (proposals, RoI pooling, heads and NMS stay in PyTorch)"

    def __init__(
        self,
        num_classes: int = 21,
        weights_backbone: str | None = None,
        voc07_ap: bool = False,
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        **net_args: Any,
    ) -> None:
        """Build the architecture's net, with ``loss`` and ``predict`` as above."""
        super().__init__(num_classes, bias_lr_mult, bias_weight_decay, optimizer, lr_scheduler)
        self.net = self.build_net(num_classes, **net_args)
        if weights_backbone:
            self.net.load_backbone_weights(weights_backbone)
        self.val_map = mean_average_precision()
        self.test_map = mean_average_precision()
        # VOC's per-class table: AP at IoU 0.5 only (class_metrics reports per class at the given thresholds).
        self.test_class_ap = mean_average_precision(iou_thresholds=[0.5], class_metrics=True)
        stages = ("val", "test") if voc07_ap else ()
        self.voc07 = nn.ModuleDict({stage: voc07_average_precision(class_metrics=stage == "test") for stage in stages})

    @classmethod
    def data_arguments(cls, model_args: dict[str, Any], data_args: dict[str, Any]) -> dict[str, Any]:
        """Warns about region proposals computed for a detector that does not read them. A proposal detector
        does not turn them on itself: selective search over a whole dataset takes hours, and ``check_data``
        names the argument."""
        if not cls.uses_proposals and data_args.get("proposals"):
            log.warning(
                "%s does not read region proposals: data.proposals=%s computes them for nothing; set it to null.",
                cls.__name__,
                data_args["proposals"],
            )
        return super().data_arguments(model_args, data_args)

    def check_data(self, spec: DataSpec) -> None:
        super().check_data(spec)
        if self.uses_proposals and not spec.proposals:
            raise ValueError(
                f"{type(self).__name__} classifies region proposals, but data.proposals is null: set "
                "--data.proposals fast (selective search's fast mode, the paper's) or quality. They are computed once, "
                "by prepare_data, and cached beside the data (data.proposal_dir)."
            )

    @abstractmethod
    def build_net(self, num_classes: int, **net_args: Any) -> nn.Module:
        """The architecture's network, from the constructor's ``**net_args`` (each module defines it)."""

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
        images, _ = self.split(batch)
        return self(images, self.proposals(batch))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, targets = self.split(batch)
        extra = [] if not self.uses_proposals else [self.proposals(batch)]
        parts = self.net.loss(images, targets, *extra)
        loss = torch.stack(list(parts.values())).sum()
        size = len(images)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=size)
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items()}, sync_dist=True, batch_size=size)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        _, targets = self.split(batch)
        detections, truth = self.detect(batch), evaluation_targets(targets)
        self.val_map.update(detections, truth)
        if "val" in self.voc07:
            self.voc07["val"].update(detections, truth)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        _, targets = self.split(batch)
        detections, truth = self.detect(batch), evaluation_targets(targets)
        self.test_map.update(detections, truth)
        self.test_class_ap.update(detections, truth)
        if "test" in self.voc07:
            self.voc07["test"].update(detections, truth)

    def log_map(self, stage: str, metric: MeanAveragePrecision) -> None:
        gather_images(metric)  # every rank then computes the same, global values
        result = metric.compute()
        self.log_dict({f"{stage}/{key}": result[key] for key in LOGGED}, prog_bar=True)
        metric.reset()
        if stage in self.voc07:
            gather_images(self.voc07[stage])
            voc07 = self.voc07[stage].compute()
            self.log(f"{stage}/map_50_voc07", voc07["map_50"], prog_bar=True)
            if stage == "test":
                classes = voc07["classes"].tolist()
                self.log_per_class("test/ap_50_voc07", voc07["map_per_class"].reshape(-1).tolist(), classes)
            self.voc07[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self.log_map("val", self.val_map)

    def on_test_epoch_end(self) -> None:
        self.log_map("test", self.test_map)
        gather_images(self.test_class_ap)
        result = self.test_class_ap.compute()
        # -1 marks a class with neither ground truth nor detections in the split: not measured.
        self.log_per_class("test/ap_50", result["map_per_class"].reshape(-1).tolist(), result["classes"].tolist())
        self.test_class_ap.reset()

    @torch.no_grad()
    def show(self, batch: Any, count: int, most: int = 10) -> list[Sample]:
        """Each image twice: the true boxes on the left, the detections scoring at least ``draw_score`` on the right
        (class name and score, one colour per class).

        Args:
            batch: An evaluation batch.
            count: Images wanted.
            most: Most detections drawn per image, the highest scoring.
        """
        images, targets = self.split(batch)
        images = images[:count]
        proposals = self.proposals(batch)
        found = self(images, proposals[:count] if proposals is not None else None)
        names = self.display_names
        shown = []
        for index, (picture, detections) in enumerate(zip(displayable(images, *self.image_statistics()), found,
                                                          strict=True)):  # fmt: skip
            drawn = draw_boxes(picture, detections["boxes"], detections["labels"], names, detections["scores"],
                               self.draw_score, most, width=1)  # fmt: skip
            kept = int((detections["scores"][:most] >= self.draw_score).sum())
            if targets is None:
                shown.append(Sample(image=drawn, caption=f"{kept} detection(s) >= {self.draw_score}"))
                continue
            truth = draw_boxes(picture, targets[index]["boxes"], targets[index]["labels"], names, width=1)
            caption = f"truth | predicted (score >= {self.draw_score})"
            shown.append(Sample(image=side_by_side(truth, drawn), caption=caption))
        return shown

    def predict_step(self, batch: Any, batch_idx: int) -> list[BoxPrediction]:
        images, _ = self.split(batch)
        meta = batch if isinstance(batch, Mapping) else {}
        detections = self.detect(batch)
        originals = meta.get("orig_size") or [tuple(image.shape[-2:]) for image in images]
        paths, names = input_names(batch, len(images), batch_idx)
        records = []
        for image, found, (height, width), path, name in zip(images, detections, originals, paths, names,
                                                             strict=True):  # fmt: skip
            # Back from the model's input (resized by data.image_size) to the pixels of the image file.
            scale_x, scale_y = width / image.shape[-1], height / image.shape[-2]
            labels = found["labels"].cpu()
            records.append(BoxPrediction(
                path=path, name=name, boxes=found["boxes"].cpu() * torch.tensor([scale_x, scale_y, scale_x, scale_y]),
                scores=found["scores"].cpu(), labels=labels, names=[self.display_names[i] for i in labels.tolist()],
            ))  # fmt: skip
        return records

    def export_graph(self) -> tuple[nn.Module, Tensor, str]:
        """The region detectors' trunk (or backbone) on images of the data's size: the rest is data-dependent."""
        _, example, what = super().export_graph()
        trunk = getattr(self.net, "trunk", None)
        return (self.net.backbone if trunk is None else trunk), example, what
