"""``lit_models.SPPNet``: convolutional features once per image, each proposal's window pooled by a pyramid."""

from __future__ import annotations

from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from lit_models.detection.staged import StagedDetector
from lit_models.nets.backbones import Backbone
from lit_models.nets.sppnet import SPPNetNet


class SPPNet(StagedDetector):
    """SPPNet for detection (He, Zhang, Ren & Sun 2014, §4) on selective-search proposals (``data.proposals``).

    The trunk runs once per image, of any size; each proposal's window on the conv5 map is max-pooled into a
    spatial pyramid (the paper's 6x6, 3x3, 2x2 and 1x1 bins) whose concatenation feeds fc6/fc7, then per-class
    SVMs and box regressors trained as R-CNN's (:class:`StagedDetector`). See :mod:`lit_models.nets.sppnet`.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: Backbone = "vgg16",
        width_mult: float = 1.0,
        batch_norm: bool = False,
        backbone_weights: str | None = None,
        frozen_layers: int = 0,
        min_size: int | None = 688,
        max_size: int | None = None,
        pyramid_levels: tuple[int, ...] = (6, 3, 2, 1),
        representation_size: int = 4096,
        dropout: float = 0.5,
        rois_per_image: int = 64,
        fg_fraction: float = 0.25,
        fg_iou: float = 0.5,
        svm_neg_iou: float = 0.3,
        box_reg_iou: float = 0.6,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.3,
        detections_per_img: int = 100,
        finetune_epochs: int = 10,
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """Build the detector.

        Args:
            num_classes: Classes including background (set from the data by the CLI).
            backbone: Trunk: "vgg16" (to conv5_3) or "resnet18/34/50/101" (to conv4_x); stride 16.
            width_mult: Channel multiplier of the trunk (a size knob for tests and CPU configs).
            batch_norm: VGG-16 with BatchNorm (ResNets always have it).
            backbone_weights: Classifier weights for the trunk.
            frozen_layers: First convolutions kept fixed (the paper fine-tunes only the fully connected layers).
            min_size: The image's shorter side before the trunk (the paper's single scale s = 688); None: as given.
            max_size: Cap on the image's longer side (None: no cap, as the paper).
            pyramid_levels: Bins per side of each pyramid level (paper: 6, 3, 2, 1 = 50 bins).
            representation_size: Width of fc6 and fc7.
            dropout: Dropout after fc6 and fc7 (0.5).
            rois_per_image: Proposals sampled per image and step.
            fg_fraction: Share of foreground in fine-tuning (0.25).
            fg_iou: IoU from which a proposal is foreground in fine-tuning (0.5).
            svm_neg_iou: A proposal is an SVM negative for a class under this IoU with all its boxes (0.3).
            box_reg_iou: Proposals over this IoU with a box train its class's regressor (0.6).
            score_thresh: Detections below this score are dropped.
            nms_thresh: Per-class NMS IoU at test (0.3).
            detections_per_img: Most detections kept per image.
            finetune_epochs: Epochs of softmax fine-tuning before the SVM stage.
            bias_lr_mult: Learning-rate multiplier of biases (Caffe recipes: 2).
            bias_weight_decay: Whether biases are weight-decayed (Caffe recipes: no).
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9).
            lr_scheduler: LR scheduler factory; default none.
        """
        net = SPPNetNet(
            num_classes,
            backbone=backbone,
            width_mult=width_mult,
            batch_norm=batch_norm,
            frozen_layers=frozen_layers,
            min_size=min_size,
            max_size=max_size,
            pyramid_levels=tuple(pyramid_levels),
            representation_size=representation_size,
            dropout=dropout,
            rois_per_image=rois_per_image,
            fg_fraction=fg_fraction,
            fg_iou=fg_iou,
            svm_neg_iou=svm_neg_iou,
            box_reg_iou=box_reg_iou,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        if backbone_weights:
            net.load_backbone(backbone_weights)
        super().__init__(net, num_classes, finetune_epochs, optimizer, lr_scheduler)
        self.bias_lr_mult = bias_lr_mult
        self.bias_weight_decay = bias_weight_decay
