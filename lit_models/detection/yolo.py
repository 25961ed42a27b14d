"""``lit_models.YOLOv1``: the single-shot grid detector on the Detector loop."""

from __future__ import annotations

from typing import Any, Literal

from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from lit_models.detection.base import Detector
from lit_models.nets.yolo import YOLOv1Net


class YOLOv1(Detector):
    """YOLO v1 (Redmon et al. 2016): one network maps the image to an S x S grid of B boxes and C class scores.

    Defaults are the paper's (448 x 448 input, S = 7, B = 2, its 24-layer network with a 4096-wide fully connected
    layer, lambda_coord = 5, lambda_noobj = 0.5). The input size is fixed: on the command line a DetectionDataModule
    without an ``image_size`` of its own takes the model's; from Python set ``data.image_size`` to the same. See
    :mod:`lit_models.nets.yolo` for the loss, the decoding and the deviations.
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: Literal["darknet", "vgg16", "resnet18", "resnet34", "resnet50", "resnet101"] = "darknet",
        width_mult: float = 1.0,
        batch_norm: bool = False,
        backbone_weights: str | None = None,
        image_size: int = 448,
        grid_size: int = 7,
        boxes_per_cell: int = 2,
        head_channels: int = 1024,
        head_stride: int = 2,
        head: Literal["fc", "conv"] = "fc",
        backbone_stride: int = 32,
        hidden: int = 4096,
        dropout: float = 0.5,
        lambda_coord: float = 5.0,
        lambda_noobj: float = 0.5,
        rescore: bool = True,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.5,
        max_detections: int = 100,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """Build the detector.

        Args:
            num_classes: Classes including background (set from the data by the CLI); the grid predicts the
                num_classes - 1 foreground classes.
            backbone: "darknet" (the paper's first 20 convolutions) or a classifier: "vgg16", "resnet18/34/50/101".
            width_mult: Channel multiplier of the backbone and the detection convolutions.
            batch_norm: BatchNorm after every convolution (a YOLOv2 addition; ResNets always have it).
            backbone_weights: Weights of a classifier, for its trunk (torchvision state dict or lit-models checkpoint).
            image_size: The fixed square input side (paper: 448); data.image_size must equal it (the CLI sets it).
            grid_size: S, cells per side (paper: 7).
            boxes_per_cell: B, boxes predicted per cell (paper: 2).
            head_channels: Width of the four detection convolutions (paper: 1024), times width_mult.
            head_stride: Stride of the second of them (paper: 2, 448 -> 7 x 7); 1 keeps the resolution of small inputs.
            head: "fc" (the paper's fully connected layers) or "conv" (a 1x1 convolution per cell of an S x S feature
                map; trains from scratch where the fully connected head does not, see lit_models.nets.yolo).
            backbone_stride: 32, or 16 for a classifier trunk cut at conv4_x / conv5_3.
            hidden: Width of the first fully connected layer (paper: 4096).
            dropout: Dropout after it (paper: 0.5).
            lambda_coord: Weight of the box coordinate errors (paper: 5).
            lambda_noobj: Weight of the confidence error of boxes without an object (paper: 0.5).
            rescore: Train confidences towards the IoU with the truth (paper) instead of 1.
            score_threshold: Class-specific confidences below this are dropped at decoding.
            nms_threshold: IoU of the per-class NMS at decoding.
            max_detections: Most detections kept per image.
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9).
            lr_scheduler: LR scheduler factory; default none.
        """
        net = YOLOv1Net(
            num_classes,
            backbone=backbone,
            width_mult=width_mult,
            batch_norm=batch_norm,
            image_size=image_size,
            grid_size=grid_size,
            boxes_per_cell=boxes_per_cell,
            head_channels=head_channels,
            head_stride=head_stride,
            head=head,
            backbone_stride=backbone_stride,
            hidden=hidden,
            dropout=dropout,
            lambda_coord=lambda_coord,
            lambda_noobj=lambda_noobj,
            rescore=rescore,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            max_detections=max_detections,
        )
        if backbone_weights:
            if backbone == "darknet":
                raise ValueError("backbone_weights loads classifier weights; use a vgg16 or resnet backbone")
            net.backbone.load_classifier_weights(backbone_weights)
        super().__init__(net, num_classes, optimizer, lr_scheduler)

    @classmethod
    def data_arguments(cls, model_args: dict[str, Any], data_args: dict[str, Any]) -> dict[str, Any]:
        """The data resizes to the model's input side when it sets no size of its own (the CLI's default)."""
        found = super().data_arguments(model_args, data_args)
        if "image_size" not in data_args:
            return found
        if data_args["image_size"] is None:
            return {**found, "image_size": model_args["image_size"]}
        check_input_size(model_args["image_size"], data_args["image_size"])
        return found

    def check_data(self, datamodule: Any) -> None:
        super().check_data(datamodule)
        if "image_size" in datamodule.hparams:
            check_input_size(self.hparams.image_size, datamodule.hparams["image_size"])


def check_input_size(model_size: int, data_size: int | None) -> None:
    if data_size != model_size:
        given = "null (each image keeps its size)" if data_size is None else data_size
        raise ValueError(
            f"data.image_size is {given} but model.image_size is {model_size}: YOLO v1's grid and fully connected "
            f"head take one input size. Set --data.image_size {model_size}, or both to another size."
        )
