"""SPPNet for detection (He, Zhang, Ren & Sun, ECCV 2014, "Spatial Pyramid Pooling in Deep Convolutional Networks
for Visual Recognition", §4).

The convolutional layers run once per image, of any size (resized to the paper's scale,
:mod:`lit_models.nets.shared_map`); each proposal's window on the conv5 map is max-pooled by a spatial pyramid of
n x n bins for n in ``pyramid_levels`` (the paper's detection pyramid {6x6, 3x3, 2x2, 1x1}: 50 bins), and the
concatenated C * sum(n^2) vector feeds fc6/fc7. A level is ``torchvision.ops.roi_pool``: RoI max pooling into n x n
bins of the window is one level of spatial pyramid pooling. A level whose bins are unions of a finer level's (n
divides the finer m, and m / n is a power of two) is instead the max over those bins: the same values, exactly,
because the trunk's maps end in a ReLU (roi_pool gives an empty bin 0, which a max with non-negative cells keeps)
and because roi_pool's bin edges, floor(i * h / m) and ceil((i + 1) * h / m), are then the same floats. It saves
most of the pooling at test: {4, 2, 1} costs one roi_pool instead of three.

Training follows R-CNN's stages, as the paper does (fine-tuning, then SVMs on fc7 and box regression on the pooled
conv5 features); :mod:`lit_models.nets.region_detector` holds them.

Deviations from the paper:

* Window projection: the paper maps a window's corners to the feature map as floor(x/S) + 1 (left/top) and
  ceil(x/S) - 1 (right/bottom), S the stride; ``roi_pool`` rounds both corners (round(x/S)), so a window can
  cover one more cell on each side.
* The paper fine-tunes only the fully connected layers (its conv layers are the pretrained ZF-5's, fixed);
  here ``frozen_layers`` decides (freezing every convolution gives the paper's).
* Tested at one scale by default: the image resized to a shorter side of ``min_size`` (the paper's single-scale
  s = 688; :mod:`lit_models.nets.shared_map`). ``test_scales`` (the paper's five: 480, 576, 688, 864, 1200) is its
  multi-scale feature extraction (§4.1): each window pooled at the scale where it is closest to 224 x 224 pixels;
  the SVMs and box regressors then train on those features too. ``train_scales`` (the same five) draws each
  training image's scale from them while the CNN is fine-tuned, the scheme Fast R-CNN §2.4 describes as SPPnet's.
* The trunk is a classifier cut at stride 16 (VGG-16's conv5_3, without pool5, or ResNet's conv4_x); the
  paper's is ZF-5. The paper's pyramid gives fc6 a C * 50 input, not VGG-16's 512 * 7 * 7, so
  :meth:`~lit_models.nets.region_detector.RegionDetectorNet.load_backbone_weights` copies VGG's fc6/fc7 only for a
  pyramid of 49 bins (``pyramid_levels=(7,)``).
* The SVMs are R-CNN's, mined over cached features (:mod:`lit_models.detection.svm_mining`) or trained online;
  box regressors by SGD (see region_detector); RoIs are sampled per image (64, a quarter foreground at IoU >= 0.5
  for fine-tuning).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_models.nets.backbones import Backbone, Trunk
from lit_models.nets.checks import check_args
from lit_models.nets.roi_pooling import roi_pool
from lit_models.nets.shared_map import SharedMapNet


class SPPNetNet(SharedMapNet):
    """Trunk once per image -> spatial pyramid pooling of each window -> fc6/fc7 -> SVMs (softmax for
    fine-tuning); box regression from the pooled features. Staged training: ``self.stage``."""

    feature_settings = (*SharedMapNet.feature_settings, "pyramid_levels")

    def __init__(
        self,
        num_classes: int,
        backbone: Backbone = "vgg16",
        width_mult: float = 1.0,
        batch_norm: bool = False,
        min_size: int | None = 688,
        max_size: int | None = None,
        train_scales: list[int] | None = None,
        pyramid_levels: tuple[int, ...] = (6, 3, 2, 1),
        **head_args,
    ) -> None:
        """Build the network.

        Args:
            num_classes: Classes including the background (21 for PASCAL VOC).
            backbone: "vgg16" (to conv5_3) or "resnet18/34/50/101" (to conv4_x): stride 16.
            width_mult: Channel multiplier of the trunk (a size knob for tests and CPUs).
            batch_norm: VGG-16 with BatchNorm (ResNets always have it).
            min_size: The image's shorter side before the trunk (the paper's s = 688); None: as given.
            max_size: Cap on the longer side (the paper has none: None).
            train_scales: Multi-scale fine-tuning: each training image's shorter side drawn from these, every time
                it is seen ([480, 576, 688, 864, 1200]: the paper's five); test and the SVM stage use ``min_size``.
                None: fine-tune at ``min_size``.
            pyramid_levels: Bins per side of each pyramid level ((6, 3, 2, 1): the paper's 50 bins).
            head_args: The multi-scale test (``test_scales``, ``test_window``: the paper's 5 scales, §4.1) of
                :class:`~lit_models.nets.shared_map.SharedMapNet`, and the head's sampling, training and test
                settings: the keyword arguments of :class:`~lit_models.nets.region_detector.RegionDetectorNet` (its
                ``bg_iou`` default, [0, fg_iou), is R-CNN's, which the paper follows).
        """
        levels = tuple(pyramid_levels)
        check_args("SPPNetNet", [
            ("pyramid_levels", pyramid_levels, len(levels) > 0 and all(int(n) >= 1 for n in levels),
             "a non-empty sequence of bin counts >= 1"),
        ])  # fmt: skip
        trunk = Trunk(backbone, width_mult, batch_norm, stride=16)
        super().__init__(
            num_classes,
            trunk,
            pooled_size=trunk.out_channels * sum(int(n) ** 2 for n in levels),  # 256 * 50 for ZF-5
            scheme="staged",
            min_size=min_size,
            max_size=max_size,
            train_scales=train_scales,
            quantised=True,  # every pyramid level max-pools the RoI's rounded cells (§2.3's window on the map)
            **head_args,
        )
        self.pyramid_levels = tuple(int(n) for n in levels)
        self.level_sources = nested_levels(self.pyramid_levels)

    def pool_rois(self, features: Tensor, boxes: Tensor, spatial_scale: float) -> Tensor:
        """R x C * sum(n^2): each window's pyramid, level after level (C * (36 + 9 + 4 + 1) for the paper's)."""
        grids: dict[int, Tensor] = {}  # n -> R x C x n x n
        for n in sorted(set(self.pyramid_levels), reverse=True):
            finer = self.level_sources[n]
            if finer is None:
                grids[n] = roi_pool(features[None], [boxes], n, spatial_scale)
            else:  # the max over the finer level's bins that make up each bin (module docstring)
                grids[n] = halve_until(grids[finer], n)
        return torch.cat([grids[n].flatten(1) for n in self.pyramid_levels], 1)


def halve_until(grid: Tensor, n: int) -> Tensor:
    """R x C x m x m bins -> R x C x n x n (m / n a power of two): the max of each 2 x 2 block, repeated.

    Two elementwise maxima (neighbouring rows, then columns) per halving: on CPU, ``F.max_pool2d`` over R x C tiny
    planes took ~9x as long (7.7 against 0.85 ms for 1,204 windows x 128 channels of 4 x 4 bins), which made it
    a third of SPPNet's pooling time."""
    while grid.shape[-1] > n:
        grid = torch.maximum(grid[..., 0::2, :], grid[..., 1::2, :])
        grid = torch.maximum(grid[..., 0::2], grid[..., 1::2])
    return grid


def nested_levels(levels: tuple[int, ...]) -> dict[int, int | None]:
    """For each pyramid level n, a finer level m it can be max-pooled from exactly (m = n * 2^j, j >= 1), or None
    where it needs its own roi_pool."""
    sources: dict[int, int | None] = {}
    for n in sorted(set(levels), reverse=True):
        finer = [m for m in sources if m % n == 0 and (m // n) & (m // n - 1) == 0]
        sources[n] = min(finer) if finer else None
    return sources
