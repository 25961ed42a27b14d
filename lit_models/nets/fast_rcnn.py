"""Fast R-CNN (Girshick, ICCV 2015, "Fast R-CNN").

The trunk runs once per image; each region proposal is RoI-max-pooled (§2.1) from the stride-16 feature map into
a fixed 7 x 7 grid, which fc6/fc7 turn into a vector for two sibling layers: a (K+1)-way softmax and class-specific
box regressors. Both train jointly (§2.3, Eq. 1): cross-entropy plus lambda times the smooth L1 loss of the true
class's box deltas on foreground RoIs, over mini-batches of 64 RoIs per image, a quarter foreground (IoU >= 0.5)
and the rest background (IoU in [0.1, 0.5)), the ground-truth boxes included as RoIs. At test, softmax scores,
each class's regressed box, per-class NMS 0.3. Shared parts: :mod:`lit_models.nets.region_heads`.

Deviations from the paper:

* Single scale only: the image resized to a shorter side of ``min_size``, the longer side capped at ``max_size``
  (the paper's 600 and 1000; :mod:`lit_models.nets.shared_map`); its multi-scale pyramid is not offered.
* The truncated SVD of fc6/fc7 (§3.1) is :meth:`~lit_models.nets.region_heads.RegionDetectorNet.truncate_head`,
  used at test by ``FastRCNN(svd_ranks=...)``.
* ``roi_pool="align"`` swaps RoI max pooling for RoIAlign (Mask R-CNN, 2017; ``aligned=True``, the half-pixel
  correct version).
* The box loss is summed over foreground RoIs and divided by the number of sampled RoIs (the reference code's
  normalisation), with the targets coded by BoxCoder weights (10, 10, 5, 5), the paper's target normalisation.
* ResNet trunks end at conv4_x (stride 16) and feed the same fc6/fc7 head; VGG-16's fc6/fc7 are copied from the
  classifier weights by :meth:`load_backbone` (with a 4096-wide head), as in the paper.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor
from torchvision.ops import roi_align

from lit_models.nets.backbones import Backbone, Trunk
from lit_models.nets.checks import check_args
from lit_models.nets.roi_pooling import roi_pool
from lit_models.nets.shared_map import SharedMapNet


class FastRCNNNet(SharedMapNet):
    """Trunk once per image -> RoI pooling to 7 x 7 -> fc6/fc7 -> softmax and class-specific box regression."""

    def __init__(
        self,
        num_classes: int,
        backbone: Backbone = "vgg16",
        width_mult: float = 1.0,
        batch_norm: bool = False,
        frozen_layers: int = 0,
        min_size: int | None = 600,
        max_size: int | None = 1000,
        roi_pool: Literal["pool", "align"] = "pool",
        pool_size: int = 7,
        sampling_ratio: int = 2,
        representation_size: int = 4096,
        dropout: float = 0.5,
        rois_per_image: int = 64,
        fg_fraction: float = 0.25,
        fg_iou: float = 0.5,
        bg_iou: tuple[float, float] = (0.1, 0.5),
        box_loss_weight: float = 1.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.3,
        detections_per_img: int = 100,
    ) -> None:
        """Build the network.

        Args:
            num_classes: Classes including the background (21 for PASCAL VOC).
            backbone: "vgg16" (the paper's, to conv5_3) or "resnet18/34/50/101" (to conv4_x): stride 16.
            width_mult: Channel multiplier of the trunk (a size knob for tests and CPUs).
            batch_norm: VGG-16 with BatchNorm (ResNets always have it).
            frozen_layers: First convolutions kept fixed (the paper: VGG-16's conv1_x and conv2_x, 4).
            min_size: The image's shorter side before the trunk (600); None: as given.
            max_size: Cap on the longer side (1000).
            roi_pool: "pool" (RoI max pooling, the paper) or "align" (RoIAlign).
            pool_size: Side of the RoI grid (7: VGG-16's pool5, so fc6 fits it).
            sampling_ratio: RoIAlign's bilinear samples per bin side (<= 0: adaptive); unused by "pool".
            representation_size: Width of fc6 and fc7 (4096).
            dropout: Dropout after fc6 and fc7 (0.5).
            rois_per_image: RoIs sampled per image and step (64).
            fg_fraction: Largest share of foreground among them (0.25).
            fg_iou: IoU with a ground-truth box from which a proposal is foreground (0.5).
            bg_iou: IoU range [low, high) of background proposals ((0.1, 0.5)); the others are not sampled.
            box_loss_weight: lambda, the weight of the box regression loss (1).
            score_thresh: Detections scoring below this are dropped (0.05).
            nms_thresh: IoU of per-class NMS (0.3).
            detections_per_img: Most detections returned per image (100).
        """
        check_args("FastRCNNNet", [
            ("roi_pool", roi_pool, roi_pool in ("pool", "align"), "'pool' (RoI max pooling, the paper's) or 'align'"),
            ("pool_size", pool_size, pool_size >= 1, ">= 1"),
        ])  # fmt: skip
        trunk = Trunk(backbone, width_mult, batch_norm, stride=16)
        super().__init__(
            num_classes,
            trunk,
            pooled_size=trunk.out_channels * pool_size**2,  # 512 * 7 * 7 for VGG-16
            scheme="joint",
            frozen_layers=frozen_layers,
            representation_size=representation_size,
            dropout=dropout,
            rois_per_image=rois_per_image,
            fg_fraction=fg_fraction,
            fg_iou=fg_iou,
            bg_iou=bg_iou,
            box_loss_weight=box_loss_weight,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            min_size=min_size,
            max_size=max_size,
            quantised=roi_pool == "pool",  # RoI max pooling reads whole cells; RoIAlign samples exact positions
        )
        self.roi_pool, self.pool_size, self.sampling_ratio = roi_pool, pool_size, sampling_ratio

    def pool_rois(self, features: Tensor, boxes: Tensor, spatial_scale: float) -> Tensor:
        """R x C * 7 * 7: each RoI's grid."""
        if self.roi_pool == "pool":
            grid = roi_pool(features[None], [boxes], self.pool_size, spatial_scale)  # R x C x 7 x 7
        else:
            grid = roi_align(features[None], [boxes], self.pool_size, spatial_scale, self.sampling_ratio, aligned=True)
        return grid.flatten(1)
