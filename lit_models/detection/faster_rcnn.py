"""``lit_models.FasterRCNN``: the region-proposal-network detector on the Detector loop."""

from __future__ import annotations

from typing import Literal

from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from lit_models.detection.base import Detector
from lit_models.nets.backbones import Backbone
from lit_models.nets.faster_rcnn import FasterRCNNNet


class FasterRCNN(Detector):
    """Faster R-CNN (Ren et al. 2015): RPN proposals into a Fast R-CNN head, trained end to end.

    Defaults are the paper's VGG-16 model (shorter side 600, anchors 128/256/512 x 1:2, 1:1, 2:1, 12000/2000
    proposals before/after NMS in training and 6000/300 in test, 256 anchors and 128 RoIs sampled per image,
    RoI max pooling to 7x7, a 4096-wide head, NMS 0.3 at test). See :mod:`lit_models.nets.faster_rcnn` for the
    deviations, and configs/detection/ for the paper's VOC recipe and a CPU-sized one.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: Backbone = "vgg16",
        width_mult: float = 1.0,
        batch_norm: bool = False,
        backbone_weights: str | None = None,
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
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """Build the detector.

        Args:
            num_classes: Classes including background (set from the data by the CLI).
            backbone: Trunk: "vgg16" (the paper's, to conv5_3) or "resnet18/34/50/101" (to conv4_x); stride 16.
            width_mult: Channel multiplier of the trunk (a size knob for tests and CPU configs).
            batch_norm: VGG-16 with BatchNorm (ResNets always have it).
            backbone_weights: Classifier weights (torchvision state dict or lit-models checkpoint) for the trunk;
                VGG-16 with a 4096-wide head also initialises fc6/fc7 from them, as the paper does.
            frozen_layers: First convolutions kept fixed (the paper: 4, VGG's conv1_x and conv2_x, with
                ImageNet weights; 0 when training from scratch).
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
            box_detections_per_img: Most detections kept per image.
            bias_lr_mult: Learning-rate multiplier of biases (Caffe recipes: 2).
            bias_weight_decay: Whether biases are weight-decayed (Caffe recipes: no).
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9).
            lr_scheduler: LR scheduler factory; default none.
        """
        net = FasterRCNNNet(
            num_classes,
            backbone=backbone,
            width_mult=width_mult,
            batch_norm=batch_norm,
            frozen_layers=frozen_layers,
            min_size=min_size,
            max_size=max_size,
            anchor_sizes=tuple(anchor_sizes),
            aspect_ratios=tuple(aspect_ratios),
            rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
            rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
            rpn_batch_size_per_image=rpn_batch_size_per_image,
            roi_pool=roi_pool,
            sampling_ratio=sampling_ratio,
            representation_size=representation_size,
            box_batch_size_per_image=box_batch_size_per_image,
            box_score_thresh=box_score_thresh,
            box_nms_thresh=box_nms_thresh,
            box_detections_per_img=box_detections_per_img,
        )
        if backbone_weights:
            net.load_backbone(backbone_weights)
        super().__init__(net, num_classes, optimizer, lr_scheduler)
        self.bias_lr_mult = bias_lr_mult
        self.bias_weight_decay = bias_weight_decay
