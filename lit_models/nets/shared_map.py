"""What SPPNet and Fast R-CNN share beyond :mod:`lit_models.nets.region_detector`: the trunk runs once per image, at
the papers' scale, and every RoI is pooled from its image's stride-16 map.

The scale: both papers resize each image so that its shorter side is ``min_size`` pixels (SPPNet §4: s = 688;
Fast R-CNN §3 and 4: 600, the longer side capped at 1000 by ``max_size``) before the trunk, and project the
proposals, given in the image's own pixels, onto the map with the same factor. ``min_size=None`` runs the trunk on
the image as given. The resize is bilinear (``torch.nn.functional.interpolate``), as torchvision's detection
transform resizes. Enlarging matters: RoI max pooling reads whole cells, so on a small image's map many proposals
fall on the same cells and get the same features.

Multi-scale training (``train_scales``): "we randomly sample a pyramid scale each time an image is sampled,
following [SPPnet], as a form of data augmentation" (Fast R-CNN §2.4), from SPPNet's five shorter sides {480,
576, 688, 864, 1200} (SPPNet §4, Fast R-CNN §5.2, the longer side capped at 2000: ``max_size``). Here the scale is
drawn where the CNN is trained (the softmax and joint losses), for each image every time it is seen. Test, and the
stages that train on frozen features (the staged SVMs and box regressors, whose features must be the test's),
use ``min_size``: the papers' single-scale test. The papers' multi-scale test (each proposal pooled at the pyramid
scale where it is closest to 224 x 224 pixels) is not offered.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_models.nets.backbones import Trunk
from lit_models.nets.checks import check_args
from lit_models.nets.region_detector import RegionDetectorNet, image_sizes
from lit_models.nets.roi_pooling import roi_pool_windows


def input_scale(size: tuple[int, int], min_size: int | None, max_size: int | None) -> float:
    """The factor that brings an H x W image's shorter side to ``min_size`` without its longer side passing
    ``max_size`` (1 without ``min_size``)."""
    if min_size is None:
        return 1.0
    scale = min_size / min(size)
    if max_size is not None and max(size) * scale > max_size:
        scale = max_size / max(size)
    return scale


class SharedMapNet(RegionDetectorNet):
    """A region detector whose RoIs are pooled from one feature map per image (:meth:`pool_rois`, by the
    subclass), computed at the image's ``min_size``/``max_size`` scale."""

    feature_settings = ("min_size", "max_size")

    def __init__(
        self,
        num_classes: int,
        trunk: Trunk,
        pooled_size: int,
        scheme: Literal["joint", "staged"],
        *,
        min_size: int | None,
        max_size: int | None,
        quantised: bool,
        train_scales: Sequence[int] | None = None,
        **head_args,
    ) -> None:
        """``min_size``/``max_size``: the shorter-side target and the longer-side cap of the resize (module
        docstring); ``train_scales``: the shorter sides drawn from in training (module docstring), None trains at
        ``min_size``; ``quantised``: whether the pooling reads whole cells (RoI max pooling), so that proposals on
        the same cells share their features. The rest goes to :class:`RegionDetectorNet`, written out rather than
        passed as ``*args`` so that jsonargparse can tell which of its arguments the subclasses set."""
        scales = tuple(train_scales or ())
        check_args(type(self).__name__, [
            ("min_size", min_size, min_size is None or min_size >= 1, ">= 1 pixels or null (the image as given)"),
            ("max_size", max_size, max_size is None or max_size >= (min_size or 1),
             f"null or >= min_size ({min_size})"),
            ("train_scales", train_scales, all(1 <= int(side) <= (max_size or int(side)) for side in scales),
             f"null or shorter sides in [1, max_size ({max_size})]: raise max_size (Fast R-CNN caps the longer "
             "side at 2000 in multi-scale training)"),
        ])  # fmt: skip
        super().__init__(num_classes, trunk, pooled_size, scheme, **head_args)
        self.min_size, self.max_size, self.quantised = min_size, max_size, quantised
        self.train_scales = tuple(int(side) for side in scales)

    @abstractmethod
    def pool_rois(self, features: Tensor, boxes: Tensor, spatial_scale: float) -> Tensor:
        """One image's C x h x w map and R x 4 RoIs (image pixels; ``spatial_scale`` maps them onto the map) ->
        R x D_pool."""

    def spatial_scale(self, size: tuple[int, int]) -> float:
        """Image pixels -> feature-map cells, for an image of this H x W at the test scale."""
        return input_scale(size, self.min_size, self.max_size) / self.trunk.stride

    def image_scales(self, sizes: list[tuple[int, int]], training: bool = False) -> list[float]:
        """Each image's resize factor: a shorter side drawn from ``train_scales`` for each image in training, else
        ``min_size``'s."""
        if not (training and self.train_scales):
            return [input_scale(size, self.min_size, self.max_size) for size in sizes]
        drawn = torch.randint(len(self.train_scales), (len(sizes),)).tolist()
        return [input_scale(size, self.train_scales[i], self.max_size) for size, i in zip(sizes, drawn, strict=True)]

    def trunk_maps(self, images: Tensor | list[Tensor], scales: list[float] | None = None) -> list[Tensor]:
        """The trunk once per image, resized by its factor (default: the test scale's) -> C x h x w maps; one
        batched pass when the images share a size and a factor."""
        sizes = image_sizes(images)
        scales = self.image_scales(sizes) if scales is None else scales
        if len(set(zip(sizes, scales, strict=True))) == 1:
            batch = images if isinstance(images, Tensor) else torch.stack(images)
            return list(self.trunk(self.resize(batch, sizes[0], scales[0])))
        return [
            self.trunk(self.resize(image[None], size, scale))[0]
            for image, size, scale in zip(images, sizes, scales, strict=True)
        ]

    def resize(self, batch: Tensor, size: tuple[int, int], scale: float) -> Tensor:
        if scale == 1.0:
            return batch
        target = (round(size[0] * scale), round(size[1] * scale))
        return F.interpolate(batch, size=target, mode="bilinear", align_corners=False)

    def pooled(self, images: Tensor | list[Tensor], rois: list[Tensor], training: bool = False) -> Tensor:
        """sum(R_i) x D_pool: each RoI pooled from its image's map, at a drawn training scale (``training``) or the
        test scale."""
        scales = self.image_scales(image_sizes(images), training)
        return self.pool_features(self.trunk_maps(images, scales), rois, image_sizes(images), scales)

    def pool_features(
        self, maps: list[Tensor], rois: list[Tensor], sizes: list[tuple[int, int]], scales: list[float] | None = None
    ) -> Tensor:
        """The RoIs' pooled features from the trunk's maps of images of these sizes, resized by these factors
        (default: the test scale's), image by image."""
        scales = self.image_scales(sizes) if scales is None else scales
        pooled = [
            self.pool_rois(features, boxes, scale / self.trunk.stride)
            for features, boxes, scale in zip(maps, rois, scales, strict=True)
        ]
        # One image (every test image at batch 1) needs no copy: ~2,000 windows' features are 10-20 MB.
        return pooled[0] if len(pooled) == 1 else torch.cat(pooled)

    def pooling_windows(self, rois: Tensor, size: tuple[int, int]) -> Tensor | None:
        """RoI max pooling reads only the rounded cells of each RoI (:func:`roi_pool_windows`)."""
        return roi_pool_windows(rois, self.spatial_scale(size)) if self.quantised else None
