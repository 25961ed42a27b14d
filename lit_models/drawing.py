"""Drawing predictions on images, one way for every picture: the training pictures and the prediction writers.

Images are 3 x H x W uint8 tensors, what torchvision's drawing utilities take. One colour per class index (the
PASCAL VOC colour map), so a class's masks and boxes look alike everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from lit_models.datamodules.files import load_rgb
from lit_models.datamodules.voc_layout import voc_palette

CLASS_COLOURS = [tuple(rgb) for rgb in np.array(voc_palette()).reshape(256, 3).tolist()]
# The lowest score of a detection drawn on a picture (training samples and prediction images); the detections
# themselves, as written to JSON, are every one above the detector's box_score_thresh.
DRAW_SCORE = 0.3


def image_tensor(image: str | object) -> Tensor:
    """An image file (or PIL image) as 3 x H x W uint8."""
    return torch.from_numpy(np.array(load_rgb(image))).permute(2, 0, 1)


def displayable(images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """Normalised N x C x H x W float images back to N x 3 x H x W uint8: through ``mean`` and ``std`` when known,
    else each image stretched to its own range."""
    images = images.detach().float().cpu()
    if mean is not None and std is not None:
        images = images * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (high - low).clamp_min(1e-8)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def overlay_mask(image: Tensor, mask: Tensor, num_classes: int = 255) -> Tensor:
    """3 x H x W uint8 with every class of the H x W index ``mask`` but background (0) and void (255) blended over
    it in its colour."""
    mask = mask.cpu()
    present = [int(c) for c in mask.unique() if 0 < c < min(num_classes, 255)]
    if not present:
        return image
    layers = torch.stack([mask == c for c in present])
    return draw_segmentation_masks(image, layers, alpha=0.5, colors=[CLASS_COLOURS[c] for c in present])


def draw_boxes(
    image: Tensor,
    boxes: Tensor,
    labels: Tensor,
    names: Sequence[str],
    scores: Tensor | None = None,
    min_score: float = DRAW_SCORE,
    most: int | None = None,
    width: int = 2,
) -> Tensor:
    """3 x H x W uint8 with each box outlined in its class's colour, captioned with its class name (and score).

    Args:
        image: The picture.
        boxes: R x 4 xyxy in the picture's pixels.
        labels: R class indices.
        names: Class names by index.
        scores: R scores (detections), or None (ground truth: every box drawn, uncaptioned by score).
        min_score: Detections scoring lower are not drawn.
        most: At most this many detections drawn, the first ones (detections come highest score first).
        width: Line width in pixels.
    """
    keep = torch.ones(len(boxes), dtype=torch.bool) if scores is None else scores.cpu() >= min_score
    index = keep.nonzero().flatten()[:most]
    if len(index) == 0:
        return image
    chosen = [int(label) for label in labels.cpu()[index]]
    captions = [names[label] for label in chosen]
    if scores is not None:
        captions = [f"{caption} {float(s):.2f}" for caption, s in zip(captions, scores.cpu()[index], strict=True)]
    colours = [CLASS_COLOURS[label % 256] for label in chosen]
    return draw_bounding_boxes(image, boxes.detach().float().cpu()[index], labels=captions, colors=colours, width=width)


def side_by_side(*images: Tensor, gap: int = 4) -> Tensor:
    """3 x H x W uint8 panels of one height joined left to right with a white gap."""
    spacer = torch.full((3, images[0].shape[1], gap), 255, dtype=torch.uint8)
    parts = [part for image in images for part in (image, spacer)][:-1]
    return torch.cat(parts, dim=2)
