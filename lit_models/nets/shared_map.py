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
drawn where the CNN is trained (the softmax and joint losses), for each image every time it is seen.

Multi-scale test (``test_scales``): the trunk runs on the image resized to each shorter side of the list, and each
proposal is pooled from the one map where its window, scaled, "has a number of pixels closest to 224 x 224"
(SPPNet §4.1, "multi-scale feature extraction"; Fast R-CNN §2.4 and §5.2 test over the same image pyramid "to
approximately scale-normalize each object proposal"). A map is computed only at the scales some proposal of the
image is pooled at. Without ``test_scales``, test runs at ``min_size``: the papers' single-scale test. Whatever
the scales, the stages that train on frozen features (the staged SVMs and box regressors) see the test's features.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from itertools import accumulate
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_area

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
    subclass), computed at the image's ``min_size``/``max_size`` scale, or at test from the map of the
    ``test_scales`` pyramid chosen for each RoI."""

    feature_settings = ("min_size", "max_size", "test_scales", "test_window")

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
        test_scales: Sequence[int] | None = None,
        test_window: int = 224,
        **head_args,
    ) -> None:
        """``min_size``/``max_size``: the shorter-side target and the longer-side cap of the resize (module
        docstring); ``train_scales``: the shorter sides drawn from in training (module docstring), None trains at
        ``min_size``; ``quantised``: whether the pooling reads whole cells (RoI max pooling), so that proposals on
        the same cells share their features. The rest goes to :class:`RegionDetectorNet`, written out rather than
        passed as ``*args`` so that jsonargparse can tell which of its arguments the subclasses set.

        Args:
            test_scales: Multi-scale test: the shorter sides of the image pyramid (SPPNet §4.1 and Fast R-CNN §5.2:
                [480, 576, 688, 864, 1200], with Fast R-CNN's ``max_size`` 2000), each proposal pooled at the one
                where its window is closest to ``test_window`` x ``test_window`` pixels; also the features the
                staged SVMs and box regressors train on. None: test at ``min_size``, one scale.
            test_window: Multi-scale test: the window side of that rule (224: the papers'; it is also the input
                side of their ImageNet networks, so scale it with the images for smaller data).
        """
        scales, tests = tuple(train_scales or ()), tuple(test_scales or ())
        check_args(type(self).__name__, [
            ("min_size", min_size, min_size is None or min_size >= 1, ">= 1 pixels or null (the image as given)"),
            ("max_size", max_size, max_size is None or max_size >= (min_size or 1),
             f"null or >= min_size ({min_size})"),
            ("train_scales", train_scales, all(1 <= int(side) <= (max_size or int(side)) for side in scales),
             f"null or shorter sides in [1, max_size ({max_size})]: raise max_size (Fast R-CNN caps the longer "
             "side at 2000 in multi-scale training)"),
            ("test_scales", test_scales, all(1 <= int(side) <= (max_size or int(side)) for side in tests),
             f"null or shorter sides in [1, max_size ({max_size})]: raise max_size (Fast R-CNN's test pyramid caps "
             "the longer side at 2000)"),
            ("test_window", test_window, test_window >= 1, ">= 1 pixels"),
        ])  # fmt: skip
        super().__init__(num_classes, trunk, pooled_size, scheme, **head_args)
        self.min_size, self.max_size, self.quantised = min_size, max_size, quantised
        self.train_scales = tuple(int(side) for side in scales)
        self.test_scales, self.test_window = tuple(int(side) for side in tests), test_window

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
        test scale (the scale chosen for it from ``test_scales``, where they are given)."""
        if self.test_scales and not training:
            return self.pyramid_pooled(images, rois)
        scales = self.image_scales(image_sizes(images), training)
        return self.pool_features(self.trunk_maps(images, scales), rois, image_sizes(images), scales)

    def test_factors(self, size: tuple[int, int]) -> list[float]:
        """The resize factor of each ``test_scales`` side for an H x W image."""
        return [input_scale(size, side, self.max_size) for side in self.test_scales]

    def scale_choice(self, rois: Tensor, size: tuple[int, int]) -> Tensor:
        """R: for each RoI of an H x W image, the index in ``test_scales`` of the scale it is pooled at: the one
        where its scaled area is closest to ``test_window``^2 pixels (SPPNet §4.1; the first of a tie)."""
        factors = torch.tensor(self.test_factors(size), dtype=rois.dtype, device=rois.device)
        areas = box_area(rois)[:, None] * factors**2  # R x S
        return (areas - self.test_window**2).abs().argmin(1)

    def pyramid_pooled(self, images: Tensor | list[Tensor], rois: list[Tensor]) -> Tensor:
        """sum(R_i) x D_pool: each RoI pooled from its image's map at its :meth:`scale_choice`; the trunk runs once
        per scale on the images that have RoIs there (batched as :meth:`trunk_maps` batches)."""
        sizes = image_sizes(images)
        choices = [self.scale_choice(boxes, size) for boxes, size in zip(rois, sizes, strict=True)]
        starts = [0, *accumulate(boxes.shape[0] for boxes in rois)]  # first rows (shape[0]: symbols in export)
        rows, parts = [], []
        # A graph being exported computes every scale's map: which scales are chosen is the data's.
        exporting = torch.compiler.is_exporting()
        for level in range(len(self.test_scales)):
            chosen = [i for i, choice in enumerate(choices) if exporting or bool((choice == level).any())]
            factors = [self.test_factors(sizes[i])[level] for i in chosen]
            maps = self.trunk_maps([images[i] for i in chosen], factors) if chosen else []
            for i, features, factor in zip(chosen, maps, factors, strict=True):
                picked = torch.where(choices[i] == level)[0]  # this image's RoIs at this scale
                parts.append(self.pool_rois(features, rois[i][picked], factor / self.trunk.stride))
                rows.append(picked + starts[i])
        if not parts:  # no RoI in any image
            return (images if isinstance(images, Tensor) else images[0]).new_zeros(0, self.pooled_size)
        pooled = parts[0].new_empty(starts[-1], self.pooled_size)
        pooled[torch.cat(rows)] = torch.cat(parts)  # every RoI has one scale: every row is written
        return pooled

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
        """RoI max pooling reads only the rounded cells of each RoI (:func:`roi_pool_windows`); over a test
        pyramid, R x 5: the index of the RoI's scale, then its cells on that scale's map."""
        if not self.quantised:
            return None
        if not self.test_scales:
            return roi_pool_windows(rois, self.spatial_scale(size))
        choice = self.scale_choice(rois, size)
        cells = torch.zeros(len(rois), 4, dtype=torch.int64, device=rois.device)
        for level, factor in enumerate(self.test_factors(size)):
            picked = choice == level
            cells[picked] = roi_pool_windows(rois[picked], factor / self.trunk.stride)
        return torch.cat([choice[:, None], cells], 1)
