"""Fast R-CNN (Girshick, ICCV 2015, "Fast R-CNN").

The trunk runs once per image; each region proposal is RoI-max-pooled (§2.1) from the stride-16 feature map into
a fixed 7 x 7 grid, which fc6/fc7 turn into a vector for two sibling layers: a (K+1)-way softmax and class-specific
box regressors. Both train jointly (§2.3, Eq. 1): cross-entropy plus lambda times the smooth L1 loss of the true
class's box deltas on foreground RoIs, over mini-batches of 64 RoIs per image, a quarter foreground (IoU >= 0.5)
and the rest background (IoU in [0.1, 0.5)), the ground-truth boxes included as RoIs. At test, softmax scores,
each class's regressed box, per-class NMS 0.3. Shared parts: :mod:`lit_models.nets.region_detector`.

Deviations from the paper:

* Tested at one scale by default: the image resized to a shorter side of ``min_size``, the longer side capped at
  ``max_size`` (the paper's 600 and 1000; :mod:`lit_models.nets.shared_map`). ``test_scales`` is its multi-scale
  test pyramid (§2.4, §5.2's five scales with ``max_size`` 2000), each RoI pooled at the scale where it is closest
  to 224 x 224 pixels, SPPnet's rule, which the paper names but does not restate; ``train_scales`` its multi-scale
  training.
* The truncated SVD of fc6/fc7 (§3.1) is :meth:`~lit_models.nets.region_detector.RegionDetectorNet.truncate_head`,
  used at test by ``FastRCNN(svd_ranks=...)``.
* ``roi_pool="align"`` swaps RoI max pooling for RoIAlign (Mask R-CNN, 2017; ``aligned=True``, the half-pixel
  correct version).
* The box loss is summed over foreground RoIs and divided by the number of sampled RoIs (the reference code's
  normalisation), with the targets coded by BoxCoder weights (10, 10, 5, 5), the paper's target normalisation.
* ResNet trunks end at conv4_x (stride 16) and feed the same fc6/fc7 head; VGG-16's fc6/fc7 are copied from the
  classifier weights by :meth:`~lit_models.nets.region_detector.RegionDetectorNet.load_backbone_weights` (with a
  4096-wide head), as in the paper.
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
        min_size: int | None = 600,
        max_size: int | None = 1000,
        train_scales: list[int] | None = None,
        roi_pool: Literal["pool", "align"] = "pool",
        pool_size: int = 7,
        sampling_ratio: int = 2,
        bg_iou: tuple[float, float] | None = (0.1, 0.5),
        **head_args,
    ) -> None:
        """Build the network.

        Args:
            num_classes: Classes including the background (21 for PASCAL VOC).
            backbone: "vgg16" (the paper's, to conv5_3) or "resnet18/34/50/101" (to conv4_x): stride 16.
            width_mult: Channel multiplier of the trunk (a size knob for tests and CPUs).
            batch_norm: VGG-16 with BatchNorm (ResNets always have it).
            min_size: The image's shorter side before the trunk (600); None: as given.
            max_size: Cap on the longer side (1000; the paper's multi-scale training: 2000).
            train_scales: Multi-scale training: each training image's shorter side drawn from these, every time it
                is seen (§5.2: [480, 576, 688, 864, 1200], with ``max_size`` 2000); test uses ``min_size``. None:
                train at ``min_size`` (the paper's single-scale results).
            roi_pool: "pool" (RoI max pooling, the paper) or "align" (RoIAlign).
            pool_size: Side of the RoI grid (7: VGG-16's pool5, so fc6 fits it).
            sampling_ratio: RoIAlign's bilinear samples per bin side (<= 0: adaptive); unused by "pool".
            bg_iou: IoU range [low, high) of background proposals, the others not sampled ((0.1, 0.5): the paper's,
                §2.3); null: [0, fg_iou).
            head_args: The multi-scale test (``test_scales``, ``test_window``: §5.2's image pyramid) of
                :class:`~lit_models.nets.shared_map.SharedMapNet`, and the head's sampling, training and test
                settings: the other keyword arguments of :class:`~lit_models.nets.region_detector.RegionDetectorNet`.
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
            bg_iou=bg_iou,
            min_size=min_size,
            max_size=max_size,
            train_scales=train_scales,
            quantised=roi_pool == "pool",  # RoI max pooling reads whole cells; RoIAlign samples exact positions
            **head_args,
        )
        self.roi_pool, self.pool_size, self.sampling_ratio = roi_pool, pool_size, sampling_ratio

    def pool_rois(self, features: Tensor, boxes: Tensor, spatial_scale: float) -> Tensor:
        """R x C * 7 * 7: each RoI's grid."""
        if self.roi_pool == "pool":
            grid = roi_pool(features[None], [boxes], self.pool_size, spatial_scale)  # R x C x 7 x 7
        else:
            grid = roi_align(features[None], [boxes], self.pool_size, spatial_scale, self.sampling_ratio, aligned=True)
        return grid.flatten(1)
