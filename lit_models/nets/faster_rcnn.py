"""Faster R-CNN (Ren, He, Girshick & Sun, NeurIPS 2015) from torchvision's detection components on classifier trunks.

A region proposal network slides a 3x3 convolution over the trunk's stride-16 feature map and scores and regresses
k anchors (sizes x aspect ratios) at every position; its top proposals after NMS are pooled to 7x7 (RoI max
pooling as in the paper, or RoIAlign) into a two-layer MLP and Fast R-CNN's sibling classifier and box regressor.
The whole model is torchvision's ``FasterRCNN`` (AnchorGenerator, RPNHead, RegionProposalNetwork, RoIHeads,
TwoMLPHead, FastRCNNPredictor); this module chooses the trunk, the pooling and the paper's settings.

Deviations from the paper:

* Training is end to end (the paper's "approximate joint training", §3.2, which it reports as equally accurate and
  faster), not the 4-step alternating scheme. Background RoIs are those under IoU 0.5 (the paper: [0.1, 0.5)).
* The RoI head is a two-layer MLP without dropout. With VGG-16 and ``representation_size=4096`` it has the shape
  of VGG's fc6/fc7, and :meth:`FasterRCNNNet.load_backbone_weights` initialises it from them as the paper does.
* ResNet trunks end at conv4_x (stride 16) and feed the MLP head; the ResNet paper instead runs conv5_x on
  each RoI, which is far too slow for a CPU.
* Images are normalised by the DataModule, so the model's own transform only resizes (``min_size``/``max_size``,
  the paper's shorter side 600 capped at 1000) and batches.
"""

from __future__ import annotations

import os
from typing import Literal

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from lit_models.nets.backbones import Backbone, Trunk, copy_vgg_fc
from lit_models.nets.roi_pooling import roi_pool

POOLED_SIZE = 7  # the RoI grid: VGG-16's pool5 is 7 x 7 at 224 px, so fc6 fits it


class RoIMaxPool(nn.Module):
    """Fast R-CNN's RoI max pooling on the single feature map, with RoIHeads' calling convention."""

    def __init__(self, spatial_scale: float) -> None:
        super().__init__()
        self.spatial_scale = spatial_scale

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_sizes: list) -> Tensor:
        return roi_pool(features["0"], proposals, POOLED_SIZE, self.spatial_scale)  # R x C x 7 x 7


class FasterRCNNNet(FasterRCNN):
    """torchvision's FasterRCNN on a classifier trunk, with the ``loss`` / ``predict`` interface of lit-models' nets."""

    def __init__(
        self,
        num_classes: int,
        backbone: Backbone = "vgg16",
        width_mult: float = 1.0,
        batch_norm: bool = False,
        frozen_layers: int = 0,
        min_size: int = 600,
        max_size: int = 1000,
        anchor_sizes: tuple[int, ...] = (128, 256, 512),
        aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train: int = 12000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 6000,
        rpn_post_nms_top_n_test: int = 300,
        rpn_batch_size_per_image: int = 256,
        roi_pool: Literal["pool", "align"] = "pool",
        sampling_ratio: int = 2,
        representation_size: int = 4096,
        box_batch_size_per_image: int = 128,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.3,
        box_detections_per_img: int = 100,
    ) -> None:
        """Build the detector.

        Args:
            num_classes: Classes including the background (21 for PASCAL VOC).
            backbone: Trunk: "vgg16" (the paper's, to conv5_3) or "resnet18/34/50/101" (to conv4_x); stride 16.
            width_mult: Channel multiplier of the trunk (a size knob for tests and CPU configs).
            batch_norm: VGG-16 with BatchNorm (ResNets always have it).
            frozen_layers: First convolutions kept fixed, their batch norms too (the paper: 4, VGG's conv1_x and
                conv2_x, with ImageNet weights; 0 when training from scratch).
            min_size: Shorter image side after the model's resize (paper: 600).
            max_size: Longest side cap (paper: 1000).
            anchor_sizes: Anchor box sides in input pixels (paper: 128, 256, 512).
            aspect_ratios: Anchor height/width ratios (paper: 0.5, 1, 2).
            rpn_pre_nms_top_n_train: Proposals kept before the RPN's NMS, training.
            rpn_post_nms_top_n_train: Proposals kept after it, training (paper: 2000).
            rpn_pre_nms_top_n_test: Before NMS, evaluation.
            rpn_post_nms_top_n_test: After NMS, evaluation (paper: 300).
            rpn_batch_size_per_image: Anchors sampled per image for the RPN loss, half positive (paper: 256).
            roi_pool: "pool" (RoI max pooling, the paper) or "align" (RoIAlign, Mask R-CNN's).
            sampling_ratio: RoIAlign's bilinear samples per bin side (Mask R-CNN: 2; 1 costs a quarter).
            representation_size: Width of the two fully connected head layers (VGG's fc6/fc7: 4096).
            box_batch_size_per_image: RoIs sampled per image for the head's loss, a quarter foreground (128).
            box_score_thresh: Detections below this score are dropped (0.05, as mAP evaluation wants).
            box_nms_thresh: Per-class NMS IoU at test (paper: 0.3).
            box_detections_per_img: Most detections kept per image (100).
        """
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}")
        if roi_pool not in ("pool", "align"):
            raise ValueError(f"roi_pool must be 'pool' (the paper's RoI max pooling) or 'align', got {roi_pool!r}")
        if not anchor_sizes or not aspect_ratios or min(anchor_sizes) <= 0 or min(aspect_ratios) <= 0:
            raise ValueError(f"anchor sizes {anchor_sizes} and aspect ratios {aspect_ratios} must be positive")
        trunk = Trunk(backbone, width_mult, batch_norm, stride=16)
        freeze_first_convs(trunk, frozen_layers)
        super().__init__(
            trunk,
            min_size=min_size,
            max_size=max_size,
            # The DataModule normalises; the model's transform must not do it again.
            image_mean=[0.0, 0.0, 0.0],
            image_std=[1.0, 1.0, 1.0],
            rpn_anchor_generator=AnchorGenerator((tuple(anchor_sizes),), (tuple(aspect_ratios),)),
            rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
            rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
            rpn_batch_size_per_image=rpn_batch_size_per_image,
            box_roi_pool=MultiScaleRoIAlign(["0"], output_size=POOLED_SIZE, sampling_ratio=sampling_ratio),
            box_head=TwoMLPHead(trunk.out_channels * POOLED_SIZE**2, representation_size),
            box_predictor=FastRCNNPredictor(representation_size, num_classes),
            box_score_thresh=box_score_thresh,
            box_nms_thresh=box_nms_thresh,
            box_detections_per_img=box_detections_per_img,
            box_batch_size_per_image=box_batch_size_per_image,
        )
        if roi_pool == "pool":  # torchvision's constructor accepts only its RoIAlign pooler
            self.roi_heads.box_roi_pool = RoIMaxPool(1.0 / trunk.stride)

    def loss(self, images: Tensor | list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        """RPN objectness + box regression and Fast R-CNN classification + box regression losses, whatever mode the
        net is in: torchvision's detector, RPN and RoI heads return losses only when their ``training`` flag is set,
        so those three flags are set for this call (the backbone keeps its mode: BN statistics, dropout)."""
        boxes = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        switched = [(module, module.training) for module in (self, self.rpn, self.roi_heads)]
        for module, _ in switched:
            module.training = True
        try:
            return self(list(images), boxes)
        finally:
            for module, training in switched:
                module.training = training

    def predict(self, images: Tensor | list[Tensor]) -> list[dict[str, Tensor]]:
        """Per image: boxes (xyxy, input pixels), scores and labels (1..K) after per-class NMS."""
        return self(list(images))

    def load_backbone_weights(self, path: str | os.PathLike) -> None:
        """Initialise the trunk (and, for VGG-16 with a 4096-wide head, fc6/fc7) from classifier weights
        (torchvision state dict or lit-models checkpoint, any head size)."""
        trunk: Trunk = self.backbone
        classifier = trunk.load_backbone_weights(path)  # the file is read once, for the trunk and the head
        head: TwoMLPHead = self.roi_heads.box_head
        # fc6 sees the 7x7 pooled conv5_3 exactly as VGG's first Linear sees pool5: the paper copies both.
        copy_vgg_fc(classifier, head.fc6, head.fc7)


def freeze_first_convs(trunk: nn.Module, count: int) -> None:
    """Keep the first ``count`` convolutions fixed, as the paper does for VGG-16's conv1-conv2 (``count=4``).

    Their batch norms, if any, become ``FrozenBatchNorm2d`` (fixed statistics and affine), as in torchvision's
    detection backbones.
    """
    if count < 0:
        raise ValueError(f"frozen_layers must be >= 0, got {count}")
    layers = [(name, m) for name, m in trunk.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    convs = [i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Conv2d)]
    if count > len(convs):
        raise ValueError(f"frozen_layers={count} but the trunk has only {len(convs)} convolutions")
    end = 0 if count == 0 else len(layers) if count == len(convs) else convs[count]
    for name, module in layers[:end]:
        module.requires_grad_(False)
        if isinstance(module, nn.BatchNorm2d):
            parent, _, child = name.rpartition(".")
            frozen = FrozenBatchNorm2d(module.num_features, module.eps)
            frozen.load_state_dict(module.state_dict(), strict=False)
            setattr(trunk.get_submodule(parent), child, frozen)
