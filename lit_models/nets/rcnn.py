"""R-CNN (Girshick, Donahue, Darrell & Malik, CVPR 2014, "Rich feature hierarchies for accurate object detection
and semantic segmentation").

Every region proposal is warped, with ``context_padding`` pixels of image context around it in the warped frame
(Appendix A, "warp" with p = 16), to a fixed ``warp_size`` square and run through the whole CNN; pool5 features
feed fc6/fc7, whose output the per-class linear SVMs score, and class-specific box regressors refine the proposal
from pool5 (Appendix C). Training is the paper's in stages (§2.3): the CNN is fine-tuned with a softmax over
warped proposals (foreground at IoU >= 0.5, the rest background), then frozen while the SVMs (positives: the
ground-truth boxes; negatives: proposals under IoU 0.3 with every box of the class) and the box regressors
(proposals over IoU 0.6) are trained. :mod:`lit_models.nets.region_detector` holds the shared parts and how the
SVM stage is done online.

The warp is ``torchvision.ops.roi_align`` with one bilinear sample per output pixel (``aligned=True``): a bilinear
resize of the window without antialiasing, as the paper's image warp; a window of exactly ``warp_size`` pixels is
copied unchanged. Parts of the window outside the image come back as 0 — in a normalised image the mean colour,
which the paper fills in (Appendix A) — except for the first pixel outside, which repeats the border (RoIAlign's
bilinear clamp).

Deviations from the paper:

* The CNN is a classifier's whole convolutional part (VGG-16's pool5 kept, or a ResNet), then an adaptive
  max pool to ``pool_size`` x ``pool_size`` (identity for VGG-16 at 224 px: exactly pool5). The paper's networks
  are AlexNet at 227 px (its "T-Net") and VGG-16 at 224 ("O-Net").
* The box regressors are trained by SGD in the training loop (region_detector), not by ridge regression over a
  feature cache; the SVMs are mined over one (:mod:`lit_models.detection.svm_mining`), or trained online.
* ``rois_per_image`` windows per image and step (default 64: the paper's 128-window mini-batch with 2 images per
  batch), of which ``fg_fraction`` (a quarter, the paper's 32 of 128) foreground; the paper samples the 128
  uniformly over all images' windows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from lit_models.nets.backbones import Backbone, Trunk
from lit_models.nets.checks import check_args
from lit_models.nets.region_detector import RegionDetectorNet


def context_windows(boxes: Tensor, warp_size: int, padding: int) -> Tensor:
    """R x 4 boxes -> R x 4 windows around them: once a window is warped to ``warp_size``, the box fills all
    but ``padding`` pixels on each side (side s -> s * warp_size / (warp_size - 2 padding), same centre)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # R x 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * (warp_size / (warp_size - 2 * padding))  # R x 2
    return torch.cat([centres - half, centres + half], 1)


def warp(image: Tensor, boxes: Tensor, warp_size: int, padding: int) -> Tensor:
    """3 x H x W image, R x 4 boxes -> R x 3 x warp_size x warp_size crops with context (module docstring)."""
    windows = context_windows(boxes, warp_size, padding)
    return roi_align(image[None], [windows], warp_size, spatial_scale=1.0, sampling_ratio=1, aligned=True)


class RCNNNet(RegionDetectorNet):
    """Warped proposals -> whole CNN -> pool5 -> fc6/fc7 -> SVMs (and softmax for fine-tuning); box regression
    from pool5. Staged training: ``self.stage`` (region_detector)."""

    feature_settings = ("warp_size", "context_padding")

    def __init__(
        self,
        num_classes: int,
        backbone: Backbone = "vgg16",
        width_mult: float = 1.0,
        batch_norm: bool = False,
        warp_size: int = 224,
        context_padding: int = 16,
        pool_size: int = 7,
        crop_batch_size: int = 128,
        **head_args,
    ) -> None:
        """Build the network.

        Args:
            num_classes: Classes including the background (21 for PASCAL VOC).
            backbone: "vgg16" or "resnet18/34/50/101": its whole convolutional part (stride 32).
            width_mult: Channel multiplier of the CNN (a size knob for tests and CPUs).
            batch_norm: VGG-16 with BatchNorm (ResNets always have it).
            warp_size: Side of the square each proposal is warped to (VGG-16: 224; the paper's AlexNet: 227).
            context_padding: Pixels of context around the proposal in the warped frame (paper: 16).
            pool_size: The CNN's output is max-pooled to this square before fc6 (7: VGG-16's pool5 at 224 px).
            crop_batch_size: Warped proposals per CNN forward: bounds the memory of inference, not its results.
            head_args: The head's sampling, training and test settings: :class:`RegionDetectorNet`'s keyword
                arguments (its ``bg_iou`` default, [0, fg_iou), is R-CNN's §2.3: every proposal under the
                foreground IoU is background).
        """
        check_args("RCNNNet", [
            ("warp_size", warp_size, warp_size >= 32, ">= 32 (the CNN's stride)"),
            ("context_padding", context_padding, 0 <= 2 * context_padding < warp_size, "in [0, warp_size / 2)"),
            ("pool_size", pool_size, pool_size >= 1, ">= 1"),
            ("crop_batch_size", crop_batch_size, crop_batch_size >= 1, ">= 1"),
        ])  # fmt: skip
        trunk = Trunk(backbone, width_mult, batch_norm, stride=32)
        super().__init__(
            num_classes, trunk, pooled_size=trunk.out_channels * pool_size**2, scheme="staged", **head_args
        )
        self.warp_size, self.context_padding, self.crop_batch_size = warp_size, context_padding, crop_batch_size
        self.pool = nn.AdaptiveMaxPool2d(pool_size)

    def pooled(self, images: Tensor | list[Tensor], rois: list[Tensor], training: bool = False) -> Tensor:
        """sum(R_i) x C * pool_size^2: pool5 of every warped RoI, ``crop_batch_size`` crops per CNN forward (every
        warp has one size: ``training`` changes nothing)."""
        features = []
        for image, boxes in zip(images, rois, strict=True):
            # A graph being exported warps its proposals at once: their number is known only when it runs.
            for chunk in [boxes] if torch.compiler.is_exporting() else boxes.split(self.crop_batch_size):
                if chunk.shape[0]:  # not len(): a symbol in a graph being exported
                    crops = warp(image, chunk, self.warp_size, self.context_padding)  # B x 3 x 224 x 224
                    features.append(self.pool(self.trunk(crops)).flatten(1))  # B x 512*7*7
        if not features:
            return images[0].new_zeros(0, self.pooled_size)
        return torch.cat(features)
