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
from lit_models.detection.error_analysis import ErrorAnalysis
from lit_models.detection.test_time import FlipMerge, check_flip_merge, flip_test
from lit_models.detection.voc_ap import VOCAveragePrecision
from lit_models.drawing import DRAW_SCORE, displayable, draw_boxes, side_by_side
from lit_models.metrics import evaluation_targets, gather_images, mean_average_precision
from lit_models.nets.detection_graph import DetectionGraph
from lit_models.pictures import Picture, Sample
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
    ``{stage}/map_50`` (IoU 0.5, the headline unless ``voc07_ap``), ``{stage}/map`` (COCO's mean over IoU
    0.5:0.95), ``map_75`` and ``mar_100``; test adds each class's AP at IoU 0.5 as ``test/ap_50/<class>``.
    ``voc07_ap`` adds PASCAL VOC's AP as its devkit computes it (below). Test also analyses the errors (YOLO's
    breakdown, a confusion matrix, precision-recall curves, the worst mistakes, proposal recall:
    :class:`lit_models.detection.error_analysis.ErrorAnalysis`), logged as ``test/errors/<category>`` and drawn by
    ``summary_pictures``.
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
        similar_classes: Groups of classes that look alike, by name, for the test's error analysis
            (:mod:`lit_models.detection.error_analysis`): a detection on an object of another class of one of its
            class's groups is a "similar" error, on any other class an "other" one (YOLO §4.2 after Hoiem et al.
            2012). The ``*_voc`` recipes give Hoiem et al.'s VOC groups; None: every wrong class is "other".
        test_flip: Horizontal-flip test-time augmentation: every detection pass (validation, test, predict, a call
            of the module) also detects on the mirror image (and mirrored proposals) and merges both sets by
            ``flip_merge`` (:mod:`lit_models.detection.test_time`). ``lit-models test --model.init_args.test_flip
            true`` tests a checkpoint trained without it.
        flip_merge: "nms": the two sets through per-class NMS at the net's ``box_nms_thresh``; "vote": the same,
            then each kept box the score-weighted mean of the boxes overlapping it at IoU >= 0.5 (Gidaris &
            Komodakis 2015's box voting).
        voc07_ap: Also evaluate as PASCAL VOC's devkit does (:class:`lit_models.detection.voc_ap.VOCAveragePrecision`:
            its matching, difficult objects neither hit nor miss) and make VOC2007's 11-point AP the monitored
            headline, the measure of the R-CNN, SPPNet, Fast/Faster R-CNN and YOLO v1 tables: validation and test log
            ``{stage}/map_50_voc07`` (11-point) and ``{stage}/map_50_voc10`` (VOC2010+'s area under the precision
            envelope), test each class's as ``test/ap_50_voc07/<class>`` and ``test/ap_50_voc10/<class>``. Boxes are
            compared as continuous edges, which on lit-models' VOC reading equals the devkit's +1-pixel overlap.
    """

    monitor = "val/map_50"
    prediction_writer = DetectionWriter
    target = "target"
    uses_proposals = False
    # The lowest score drawn on pictures: the training samples and ``predict``'s images (``--draw_score``).
    draw_score = DRAW_SCORE

    def __init__(
        self,
        num_classes: int = 21,
        weights_backbone: str | None = None,
        similar_classes: list[list[str]] | None = None,
        voc07_ap: bool = False,
        test_flip: bool = False,
        flip_merge: FlipMerge = "nms",
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        norm_weight_decay: float | None = None,
        **net_args: Any,
    ) -> None:
        """Build the architecture's net, with ``loss`` and ``predict`` as above."""
        super().__init__(num_classes, bias_lr_mult, bias_weight_decay, optimizer, lr_scheduler, norm_weight_decay)
        check_flip_merge(flip_merge)
        self.test_flip, self.flip_merge = test_flip, flip_merge
        if voc07_ap:  # before build_net, whose own headline (Faster R-CNN's RPN-only steps) wins
            self.monitor = "val/map_50_voc07"
        self.net = self.build_net(num_classes, **net_args)
        if weights_backbone:
            self.net.load_backbone_weights(weights_backbone)
        self.val_map = mean_average_precision()
        self.test_map = mean_average_precision()
        # VOC's per-class table: AP at IoU 0.5 only (class_metrics reports per class at the given thresholds).
        self.test_class_ap = mean_average_precision(iou_thresholds=[0.5], class_metrics=True)
        self.error_analysis = ErrorAnalysis(num_classes, similar_classes)  # test's: logged and drawn at its end
        stages = ("val", "test") if voc07_ap else ()
        self.voc_ap = nn.ModuleDict({stage: VOCAveragePrecision() for stage in stages})

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
        self.error_analysis.use_classes(spec.class_names)
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
        if self.test_flip:
            net = self.net
            return flip_test(self.one_pass, images, proposals, self.flip_merge, net.box_nms_thresh,
                             net.box_detections_per_img)  # fmt: skip
        return self.one_pass(images, proposals)

    def one_pass(self, images: Tensor | list[Tensor], proposals: list[Tensor] | None = None) -> list[dict[str, Tensor]]:
        """The net's detections on the images as they are."""
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
        if "val" in self.voc_ap:
            self.voc_ap["val"].update(detections, truth)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = self.split(batch)
        detections, truth = self.detect(batch), evaluation_targets(targets)
        self.test_map.update(detections, truth)
        self.test_class_ap.update(detections, truth)
        self.error_analysis.update(images, self.image_statistics(), detections, truth, self.draw_score)
        if self.uses_proposals:
            self.error_analysis.proposal_recall.update(self.proposals(batch), targets)
        if "test" in self.voc_ap:
            self.voc_ap["test"].update(detections, truth)

    def log_map(self, stage: str, metric: MeanAveragePrecision) -> None:
        gather_images(metric)  # every rank then computes the same, global values
        result = metric.compute()
        self.log_dict({f"{stage}/{key}": result[key] for key in LOGGED}, prog_bar=True)
        metric.reset()
        if stage in self.voc_ap:
            self.log_voc_ap(stage, self.voc_ap[stage])

    def log_voc_ap(self, stage: str, metric: VOCAveragePrecision) -> None:
        gather_images(metric)
        result = metric.compute()  # torchmetrics squeezes a one-class split's per-class tensors: reshape(-1)
        self.log_dict({f"{stage}/{key}": result[key] for key in ("map_50_voc07", "map_50_voc10")}, prog_bar=True)
        if stage == "test":
            classes = result["classes"].reshape(-1).tolist()
            # -1 marks a class without (non-difficult) ground truth in the split: not measured.
            for key in ("ap_50_voc07", "ap_50_voc10"):
                self.log_per_class(f"test/{key}", result[key].reshape(-1).tolist(), classes)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self.log_map("val", self.val_map)

    def on_test_epoch_start(self) -> None:
        self.error_analysis.reset()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.error_analysis.scalars())
        self.log_map("test", self.test_map)
        gather_images(self.test_class_ap)
        result = self.test_class_ap.compute()
        # -1 marks a class with neither ground truth nor detections in the split: not measured.
        self.log_per_class("test/ap_50", result["map_per_class"].reshape(-1).tolist(), result["classes"].tolist())
        self.test_class_ap.reset()

    def summary_pictures(self, stage: str) -> dict[str, Picture]:
        """The test split's error analysis (:class:`lit_models.detection.error_analysis.ErrorAnalysis`)."""
        return self.error_analysis.pictures(self.display_names) if stage == "test" else {}

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

    def export_graph(self) -> tuple[nn.Module, tuple[Tensor, ...], str]:
        """The whole detector (decoding, NMS, a region detector's proposals in) on one image of the data's size, its
        detections padded to ``box_detections_per_img`` (:mod:`lit_models.nets.detection_graph`); one pass, no
        flip test."""
        _, example, _ = super().export_graph()
        count = self.net.box_detections_per_img
        graph = DetectionGraph(self.net, count, self.uses_proposals)
        images = example[:1]  # the nets' predict loops over images in Python: the graph is traced for one
        inputs = "image 1 x 3 x H x W, proposals R x 4" if self.uses_proposals else "image 1 x 3 x H x W"
        what = f"{inputs} -> boxes 1 x {count} x 4, scores 1 x {count}, labels 1 x {count} (0: padding), counts 1"
        return graph, (images, graph.example_proposals(images)) if self.uses_proposals else (images,), what
