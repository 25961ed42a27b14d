"""What SPPNet and Fast R-CNN share beyond :mod:`lit_models.nets.region_detector`: the trunk runs once per image, at
the papers' single scale, and every RoI is pooled from its image's stride-16 map.

The scale: both papers resize each image so that its shorter side is ``min_size`` pixels (SPPNet §4: s = 688;
Fast R-CNN §3 and 4: 600, the longer side capped at 1000 by ``max_size``) before the trunk, and project the
proposals, given in the image's own pixels, onto the map with the same factor. ``min_size=None`` runs the trunk on
the image as given. The resize is bilinear (``torch.nn.functional.interpolate``), as torchvision's detection
transform resizes. Enlarging matters: RoI max pooling reads whole cells, so on a small image's map many proposals
fall on the same cells and get the same features.
"""

from __future__ import annotations

from abc import abstractmethod
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
        **head_args,
    ) -> None:
        """``min_size``/``max_size``: the shorter-side target and the longer-side cap of the resize (module
        docstring); ``quantised``: whether the pooling reads whole cells (RoI max pooling), so that proposals on
        the same cells share their features. The rest goes to :class:`RegionDetectorNet`, written out rather than
        passed as ``*args`` so that jsonargparse can tell which of its arguments the subclasses set."""
        check_args(type(self).__name__, [
            ("min_size", min_size, min_size is None or min_size >= 1, ">= 1 pixels or null (the image as given)"),
            ("max_size", max_size, max_size is None or max_size >= (min_size or 1),
             f"null or >= min_size ({min_size})"),
        ])  # fmt: skip
        super().__init__(num_classes, trunk, pooled_size, scheme, **head_args)
        self.min_size, self.max_size, self.quantised = min_size, max_size, quantised

    @abstractmethod
    def pool_rois(self, features: Tensor, boxes: Tensor, spatial_scale: float) -> Tensor:
        """One image's C x h x w map and R x 4 RoIs (image pixels; ``spatial_scale`` maps them onto the map) ->
        R x D_pool."""

    def spatial_scale(self, size: tuple[int, int]) -> float:
        """Image pixels -> feature-map cells, for an image of this H x W."""
        return input_scale(size, self.min_size, self.max_size) / self.trunk.stride

    def trunk_maps(self, images: Tensor | list[Tensor]) -> list[Tensor]:
        """The trunk once per image, resized to the net's scale -> C x h x w maps; one batched pass when the images
        share a size."""
        sizes = image_sizes(images)
        if len(set(sizes)) == 1:
            batch = images if isinstance(images, Tensor) else torch.stack(images)
            return list(self.trunk(self.resize(batch, sizes[0])))
        return [self.trunk(self.resize(image[None], size))[0] for image, size in zip(images, sizes, strict=True)]

    def resize(self, batch: Tensor, size: tuple[int, int]) -> Tensor:
        scale = input_scale(size, self.min_size, self.max_size)
        if scale == 1.0:
            return batch
        target = (round(size[0] * scale), round(size[1] * scale))
        return F.interpolate(batch, size=target, mode="bilinear", align_corners=False)

    def pooled(self, images: Tensor | list[Tensor], rois: list[Tensor]) -> Tensor:
        """sum(R_i) x D_pool: each RoI pooled from its image's map."""
        return self.pool_features(self.trunk_maps(images), rois, image_sizes(images))

    def pool_features(self, maps: list[Tensor], rois: list[Tensor], sizes: list[tuple[int, int]]) -> Tensor:
        """The RoIs' pooled features from the trunk's maps of images of these sizes, image by image."""
        pooled = [
            self.pool_rois(features, boxes, self.spatial_scale(size))
            for features, boxes, size in zip(maps, rois, sizes, strict=True)
        ]
        # One image (every test image at batch 1) needs no copy: ~2,000 windows' features are 10-20 MB.
        return pooled[0] if len(pooled) == 1 else torch.cat(pooled)

    def pooling_windows(self, rois: Tensor, size: tuple[int, int]) -> Tensor | None:
        """RoI max pooling reads only the rounded cells of each RoI (:func:`roi_pool_windows`)."""
        return roi_pool_windows(rois, self.spatial_scale(size)) if self.quantised else None
