"""``lit_models.FastRCNN``: RoI pooling from one shared feature map, softmax and box regression trained jointly."""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from lit_models.detection.base import Detector
from lit_models.nets.backbones import Backbone
from lit_models.nets.fast_rcnn import FastRCNNNet


class FastRCNN(Detector):
    """Fast R-CNN (Girshick 2015) on selective-search proposals (``data.proposals``).

    Defaults are the paper's VGG-16 model: RoI max pooling to 7 x 7 from conv5_3, fc6/fc7 of 4096 with dropout,
    sibling (K+1)-way softmax and class-specific box regressors trained jointly (smooth L1, lambda = 1), 64 RoIs
    per image of which 25 % foreground (IoU >= 0.5; background [0.1, 0.5)), per-class NMS 0.3 at test. The
    paper's mini-batch is 2 images (``data.batch_size: 2``). See :mod:`lit_models.nets.fast_rcnn` for deviations.
    """

    uses_proposals = True

    def __init__(
        self,
        num_classes: int = 21,
        backbone: Backbone = "vgg16",
        width_mult: float = 1.0,
        batch_norm: bool = False,
        backbone_weights: str | None = None,
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
        svd_ranks: tuple[int, int] | None = None,
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
            backbone_weights: Classifier weights for the trunk (and VGG-16's fc6/fc7 with a 4096-wide head).
            frozen_layers: First convolutions kept fixed (the paper: VGG's conv1_x and conv2_x, 4).
            min_size: The image's shorter side before the trunk (the paper: 600); None: as given.
            max_size: Cap on the image's longer side (the paper: 1000).
            roi_pool: "pool" (RoI max pooling, the paper) or "align" (RoIAlign).
            pool_size: The RoI grid (7: VGG-16's pool5 size, so fc6 fits it).
            sampling_ratio: RoIAlign's bilinear samples per bin side.
            representation_size: Width of fc6 and fc7.
            dropout: Dropout after fc6 and fc7 (0.5).
            rois_per_image: RoIs sampled per image and step (64).
            fg_fraction: Share of foreground among them (0.25).
            fg_iou: IoU with a ground-truth box from which a proposal is foreground (0.5).
            bg_iou: IoU range [low, high) of background proposals ((0.1, 0.5)); others are not sampled.
            box_loss_weight: lambda, the weight of the box regression loss (1).
            score_thresh: Detections below this score are dropped.
            nms_thresh: Per-class NMS IoU at test (0.3).
            detections_per_img: Most detections kept per image.
            svd_ranks: Test and predict with fc6 and fc7 replaced by their truncated SVDs of these ranks (§3.1; the
                paper: 1024 and 256 for VGG-16's 4096-wide layers); None uses them as trained. Validation during
                training always uses the trained layers.
            bias_lr_mult: Learning-rate multiplier of biases (Caffe recipes: 2).
            bias_weight_decay: Whether biases are weight-decayed (Caffe recipes: no).
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9).
            lr_scheduler: LR scheduler factory; default none.
        """
        net = FastRCNNNet(
            num_classes,
            backbone=backbone,
            width_mult=width_mult,
            batch_norm=batch_norm,
            frozen_layers=frozen_layers,
            min_size=min_size,
            max_size=max_size,
            roi_pool=roi_pool,
            pool_size=pool_size,
            sampling_ratio=sampling_ratio,
            representation_size=representation_size,
            dropout=dropout,
            rois_per_image=rois_per_image,
            fg_fraction=fg_fraction,
            fg_iou=fg_iou,
            bg_iou=tuple(bg_iou),
            box_loss_weight=box_loss_weight,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        if backbone_weights:
            net.load_backbone(backbone_weights)
        super().__init__(net, num_classes, optimizer, lr_scheduler)
        if svd_ranks is not None and (len(svd_ranks) != 2 or min(svd_ranks) < 1):
            raise ValueError(f"svd_ranks must be two ranks >= 1 (fc6, fc7) or null, got {svd_ranks}")
        self.svd_ranks = tuple(svd_ranks) if svd_ranks else None
        self.bias_lr_mult = bias_lr_mult
        self.bias_weight_decay = bias_weight_decay

    # Test and predict detect with the truncated head; at their end, or when they raise, fc6/fc7 are back.
    def on_test_start(self) -> None:
        self.net.truncate_head(self.svd_ranks)

    def on_test_end(self) -> None:
        self.net.truncate_head(None)

    on_predict_start = on_test_start
    on_predict_end = on_test_end

    def configure_callbacks(self) -> list:
        return [*super().configure_callbacks(), FullHeadAfterErrors()]


class FullHeadAfterErrors(Callback):
    """Restores Fast R-CNN's fc6/fc7 when a run stops with an exception (``on_test_end`` is then never called)."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        pl_module.net.truncate_head(None)
