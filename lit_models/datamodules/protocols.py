"""The classification papers' test protocols: the views each test image is scored on.

``ImageFolderDataModule(test_crops=..., test_scales=...)`` turns every test image into the views below;
``ImageClassifier.evaluation_logits`` averages their softmax class posteriors, as every one of these papers does
(AlexNet §4.1, VGG §3.2 and §4.2, GoogLeNet §7, ResNet §3.4). Scales are the shorter side Q the image is resized
to, in the papers' pixels for a 224 crop: like the training presets' sizes, they scale with ``image_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from lit_models.datamodules.transforms import scaled

TestCrops = Literal[1, 10, 144, "dense"]

PROTOCOLS: dict[int | str, str] = {
    1: "the centre crop (of the image at each test scale; without test_scales, the preset's evaluation)",
    10: "the four corner crops, the centre crop and their mirror images, at each test scale (AlexNet §4.1, ResNet "
    "Table 3)",
    144: "GoogLeNet's 144 crops (§7): at shorter sides 256, 288, 320 and 352, the left, centre and right squares "
    "(top, middle, bottom for portraits), from each its four corner and centre crops and the square resized, and "
    "their mirror images",
    "dense": "the whole image at each test scale and its mirror image, scored by the fully convolutional net "
    "(VGG §3.2, ResNet §3.4)",
}
# GoogLeNet §7: "resize the image to 4 scales where the shorter dimension (height or width) is 256, 288, 320 and 352".
GOOGLENET_SCALES = (256, 288, 320, 352)
# The single scale of the 224-crop protocols (AlexNet, ResNet's 10-crop, torchvision's evaluation).
DEFAULT_SCALE = 256


def check_test_protocol(crops: int | str, scales: Sequence[int] | None) -> None:
    """Raise ``ValueError`` for a protocol that is not one of ``PROTOCOLS`` or scales it cannot take."""
    if crops not in PROTOCOLS or isinstance(crops, bool):
        listing = "\n".join(f"  {name!r}: {what}" for name, what in PROTOCOLS.items())
        raise ValueError(f"test_crops must be 1, 10, 144 or 'dense', got {crops!r}:\n{listing}")
    if scales is None:
        return
    if crops == 144:
        raise ValueError(
            f"test_crops 144 is GoogLeNet's protocol at its own scales {list(GOOGLENET_SCALES)} (4 x 3 x 6 x 2 views); "
            f"leave test_scales out (got {list(scales)}), or use test_crops 10 or 'dense' at scales of your choice"
        )
    if not scales:
        raise ValueError(
            "test_scales is empty: give one or more shorter sides Q (e.g. [256, 384, 512]), or leave it out"
        )
    if any(isinstance(q, bool) or not isinstance(q, int) or q < 224 for q in scales) or len(set(scales)) < len(scales):
        raise ValueError(
            f"test_scales {list(scales)} must be distinct whole shorter sides Q >= 224, in the papers' pixels for a "
            "224 crop (scaled to image_size), so that a crop or the training window fits: VGG's multi-scale test "
            "[256, 384, 512], ResNet's [224, 256, 384, 480, 640]"
        )


def protocol_scales(crops: int | str, scales: Sequence[int] | None) -> tuple[int, ...]:
    """The test scales Q a protocol uses, in the papers' pixels: GoogLeNet's four for 144 crops, else ``scales``,
    else 256."""
    check_test_protocol(crops, scales)
    if crops == 144:
        return GOOGLENET_SCALES
    return tuple(scales) if scales else (DEFAULT_SCALE,)


class View(NamedTuple):
    """One crop view: the square ``side`` x ``side`` region at (``top``, ``left``) of the image resized to shorter side
    ``scale``, resized to the crop size where it is larger (GoogLeNet's whole squares), mirrored when ``flip``."""

    scale: int
    top: int
    left: int
    side: int
    flip: bool


def five_positions(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of the centre crop and of the top-left, top-right, bottom-left and bottom-right corner crops of
    side ``size`` (torchvision's five_crop places them alike; the centre first: the single-crop view)."""
    centre = (int(round((height - size) / 2)), int(round((width - size) / 2)))
    return [centre, (0, 0), (0, width - size), (height - size, 0), (height - size, width - size)]


def square_positions(height: int, width: int) -> list[tuple[int, int]]:
    """(top, left) of the centre, then the left and right squares of side min(height, width); the middle, top and
    bottom ones of a portrait image (GoogLeNet §7)."""
    side = min(height, width)
    if width >= height:
        return [(0, int(round((width - side) / 2))), (0, 0), (0, width - side)]
    return [(int(round((height - side) / 2)), 0), (0, 0), (height - side, 0)]


def crop_views(crops: int, scale: int, height: int, width: int, size: int) -> list[View]:
    """The crop views of ``crops`` (1, 10 or 144) of an image resized to ``height`` x ``width`` (shorter side
    ``scale``), crops of side ``size``: the unmirrored views, then the same ones mirrored (in the order of the
    first half)."""
    if crops == 1:
        return [View(scale, *five_positions(height, width, size)[0], size, False)]
    if crops == 10:
        plain = [View(scale, top, left, size, False) for top, left in five_positions(height, width, size)]
    elif crops == 144:
        side = min(height, width)
        plain = []
        for square_top, square_left in square_positions(height, width):
            plain.append(View(scale, square_top, square_left, side, False))  # the square resized to the crop size
            plain += [View(scale, square_top + top, square_left + left, size, False)
                      for top, left in five_positions(side, side, size)]  # fmt: skip
    else:
        raise ValueError(f"crop views are defined for 1, 10 or 144 crops, got {crops!r}")
    return plain + [view._replace(flip=True) for view in plain]


class ProtocolViews:
    """PIL image (or C x H x W uint8) -> the views of a test protocol, normalised: V x 3 x S x S crops (3 x S x S
    for one), or for ``"dense"`` a list of whole images 3 x H x W of different sizes (at each scale, the image and its
    mirror image).

    Each scale resizes the uint8 image once (shorter side Q x image_size / 224, antialiased, as the single-crop
    evaluation does), crops are cut from it, and the views are normalised last, so the centre view at Q = 256 is the
    ``center_crop`` evaluation's image exactly.

    Args:
        crops: 1, 10, 144 or "dense" (``PROTOCOLS``).
        scales: Shorter sides Q in the papers' pixels; None: ``protocol_scales``' default.
        image_size: The crop side S, the side the network was trained on.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
    """

    def __init__(
        self,
        crops: TestCrops,
        scales: Sequence[int] | None,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.crops = crops
        self.scales = [scaled(q, image_size) for q in protocol_scales(crops, scales)]
        self.image_size = image_size
        self.mean, self.std = list(mean), list(std)

    def normalise(self, image: Tensor) -> Tensor:
        return F.normalize(F.to_dtype(image, torch.float32, scale=True), self.mean, self.std)

    def __call__(self, picture: Image.Image | Tensor) -> Tensor | list[Tensor]:
        image = F.to_image(picture).as_subclass(Tensor)  # 3 x H x W uint8
        resized = {scale: F.resize(image, [scale], antialias=True) for scale in self.scales}
        if self.crops == "dense":
            return [self.normalise(view) for q in self.scales for view in (resized[q], F.horizontal_flip(resized[q]))]
        size = self.image_size
        views = []
        for scale in self.scales:
            height, width = resized[scale].shape[-2:]
            for view in crop_views(self.crops, scale, height, width, size):
                region = F.crop(resized[scale], view.top, view.left, view.side, view.side)
                if view.side != size:
                    region = F.resize(region, [size, size], antialias=True)
                views.append(F.horizontal_flip(region) if view.flip else region)
        stacked = self.normalise(torch.stack(views))  # V x 3 x S x S
        return stacked[0] if len(stacked) == 1 else stacked
