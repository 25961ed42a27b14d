"""Faster R-CNN (Ren, He, Girshick & Sun, NeurIPS 2015) from torchvision's detection components on classifier trunks.

A region proposal network slides a 3x3 convolution over the trunk's stride-16 feature map and scores and regresses
k anchors (sizes x aspect ratios) at every position; its top proposals after NMS are pooled to 7x7 (RoI max
pooling as in the paper, or RoIAlign) into a two-layer MLP and Fast R-CNN's sibling classifier and box regressor.
The whole model is torchvision's ``FasterRCNN`` (AnchorGenerator, RPNHead, RegionProposalNetwork, RoIHeads,
TwoMLPHead, FastRCNNPredictor); this module chooses the trunk, the pooling and the paper's settings.

Deviations from the paper:

* By default training is end to end (``train_parts="all"``, the paper's "approximate joint training", §3.2, which it
  reports as equally accurate and faster). The 4-step alternating scheme is built from ``train_parts``,
  ``freeze_trunk`` and a separate proposal network (:meth:`FasterRCNNNet.add_proposer`); see
  configs/detection/faster_rcnn_4step_*.yaml. Background RoIs are those under IoU 0.5 (the paper: [0.1, 0.5)).
* The RoI head is a two-layer MLP without dropout. With VGG-16 and ``representation_size=4096`` it has the shape
  of VGG's fc6/fc7, and :meth:`FasterRCNNNet.load_backbone_weights` initialises it from them as the paper does.
* ResNet trunks end at conv4_x (stride 16) and feed the MLP head; the ResNet paper instead runs conv5_x on
  each RoI, which is far too slow for a CPU.
* Images are normalised by the DataModule, so the model's own transform only resizes (``min_size``/``max_size``,
  the paper's shorter side 600 capped at 1000) and batches.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from lit_models.nets.backbones import Backbone, Trunk, copy_vgg_fc
from lit_models.nets.roi_pooling import roi_pool

POOLED_SIZE = 7  # the RoI grid: VGG-16's pool5 is 7 x 7 at 224 px, so fc6 fits it
TrainParts = Literal["all", "rpn", "detector"]
TRAIN_PARTS: tuple[str, ...] = get_args(TrainParts)


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
        train_parts: TrainParts = "all",
        freeze_trunk: bool = False,
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
            train_parts: What ``loss`` trains: "all" (RPN and detector together, the paper's approximate joint
                training), "rpn" (the RPN's losses only; the detector head is fixed) or "detector" (the Fast R-CNN
                head's losses only, on proposals of a fixed RPN: the net's own, or a separate proposer's). The 4-step
                alternating training is rpn, detector, rpn on a frozen trunk, detector on a frozen trunk.
            freeze_trunk: Keep the shared convolutional trunk fixed: no gradient, and always in evaluation mode so
                its BatchNorm statistics do not move either (steps 3 and 4, which tune only the layers unique to the
                RPN, then to the detector).
        """
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}")
        if roi_pool not in ("pool", "align"):
            raise ValueError(f"roi_pool must be 'pool' (the paper's RoI max pooling) or 'align', got {roi_pool!r}")
        if train_parts not in TRAIN_PARTS:
            raise ValueError(f"train_parts must be one of {TRAIN_PARTS}, got {train_parts!r}")
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
        self.train_parts, self.freeze_trunk = train_parts, freeze_trunk
        self.proposer: Proposer | None = None
        # Parameters outside train_parts get no gradient; requires_grad off also keeps them out of the optimizer.
        fixed = {"all": [], "rpn": [self.roi_heads], "detector": [self.rpn]}[train_parts]
        for module in fixed + ([self.backbone] if freeze_trunk else []):
            module.requires_grad_(False)
        self.train(self.training)

    # torchvision's RoIHeads keep the test settings; the other detection nets expose them under these names.
    @property
    def box_nms_thresh(self) -> float:
        return self.roi_heads.nms_thresh

    @property
    def box_detections_per_img(self) -> int:
        return self.roi_heads.detections_per_img

    def add_proposer(self) -> Proposer:
        """Give the detector a separate, fixed proposal network (trunk + RPN of this net's architecture), as in the
        4-step scheme's step 2, where Fast R-CNN trains its own trunk on the proposals of step 1's RPN. Its weights
        are the caller's to load (``FasterRCNN(proposals_from=...)`` loads an earlier checkpoint's)."""
        if self.train_parts != "detector":
            raise ValueError(
                f"a separate proposal network proposes for a detector-only step (train_parts='detector'); this net "
                f"trains {self.train_parts!r}, whose own RPN proposes"
            )
        self.proposer = Proposer(copy.deepcopy(self.backbone), copy.deepcopy(self.rpn))
        self.train(self.training)  # the proposer in evaluation mode from the start (Lightning keeps each module's mode)
        return self.proposer

    def train(self, mode: bool = True) -> FasterRCNNNet:
        super().train(mode)
        for fixed in (self.backbone if self.freeze_trunk else None, self.proposer):
            if fixed is not None:
                fixed.eval()  # BatchNorm statistics stay as they were trained
        return self

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """torchvision's contract: the losses in training mode, the detections in evaluation mode."""
        return self.loss(images, targets) if self.training else self.predict(images)

    def loss(self, images: Tensor | list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        """The losses of ``train_parts``: RPN objectness + box regression, Fast R-CNN classification + box regression,
        whatever mode the net is in (torchvision's RPN and RoI heads give losses only with their ``training`` flag
        set, so it is set for this call; the trunk keeps its mode: BN statistics)."""
        boxes = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        with heads_training(self, True):
            batch, boxes = self.transform(list(images), boxes)
            features = {"0": self.backbone(batch.tensors)}
            if self.train_parts == "detector":
                proposals, losses = self.regions(batch, features), {}
            else:
                proposals, losses = self.rpn(batch, features, boxes)
            if self.train_parts != "rpn":
                losses = {**self.roi_heads(features, proposals, batch.image_sizes, boxes)[1], **losses}
        return losses

    def predict(self, images: Tensor | list[Tensor]) -> list[dict[str, Tensor]]:
        """Per image: boxes (xyxy, input pixels), scores and labels (1..K) after per-class NMS."""
        images = list(images)
        with heads_training(self, False):
            batch, _ = self.transform(images)
            features = {"0": self.backbone(batch.tensors)}
            proposals = self.regions(batch, features)
            detections, _ = self.roi_heads(features, proposals, batch.image_sizes)
        return self.transform.postprocess(detections, batch.image_sizes, [image.shape[-2:] for image in images])

    def propose(self, images: Tensor | list[Tensor]) -> list[Tensor]:
        """Per image: the proposals the detector head sees at test time (R x 4 xyxy in input pixels, best first;
        ``rpn_post_nms_top_n_test`` at most), from the separate proposer where there is one, else the net's RPN."""
        images = list(images)
        with heads_training(self, False):
            batch, _ = self.transform(images)
            proposals = self.regions(batch, {"0": self.backbone(batch.tensors)})
        return [resize_boxes(boxes, size, image.shape[-2:])
                for boxes, size, image in zip(proposals, batch.image_sizes, images, strict=True)]  # fmt: skip

    def regions(self, batch: ImageList, features: dict[str, Tensor]) -> list[Tensor]:
        """The detector head's proposals for a transformed batch, without gradient or RPN losses: the proposer's
        (on its own trunk) where there is one, else the net's RPN's on ``features``."""
        if self.proposer is not None:
            return self.proposer(batch, training=self.rpn.training)
        return rpn_proposals(self.rpn, batch, features)

    def load_backbone_weights(self, path: str | os.PathLike) -> None:
        """Initialise the trunk (and, for VGG-16 with a 4096-wide head, fc6/fc7) from classifier weights
        (torchvision state dict or lit-models checkpoint, any head size)."""
        trunk: Trunk = self.backbone
        classifier = trunk.load_backbone_weights(path)  # the file is read once, for the trunk and the head
        head: TwoMLPHead = self.roi_heads.box_head
        # fc6 sees the 7x7 pooled conv5_3 exactly as VGG's first Linear sees pool5: the paper copies both.
        copy_vgg_fc(classifier, head.fc6, head.fc7)


class Proposer(nn.Module):
    """A fixed trunk and RPN proposing regions for a detector that has its own trunk (the 4-step scheme's step 2).

    Always in evaluation mode and without gradients; it proposes with the RPN's training numbers
    (``rpn_*_top_n_train``) while the detector trains, and its test numbers otherwise, as one precomputed set of
    proposals per setting would.
    """

    def __init__(self, backbone: nn.Module, rpn: RegionProposalNetwork) -> None:
        super().__init__()
        self.backbone, self.rpn = backbone, rpn
        self.requires_grad_(False)

    def forward(self, batch: ImageList, training: bool = False) -> list[Tensor]:
        self.rpn.training = training
        try:
            return rpn_proposals(self.rpn, batch, {"0": self.backbone(batch.tensors)})
        finally:
            self.rpn.training = False


@torch.no_grad()
def rpn_proposals(rpn: RegionProposalNetwork, batch: ImageList, features: dict[str, Tensor]) -> list[Tensor]:
    """``rpn``'s proposals, best first, in the transformed batch's pixels, without its losses (torchvision's RPN
    computes those whenever its ``training`` flag is set, which also picks the training top-n numbers used here)."""
    maps = list(features.values())
    objectness, deltas = rpn.head(maps)
    anchors = rpn.anchor_generator(batch, maps)
    per_level = [o[0].numel() for o in objectness]  # anchors per level: A x H x W
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    proposals = rpn.box_coder.decode(deltas, anchors).view(len(anchors), -1, 4)
    return rpn.filter_proposals(proposals, objectness, batch.image_sizes, per_level)[0]


@contextmanager
def heads_training(net: FasterRCNNNet, training: bool) -> Iterator[None]:
    """Set the ``training`` flag of the net and its RPN and RoI heads (which choose losses or detections, and the
    RPN's proposal numbers) for a block, leaving the trunk's mode (BatchNorm) as it is."""
    modules = (net, net.rpn, net.roi_heads)
    before = [module.training for module in modules]
    for module in modules:
        module.training = training
    try:
        yield
    finally:
        for module, flag in zip(modules, before, strict=True):
            module.training = flag


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
