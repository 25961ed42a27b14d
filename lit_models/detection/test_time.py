"""Horizontal-flip test-time augmentation for every detector: detect on the image and on its mirror image, mirror
the second set of boxes back, and merge the two sets class by class.

Two merges (``Detector(flip_merge=...)``):

* ``"nms"``: the union of both sets through per-class NMS (``torchvision.ops.batched_nms``) at the detector's own
  ``box_nms_thresh``, as if one pass had found them all.
* ``"vote"``: the same NMS, then each kept box replaced by the score-weighted mean of the boxes of its class in the
  union that overlap it at IoU >= 0.5, itself included, its score kept: the "bounding box voting" of Gidaris &
  Komodakis 2015 ("Object detection via a multi-region & semantic segmentation-aware CNN model", ICCV, §4: weights
  max(0, score), neighbours at IoU >= 0.5). Their candidates are every box scored before NMS; here they are the two
  passes' detections, each set already through the detector's NMS.

Either merge keeps at most ``box_detections_per_img`` detections, best first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

FlipMerge = Literal["nms", "vote"]
FLIP_MERGES: tuple[str, ...] = get_args(FlipMerge)
VOTE_IOU = 0.5  # Gidaris & Komodakis 2015, §4: the boxes that vote for a kept box overlap it at IoU >= 0.5

Detections = list[dict[str, Tensor]]


def mirror_boxes(boxes: Tensor, width: int) -> Tensor:
    """N x 4 xyxy boxes of an image ``width`` pixels wide -> the same boxes on its left-right mirror image."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def flip_test(
    detect: Callable[[Tensor | list[Tensor], list[Tensor] | None], Detections],
    images: Tensor | list[Tensor],
    proposals: list[Tensor] | None,
    merge: FlipMerge,
    nms_thresh: float,
    most: int,
) -> Detections:
    """``detect(images, proposals)`` on the images and on their mirror images (proposals mirrored too), each
    image's two sets merged by ``merge`` at ``nms_thresh``, at most ``most`` detections each (module docstring)."""
    widths = [int(image.shape[-1]) for image in images]
    mirrored = images.flip(-1) if isinstance(images, Tensor) else [image.flip(-1) for image in images]
    mirrored_proposals = None
    if proposals is not None:
        pairs = zip(proposals, widths, strict=True)
        mirrored_proposals = [mirror_boxes(torch.as_tensor(boxes).reshape(-1, 4), width) for boxes, width in pairs]
    found, mirrored_found = detect(images, proposals), detect(mirrored, mirrored_proposals)
    return [
        merge_detections(first, {**second, "boxes": mirror_boxes(second["boxes"], width)}, merge, nms_thresh, most)
        for first, second, width in zip(found, mirrored_found, widths, strict=True)
    ]


def check_flip_merge(merge: str) -> None:
    if merge not in FLIP_MERGES:
        raise ValueError(
            f"flip_merge must be 'nms' (the union of both passes through NMS) or 'vote' (NMS, then box voting), "
            f"got {merge!r}"
        )


def merge_detections(
    first: dict[str, Tensor], second: dict[str, Tensor], merge: FlipMerge, nms_thresh: float, most: int
) -> dict[str, Tensor]:
    """Two sets of one image's detections ({"boxes", "scores", "labels"}) -> one, by ``"nms"`` or ``"vote"``."""
    check_flip_merge(merge)
    boxes, scores, labels = (torch.cat([first[key], second[key]]) for key in ("boxes", "scores", "labels"))
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:most]  # by decreasing score
    kept = boxes[keep]
    if merge == "vote":
        kept = box_voting(kept, labels[keep], boxes, scores, labels)
    return {"boxes": kept, "scores": scores[keep], "labels": labels[keep]}


def box_voting(kept: Tensor, kept_labels: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor) -> Tensor:
    """K x 4 kept boxes -> each the mean of the ``boxes`` of its label at IoU >= :data:`VOTE_IOU` with it, weighted by
    max(0, score) (Gidaris & Komodakis 2015, §4); a box whose voters all score 0 stays as it is."""
    voters = (box_iou(kept, boxes) >= VOTE_IOU) & (kept_labels[:, None] == labels[None, :])  # K x N
    weights = voters * scores.clamp(min=0)[None, :]  # K x N
    total = weights.sum(1, keepdim=True)
    averaged = weights @ boxes / total.clamp(min=torch.finfo(boxes.dtype).tiny)
    return torch.where(total > 0, averaged, kept)
