"""What R-CNN, SPPNet and Fast R-CNN share: precomputed region proposals in, per-RoI features through fc6/fc7, and
either Fast R-CNN's joint softmax + box regression or R-CNN's stages (softmax fine-tuning, then SVMs and box
regressors on the frozen features).

Girshick, Donahue, Darrell & Malik, "Rich feature hierarchies for accurate object detection and semantic
segmentation", CVPR 2014 (R-CNN); He, Zhang, Ren & Sun, "Spatial Pyramid Pooling in Deep Convolutional Networks for
Visual Recognition", ECCV 2014 (SPPNet); Girshick, "Fast R-CNN", ICCV 2015.

A subclass builds the trunk and turns images and RoIs into per-RoI features (:meth:`RegionDetectorNet.pooled`:
warped crops through the whole CNN, or pooling from one feature map per image); everything else is
:class:`RegionDetectorNet`, with its labelling, losses and head pieces in :mod:`lit_models.nets.region_heads`. IoU,
pooling, NMS and the box coding are torchvision's (``torchvision.ops``, ``torchvision.models.detection._utils``).

Deviations from the papers, common to the three nets:

* Box deltas are coded with weights (10, 10, 5, 5), i.e. divided by 0.1 / 0.2: Fast R-CNN's normalisation of the
  regression targets by their standard deviation, as fixed constants.
* RoIs are sampled per image (``rois_per_image``, ``fg_fraction`` foreground); R-CNN samples its 128-window
  mini-batch uniformly over all the images' windows.
* The staged scheme (R-CNN §2.3, Appendix B-C; SPPNet §4) trains its SVMs either as the paper does, by
  hard-negative mining over a disk cache of the frozen features (stage "box_regression":
  :mod:`lit_models.detection.svm_mining` sets ``svm`` before it, and only the box regressors train here), or
  online (stage "svm"), by SGD inside the training loop. Box regressors are trained by SGD in both, not by the
  paper's closed-form ridge regression:

  - Online SVM loss: for each foreground class c, the mean hinge ``relu(1 - s_c)`` of its positives (the
    ground-truth boxes of class c only, as in the paper) plus the mean ``relu(1 + s_c)`` of its negatives
    (sampled proposals under ``svm_neg_iou`` with every box of class c), summed over classes and divided by their
    number. Only negatives inside the margin count, so SGD over randomly sampled proposals is an online
    counterpart of hard-negative mining. The L2 penalty of the SVMs is the optimizer's weight decay.
  - Box regressors: squared loss (ridge regression's; its L2 penalty again the weight decay) of the
    class-specific deltas predicted from the pooled features, for proposals at IoU >= ``box_reg_iou`` with a
    ground-truth box (targets to that box).
  - The proposals of a step: ``rois_per_image`` per image, with up to ``fg_fraction`` of them at IoU >=
    ``box_reg_iou`` (the regressors' examples, which random sampling would rarely draw) and the rest at random.
  - Test scores are ``sigmoid(svm(fc7))``: the sigmoid keeps the SVMs' ranking and maps their decision boundary
    to 0.5, so ``box_score_thresh`` keeps its meaning. Until the SVM stage has run (``svm_trained``), the softmax of
    the fine-tuned classifier scores the unregressed proposals, so validation during fine-tuning is meaningful.

A test-time economy, exact: SPPNet and Fast R-CNN (RoI max pooling) run the head once per distinct feature-map
window (:meth:`RegionDetectorNet.pooling_windows`; ``share_pooling_windows = False`` runs every proposal, as the
papers did).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder
from torchvision.ops import boxes as box_ops
from torchvision.ops import clip_boxes_to_image, remove_small_boxes

from lit_models.nets.backbones import Trunk, copy_vgg_fc
from lit_models.nets.checks import check_args
from lit_models.nets.faster_rcnn import freeze_first_convs
from lit_models.nets.region_heads import (
    class_max_iou,
    foreground_deltas,
    init_linear,
    label_proposals,
    svm_hinge_loss,
    truncated_svd,
)

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # Fast R-CNN's target normalisation: std 0.1 (centre), 0.2 (size)
MIN_BOX_SIZE = 1e-2  # torchvision's RoIHeads: drop degenerate detections


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """No gradient, and eval mode (BN running statistics used and kept, no dropout) for every submodule; each
    submodule's own mode is restored afterwards."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


class RegionDetectorNet(nn.Module, ABC):
    """Trunk -> per-RoI features (``pooled``, by the subclass) -> fc6/fc7 -> class scores and class-specific boxes.

    ``loss(images, targets, proposals)`` returns the loss parts; ``predict(images, proposals)`` the detections.
    ``scheme="joint"``: Fast R-CNN. ``scheme="staged"``: R-CNN's stages, chosen by ``self.stage`` ("finetune",
    "svm": SVMs online and box regressors, or "box_regression": box regressors, the SVMs mined elsewhere), which
    the training loop sets.

    The subclasses (:class:`~lit_models.nets.rcnn.RCNNNet`, :class:`~lit_models.nets.sppnet.SPPNetNet`,
    :class:`~lit_models.nets.fast_rcnn.FastRCNNNet`) build the trunk and pass their other keyword arguments here.
    """

    # The attributes besides the weights that decide :meth:`roi_features` (a feature cache records them).
    feature_settings: tuple[str, ...] = ()

    def __init__(
        self,
        num_classes: int,
        trunk: Trunk,
        pooled_size: int,
        scheme: Literal["joint", "staged"],
        frozen_layers: int = 0,
        representation_size: int = 4096,
        dropout: float = 0.5,
        rois_per_image: int = 64,
        fg_fraction: float = 0.25,
        fg_iou: float = 0.5,
        bg_iou: tuple[float, float] | None = None,
        box_loss_weight: float = 1.0,
        svm_neg_iou: float = 0.3,
        box_reg_iou: float = 0.6,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.3,
        box_detections_per_img: int = 100,
    ) -> None:
        """Build the head on a trunk.

        Args:
            num_classes: Classes including the background (label 0; 21 for PASCAL VOC); targets' labels are
                1..num_classes-1.
            trunk: The convolutional trunk the subclass pools from.
            pooled_size: D_pool, the length of one RoI's feature vector from :meth:`pooled` (fc6's input).
            scheme: "joint" (Fast R-CNN: softmax and box regression together) or "staged" (R-CNN, SPPNet: softmax
                fine-tuning, then SVMs and box regressors on the frozen features).
            frozen_layers: First convolutions of the trunk kept fixed, their batch norms too (Fast R-CNN: VGG-16's
                conv1_x and conv2_x, 4; SPPNet fine-tunes the fully connected layers only: all of them).
            representation_size: Width of fc6 and fc7 (4096).
            dropout: Dropout after fc6 and fc7 (0.5).
            rois_per_image: RoIs sampled per image and step (64: Fast R-CNN's; R-CNN's 128 over 2 images).
            fg_fraction: Largest share of foreground among them (0.25).
            fg_iou: Softmax training: IoU with a ground-truth box from which a proposal is foreground (0.5).
            bg_iou: Softmax training: IoU range [low, high) of background proposals, the others not sampled; null:
                [0, fg_iou), every proposal under the foreground IoU (R-CNN, SPPNet).
            box_loss_weight: Joint scheme: lambda, the weight of the box regression loss (1).
            svm_neg_iou: Staged scheme: a proposal is an SVM negative for a class under this IoU with all its
                boxes (0.3).
            box_reg_iou: Staged scheme: proposals from this IoU with a ground-truth box train its class's box
                regressor (0.6).
            box_score_thresh: Detections scoring below this are dropped (0.05).
            box_nms_thresh: IoU of per-class NMS at test (0.3).
            box_detections_per_img: Most detections returned per image (100).
        """
        bg_iou = (0.0, fg_iou) if bg_iou is None else tuple(bg_iou)
        name = type(self).__name__
        check_args(name, [
            ("num_classes", num_classes, num_classes >= 2, ">= 2 (it counts the background too)"),
            ("scheme", scheme, scheme in ("joint", "staged"), "'joint' or 'staged'"),
            ("representation_size", representation_size, representation_size >= 1, ">= 1"),
            ("dropout", dropout, 0 <= dropout <= 1, "in [0, 1]"),
            ("rois_per_image", rois_per_image, rois_per_image >= 1, ">= 1"),
            ("fg_fraction", fg_fraction, 0 < fg_fraction <= 1, "in (0, 1]"),
            ("fg_iou", fg_iou, 0 < fg_iou <= 1, "in (0, 1]"),
            ("bg_iou", bg_iou, len(bg_iou) == 2 and 0 <= bg_iou[0] < bg_iou[1] <= fg_iou,
             f"a range [low, high) with 0 <= low < high <= fg_iou ({fg_iou})"),
            ("box_loss_weight", box_loss_weight, box_loss_weight >= 0, ">= 0"),
            ("svm_neg_iou", svm_neg_iou, 0 < svm_neg_iou <= 1, "in (0, 1]"),
            ("box_reg_iou", box_reg_iou, 0 < box_reg_iou <= 1, "in (0, 1]"),
            ("box_score_thresh", box_score_thresh, 0 <= box_score_thresh <= 1, "in [0, 1]"),
            ("box_nms_thresh", box_nms_thresh, 0 <= box_nms_thresh <= 1, "in [0, 1]"),
            ("box_detections_per_img", box_detections_per_img, box_detections_per_img >= 1, ">= 1"),
        ])  # fmt: skip
        super().__init__()
        freeze_first_convs(trunk, frozen_layers)
        self.num_classes, self.scheme, self.pooled_size = num_classes, scheme, pooled_size
        self.fg_iou, self.bg_iou, self.box_loss_weight = fg_iou, bg_iou, box_loss_weight
        self.svm_neg_iou, self.box_reg_iou = svm_neg_iou, box_reg_iou
        self.box_score_thresh, self.box_nms_thresh = box_score_thresh, box_nms_thresh
        self.box_detections_per_img = box_detections_per_img
        self.sampler = BalancedPositiveNegativeSampler(rois_per_image, fg_fraction)
        self.box_coder = BoxCoder(weights=BOX_CODER_WEIGHTS)

        self.trunk = trunk
        self.head = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(pooled_size, representation_size)),  # R x D_pool -> R x 4096
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),
            ("fc7", nn.Linear(representation_size, representation_size)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
        ]))  # fmt: skip
        self.share_pooling_windows = True  # False: every proposal through the head, as the papers ran them
        self._truncated_head: tuple[nn.Module, ...] = ()  # truncate_head's snapshot; a tuple keeps it off state_dict
        self.cls_score = nn.Linear(representation_size, num_classes)
        # Fast R-CNN §2.3: the new layers start from N(0, 0.01) (classifier) and N(0, 0.001) (box regression).
        init_linear(self.cls_score, 0.01)
        if scheme == "joint":
            self.bbox_pred = nn.Linear(representation_size, 4 * num_classes)  # class-specific; background's unused
            init_linear(self.bbox_pred, 0.001)
        else:
            self.stage: Literal["finetune", "svm", "box_regression"] = "finetune"
            self.svm = nn.Linear(representation_size, num_classes)  # one linear SVM per class on fc7; 0 unused
            self.box_regressor = nn.Linear(pooled_size, 4 * num_classes)  # R-CNN regresses from pool5
            init_linear(self.svm, 0.01)
            init_linear(self.box_regressor, 0.001)
            self.register_buffer("svm_trained", torch.tensor(False))

    @abstractmethod
    def pooled(self, images: Tensor | list[Tensor], rois: list[Tensor], training: bool = False) -> Tensor:
        """sum(R_i) x D_pool: each RoI's features before fc6 (RoIs in input pixels, image by image); ``training``:
        for a loss that trains the CNN (where a net draws its multi-scale training scale)."""

    def pooling_windows(self, rois: Tensor, size: tuple[int, int]) -> Tensor | None:
        """R x 4 integers that alone decide each RoI's pooled features in an H x W image (its cells on a quantised
        feature map), or None where every RoI's features differ (bilinear warps, RoIAlign). :meth:`predict` runs
        the head once per distinct window of an image: the same scores and deltas, and fewer RoIs through
        fc6/fc7."""
        return None

    def load_backbone_weights(self, path: str | os.PathLike) -> None:
        """Initialise the trunk from classifier weights (torchvision state dict or lit-models checkpoint, any head
        size), and fc6/fc7 from VGG-16's when their shapes agree (a 4096-wide head on 7 x 7 x 512 pooled features,
        as VGG's fc6 sees pool5; the R-CNN and Fast R-CNN papers copy them)."""
        copy_vgg_fc(self.trunk.load_backbone_weights(path), self.head.fc6, self.head.fc7)

    def truncate_head(self, ranks: tuple[int, int] | None) -> None:
        """Fast R-CNN §3.1: detect with fc6 and fc7 replaced by their truncated SVDs of ranks ``ranks`` (the
        paper: 1024 and 256 of 4096), which cuts the per-RoI cost of the head; None detects with fc6/fc7 again.

        The factorisation is a snapshot of the current weights: the next training step discards it.
        """
        if ranks is None:
            self._truncated_head = ()
            return
        check_args(type(self).__name__, [("svd ranks", ranks, len(ranks) == 2 and min(ranks) >= 1, "two ranks >= 1")])
        fc6, fc7 = self.head.fc6, self.head.fc7
        self._truncated_head = (
            nn.Sequential(truncated_svd(fc6, ranks[0]), nn.ReLU(), truncated_svd(fc7, ranks[1]), nn.ReLU()),
        )

    # ------------------------------------------------------------------------------------------ training

    def loss(self, images: Tensor | list[Tensor], targets: list[dict], proposals: list[Tensor]) -> dict[str, Tensor]:
        """The loss parts (train mode): joint or fine-tuning {"loss_classifier"[, "loss_box_reg"]}, stage "svm"
        {"loss_svm", "loss_box_reg"}, stage "box_regression" {"loss_box_reg"}."""
        proposals = self.check_inputs(images, proposals, targets)
        self._truncated_head = ()  # the weights are about to change
        targets = [
            {"boxes": t["boxes"].to(p).reshape(-1, 4), "labels": t["labels"].to(p.device, torch.int64)}
            for t, p in zip(targets, proposals, strict=True)
        ]
        if self.scheme == "joint":
            return self.softmax_loss(images, targets, proposals)
        if self.stage not in ("finetune", "svm", "box_regression"):
            raise ValueError(
                f"{type(self).__name__}.stage must be 'finetune', 'svm' or 'box_regression', got {self.stage!r}"
            )
        loss = self.softmax_loss if self.stage == "finetune" else self.svm_loss
        return loss(images, targets, proposals)

    def sample_rois(
        self, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, fg_iou: float, bg_iou: tuple[float, float]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Label one image's boxes and sample ``rois_per_image`` -> (boxes S x 4, labels S, regression targets
        S x 4 towards each box's best ground-truth box)."""
        labels, matched = label_proposals(boxes, gt_boxes, gt_labels, fg_iou, bg_iou)
        positive, negative = self.sampler([labels])
        keep = torch.where(positive[0] | negative[0])[0]
        boxes, labels, matched = boxes[keep], labels[keep], matched[keep]
        if not len(gt_boxes):
            return boxes, labels, torch.zeros_like(boxes)
        return boxes, labels, self.box_coder.encode_single(gt_boxes[matched], boxes)

    def softmax_loss(self, images: Tensor | list[Tensor], targets: list[dict], proposals: list[Tensor]) -> dict:
        """Fast R-CNN's multi-task loss (Eq. 1), or R-CNN's fine-tuning (its classification term alone)."""
        rois, labels, deltas = [], [], []
        for boxes, target in zip(proposals, targets, strict=True):
            gt_boxes, gt_labels = target["boxes"], target["labels"]
            boxes = torch.cat([boxes, gt_boxes])  # both papers add the ground-truth boxes to the training RoIs
            sampled = self.sample_rois(boxes, gt_boxes, gt_labels, self.fg_iou, self.bg_iou)
            for collected, value in zip((rois, labels, deltas), sampled, strict=True):
                collected.append(value)
        labels = torch.cat(labels)  # S
        features = self.head(self.pooled(images, rois, training=True))  # S x 4096
        count = max(len(labels), 1)
        parts = {"loss_classifier": F.cross_entropy(self.cls_score(features), labels, reduction="sum") / count}
        if self.scheme == "joint":
            predicted, wanted = foreground_deltas(self.bbox_pred(features), labels, torch.cat(deltas))  # F x 4
            box_loss = F.smooth_l1_loss(predicted, wanted, beta=1.0, reduction="sum")
            parts["loss_box_reg"] = self.box_loss_weight * box_loss / count
        return parts

    def svm_loss(self, images: Tensor | list[Tensor], targets: list[dict], proposals: list[Tensor]) -> dict:
        """Staged SVM stage: hinge loss of the SVMs on fc7 (stage "svm" only) and squared loss of the box
        regressors on pool5, the trunk and fc6/fc7 frozen."""
        rois, is_gt, reg_labels, reg_deltas, negative = [], [], [], [], []
        for boxes, target in zip(proposals, targets, strict=True):
            gt_boxes, gt_labels = target["boxes"], target["labels"]
            # Foreground here: the box regressors' examples; the rest are random proposals.
            regression_iou = (self.box_reg_iou, (0.0, self.box_reg_iou))
            boxes, labels, deltas = self.sample_rois(boxes, gt_boxes, gt_labels, *regression_iou)
            rois.append(torch.cat([gt_boxes, boxes]))  # the ground-truth boxes are the SVMs' positives
            is_gt.append(torch.arange(len(rois[-1]), device=boxes.device) < len(gt_boxes))
            reg_labels.append(labels)
            reg_deltas.append(deltas)
            negative.append(class_max_iou(boxes, gt_boxes, gt_labels, self.num_classes) < self.svm_neg_iou)
        with evaluating(self.trunk, self.head):
            pooled = self.pooled(images, rois)  # S x D_pool
            features = self.head(pooled) if self.stage == "svm" else None  # S x 4096
        is_gt = torch.cat(is_gt)
        outputs = self.box_regressor(pooled[~is_gt])  # M x 4K; pooled has no gradient: only the regressor trains
        predicted, wanted = foreground_deltas(outputs, torch.cat(reg_labels), torch.cat(reg_deltas))  # F x 4
        parts = {"loss_box_reg": F.mse_loss(predicted, wanted, reduction="sum") / max(predicted.numel(), 1)}
        if features is not None:
            scores = self.svm(features)  # S x K
            gt_labels = torch.cat([t["labels"] for t in targets])
            parts["loss_svm"] = svm_hinge_loss(scores[is_gt], gt_labels, scores[~is_gt], torch.cat(negative))
            self.svm_trained.fill_(True)
        return parts

    # ------------------------------------------------------------------------------------------ inference

    def predict(self, images: Tensor | list[Tensor], proposals: list[Tensor]) -> list[dict[str, Tensor]]:
        """Per image: boxes (D x 4 xyxy, input pixels), scores (D) and labels (D, 1..K) after per-class NMS.

        Runs in eval mode (restored afterwards); the caller provides ``torch.no_grad()``.
        """
        proposals = self.check_inputs(images, proposals)
        sizes = image_sizes(images)
        return self.detect(*self.roi_features(images, proposals), proposals, sizes)

    def roi_features(self, images: Tensor | list[Tensor], proposals: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """In eval mode, each distinct pooling window once (:meth:`distinct_windows`): (pooled U x D_pool, fc7
        U x 4096, the window of each of the sum(R_i) proposals, R). What :meth:`predict` scores, and what the
        feature cache of hard-negative mining holds."""
        distinct, expand = self.distinct_windows(proposals, image_sizes(images))  # U_i x 4 per image
        with evaluating(self):  # no dropout, BN running statistics; no_grad is the caller's anyway
            pooled = self.pooled(images, distinct)  # U x D_pool
            features = (self._truncated_head or (self.head,))[0](pooled)  # U x 4096
        return pooled, features, expand

    def detect(
        self, pooled: Tensor, features: Tensor, expand: Tensor, proposals: list[Tensor], sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Detections from :meth:`roi_features`' output for these proposals of images of these H x W sizes."""
        rois = torch.cat(proposals)  # R x 4
        softmax = F.softmax(self.cls_score(features), -1)[expand]  # R x K
        if self.scheme == "joint":
            scores, boxes = softmax, self.decode(self.bbox_pred(features)[expand], rois)
        else:
            # The SVMs and box regressors once trained, else the fine-tuned softmax on the unregressed proposals.
            # Both are computed and the flag picks: in a graph being exported it is read only when the graph runs.
            trained = self.svm_trained
            scores = torch.where(trained, torch.sigmoid(self.svm(features))[expand], softmax)
            unregressed = rois[:, None].expand(-1, self.num_classes, 4)  # R x K x 4
            boxes = torch.where(trained, self.decode(self.box_regressor(pooled)[expand], rois), unregressed)
        counts = [p.shape[0] for p in proposals]  # shape[0], not len(): a symbol in a graph being exported
        return [
            self.postprocess(b, s, size)
            for b, s, size in zip(boxes.split(counts), scores.split(counts), sizes, strict=True)
        ]

    def distinct_windows(self, proposals: list[Tensor], sizes: list[tuple[int, int]]) -> tuple[list[Tensor], Tensor]:
        """One proposal per distinct pooling window of each image (of these H x W sizes), and for each of the
        sum(R_i) proposals the row of its window among the concatenated sum(U_i) (all proposals when windows are
        not quantised)."""
        distinct, expand, offset = [], [], 0
        # A graph being exported runs every proposal (the same detections): torch.unique's size is the data's.
        share = self.share_pooling_windows and not torch.compiler.is_exporting()
        for boxes, size in zip(proposals, sizes, strict=True):
            cells = self.pooling_windows(boxes, size) if share else None
            if cells is None:
                return proposals, torch.arange(sum(p.shape[0] for p in proposals), device=boxes.device)
            windows, inverse = torch.unique(cells, dim=0, return_inverse=True)
            first = torch.zeros(len(windows), dtype=torch.int64, device=boxes.device)
            first.scatter_(0, inverse, torch.arange(len(boxes), device=boxes.device))  # any member represents it
            distinct.append(boxes[first])
            expand.append(inverse + offset)
            offset += len(windows)
        return distinct, torch.cat(expand) if expand else torch.zeros(0, dtype=torch.int64)

    def decode(self, deltas: Tensor, rois: Tensor) -> Tensor:
        """R x 4K class-specific deltas relative to R x 4 RoIs -> R x K x 4 boxes."""
        return self.box_coder.decode_single(deltas, rois).view(rois.shape[0], self.num_classes, 4)

    def postprocess(self, boxes: Tensor, scores: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
        """R x K x 4 boxes and R x K scores of one image -> its detections (torchvision RoIHeads' order)."""
        boxes = clip_boxes_to_image(boxes, size)
        labels = torch.arange(self.num_classes, device=scores.device).expand_as(scores)
        boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
        keep = torch.where(scores > self.box_score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = remove_small_boxes(boxes, MIN_BOX_SIZE)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        # batched_nms looked up when called: export traces an equivalent form (lit_models.export_ops.exportable_nms).
        keep = box_ops.batched_nms(boxes, scores, labels, self.box_nms_thresh)[: self.box_detections_per_img]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}

    def check_inputs(
        self, images: Tensor | list[Tensor], proposals: list[Tensor] | None, targets: list[dict] | None = None
    ) -> list[Tensor]:
        """Validate the batch; return the proposals as R_i x 4 tensors of the images' dtype and device."""
        name, count = type(self).__name__, len(images)
        if proposals is None or len(proposals) != count:
            got = None if proposals is None else len(proposals)
            raise ValueError(f"{name} needs one proposals tensor (R x 4) per image: {count} images, got {got}")
        if targets is not None and len(targets) != count:
            raise ValueError(f"{name} needs one target per image: {count} images, got {len(targets)}")
        reference = images if isinstance(images, Tensor) else images[0]
        checked = []
        for boxes in proposals:
            boxes = torch.as_tensor(boxes).to(device=reference.device, dtype=reference.dtype)
            boxes = boxes.reshape(0, 4) if boxes.numel() == 0 else boxes
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ValueError(f"{name} proposals must be R x 4 (xyxy), got shape {tuple(boxes.shape)}")
            checked.append(boxes)
        for target in targets or []:
            labels = target["labels"]
            if labels.numel() and not 1 <= int(labels.min()) <= int(labels.max()) < self.num_classes:
                raise ValueError(f"{name} target labels must be in 1..{self.num_classes - 1}, got {labels.tolist()}")
        return checked


def image_sizes(images: Tensor | list[Tensor]) -> list[tuple[int, int]]:
    return [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
