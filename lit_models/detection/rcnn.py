"""``lit_models.RCNN``: a CNN on every warped region proposal, then per-class SVMs and box regressors."""

from __future__ import annotations

from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from lit_models.detection.staged import StagedDetector
from lit_models.nets.backbones import Backbone
from lit_models.nets.rcnn import RCNNNet


class RCNN(StagedDetector):
    """R-CNN (Girshick, Donahue, Darrell & Malik 2014) on selective-search proposals (``data.proposals``).

    Each proposal is warped, with 16 px of context, to the CNN's input size and run through the whole
    classifier trunk; fc7 features feed per-class linear SVMs and pool5 features class-specific box regressors;
    per-class NMS 0.3. Training is the paper's, in stages (:class:`StagedDetector`). Defaults are the paper's
    VGG-16 variant (224-px warps). See :mod:`lit_models.nets.rcnn` for the mechanism and deviations.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: Backbone = "vgg16",
        width_mult: float = 1.0,
        batch_norm: bool = False,
        backbone_weights: str | None = None,
        frozen_layers: int = 0,
        warp_size: int = 224,
        context_padding: int = 16,
        pool_size: int = 7,
        representation_size: int = 4096,
        dropout: float = 0.5,
        rois_per_image: int = 64,
        fg_fraction: float = 0.25,
        fg_iou: float = 0.5,
        svm_neg_iou: float = 0.3,
        box_reg_iou: float = 0.6,
        crop_batch_size: int = 128,
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
            backbone: The CNN: "vgg16" or "resnet18/34/50/101", its whole convolutional part (stride 32).
            width_mult: Channel multiplier of the CNN (a size knob for tests and CPU configs).
            batch_norm: VGG-16 with BatchNorm (ResNets always have it).
            backbone_weights: Classifier weights for the CNN (and VGG-16's fc6/fc7 with a 4096-wide head).
            frozen_layers: First convolutions kept fixed.
            warp_size: Side of the square every proposal is warped to (paper: 227 for AlexNet; VGG: 224).
            context_padding: Pixels of image context around each proposal in the warped frame (paper: 16).
            pool_size: The trunk's output is max-pooled to this grid before fc6 (VGG at 224: 7, its pool5).
            representation_size: Width of fc6 and fc7.
            dropout: Dropout after fc6 and fc7 (0.5).
            rois_per_image: Proposals sampled per image and step (fine-tuning: a quarter foreground; SVMs: the
                negatives).
            fg_fraction: Share of foreground in fine-tuning (paper: 32 of 128).
            fg_iou: IoU from which a proposal is foreground in fine-tuning (0.5).
            svm_neg_iou: A proposal is an SVM negative for a class under this IoU with all its boxes (0.3).
            box_reg_iou: Proposals over this IoU with a box train its class's regressor (0.6).
            crop_batch_size: Warped proposals per CNN forward (memory, not results).
            score_thresh: Detections below this score are dropped.
            nms_thresh: Per-class NMS IoU at test (0.3).
            detections_per_img: Most detections kept per image.
            finetune_epochs: Epochs of softmax fine-tuning before the SVM stage.
            bias_lr_mult: Learning-rate multiplier of biases (Caffe recipes: 2).
            bias_weight_decay: Whether biases are weight-decayed (Caffe recipes: no).
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9).
            lr_scheduler: LR scheduler factory; default none.
        """
        net = RCNNNet(
            num_classes,
            backbone=backbone,
            width_mult=width_mult,
            batch_norm=batch_norm,
            frozen_layers=frozen_layers,
            warp_size=warp_size,
            context_padding=context_padding,
            pool_size=pool_size,
            representation_size=representation_size,
            dropout=dropout,
            rois_per_image=rois_per_image,
            fg_fraction=fg_fraction,
            fg_iou=fg_iou,
            svm_neg_iou=svm_neg_iou,
            box_reg_iou=box_reg_iou,
            crop_batch_size=crop_batch_size,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        if backbone_weights:
            net.load_backbone(backbone_weights)
        super().__init__(net, num_classes, finetune_epochs, optimizer, lr_scheduler)
        self.bias_lr_mult = bias_lr_mult
        self.bias_weight_decay = bias_weight_decay
