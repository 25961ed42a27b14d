"""PASCAL VOC's detection average precision, computed as the VOC devkit's ``VOCevaldet.m`` computes it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import box_iou

# VOCopts.minoverlap: a detection is matched where IoU >= 0.5. VOCevaldet.m tests ``ovmax >= minoverlap``;
# py-faster-rcnn's voc_eval.py tests ``ovmax > ovthresh``; the devkit is followed.
MIN_OVERLAP = 0.5

# The recalls of VOC2007's 11-point AP, ``t = 0:0.1:1`` in the 2007 devkit, as MATLAB's colon operator makes them:
# multiples of the step added to the start for the first half, subtracted from the end for the second. Its fourth
# point is 3 * 0.1 = 0.30000000000000004, so a recall of exactly 3/10 does not reach it; kept, as it is part of the
# published numbers (py-faster-rcnn's np.arange(0, 1.1, 0.1) also moves 0.6 and 0.7 up by one ulp).
VOC07_RECALLS = tuple(k * 0.1 for k in range(6)) + tuple(1 - (10 - k) * 0.1 for k in range(6, 11))

UNMEASURED = -1.0  # a class without (non-difficult) ground truth: its AP is undefined


class VOCAveragePrecision(Metric):
    """PASCAL VOC's average precision at IoU 0.5, per class and as the mean over classes, matched as the devkit
    matches (``VOCevaldet.m``; py-faster-rcnn's ``voc_eval.py`` is its Python port).

    Every detection of a class over the whole split is taken in order of score, highest first. Ties keep the order
    the detections were given in (images in the order of ``update``, then each image's own order), as MATLAB's
    stable ``sort`` keeps the order of the devkit's results file. Each detection is matched to the ground-truth box
    of its class with the highest IoU in its image (the first such box on a tie), whether or not that box is taken:

    - IoU < 0.5: a false positive;
    - the box is ``difficult``: neither true nor false positive, and the box stays free;
    - the box is free: a true positive, and the box is taken;
    - the box is taken: a false positive (a duplicate), even where another box would match.

    From the cumulated counts, recall = TP / (non-difficult boxes) and precision = TP / (TP + FP), and:

    - ``ap_50_voc07``: VOC2007's 11-point interpolated AP, the mean over recalls t = 0, 0.1, ..., 1 of the highest
      precision at a recall >= t (0 where none), the measure of the R-CNN, SPPNet, Fast/Faster R-CNN and YOLO v1
      tables;
    - ``ap_50_voc10``: VOC2010+'s AP (``VOCap.m``), the area under the precision envelope (each precision raised to
      the highest at any larger recall), summed where recall changes.

    ``compute()`` returns ``map_50_voc07`` and ``map_50_voc10`` (means over the classes that have non-difficult
    ground truth), ``ap_50_voc07`` and ``ap_50_voc10`` (per class, -1 for a class without non-difficult ground truth,
    which the mean leaves out) and ``classes`` (every label seen in detections or ground truth). The devkit
    computes each class alone; on a class without ground truth its recall is 0/0 (its 11-point AP then 0, its
    VOC2010 AP NaN), which never arises on VOC's test sets, where every class has objects. Before any detection of a
    class counts, the devkit's precision is 0/0, which MATLAB's ``max`` skips; here it is 0, which is the same except
    for a class none of whose detections counts (all on difficult objects), where the devkit's 11-point AP is NaN
    and this one 0.

    States are lists of per-image tensors and ``compute`` does not synchronise them: under DDP, call
    :func:`lit_models.metrics.gather_images` first (torchmetrics' own sync needs as many images on every rank).

    Args:
        pixel_boxes: Boxes are the devkit's integer pixel indices, corners included (a box from x1 to x2 is
            x2 - x1 + 1 pixels wide), as VOC's XML and results files write them: areas and intersections add 1. Leave
            it off for continuous edges (torchvision's xyxy, and every box lit-models' DataModules produce: the VOC
            reader turns XML's (xmin, ymin, xmax, ymax) into edges (xmin - 1, ymin - 1, xmax, ymax), on which plain
            IoU equals the devkit's on the XML's numbers).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, pixel_boxes: bool = False) -> None:
        super().__init__(sync_on_compute=False)
        self.pixel_boxes = pixel_boxes
        for name in ("found_boxes", "found_scores", "found_labels", "truth_boxes", "truth_labels", "truth_difficult"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[Mapping[str, Tensor]], target: Sequence[Mapping[str, Tensor]]) -> None:
        """Add images: ``preds`` one dict per image (``boxes`` N x 4 xyxy, ``scores`` N, ``labels`` N), ``target``
        one per image (``boxes`` M x 4 xyxy, ``labels`` M, and optionally ``difficult`` and/or ``iscrowd``, M bools:
        objects that are neither hit nor miss; COCO's crowds are taken as VOC's difficult objects)."""
        if len(preds) != len(target):
            raise ValueError(
                f"VOCAveragePrecision.update got detections of {len(preds)} images and ground truth of {len(target)}: "
                "give one dict of each per image."
            )
        for index, (found, truth) in enumerate(zip(preds, target, strict=True)):
            boxes, scores, labels = (field(found, key, index, "preds") for key in ("boxes", "scores", "labels"))
            check_boxes(boxes, {"scores": scores, "labels": labels}, index, "preds")
            truth_boxes, truth_labels = (field(truth, key, index, "target") for key in ("boxes", "labels"))
            flags = {flag: truth[flag] for flag in ("difficult", "iscrowd") if flag in truth}
            check_boxes(truth_boxes, {"labels": truth_labels, **flags}, index, "target")
            difficult = torch.zeros(len(truth_labels), dtype=torch.bool, device=truth_labels.device)
            for flag in flags.values():
                difficult = difficult | flag.bool()
            self.found_boxes.append(boxes.detach())
            self.found_scores.append(scores.detach())
            self.found_labels.append(labels.detach())
            self.truth_boxes.append(truth_boxes.detach())
            self.truth_labels.append(truth_labels.detach())
            self.truth_difficult.append(difficult)

    def compute(self) -> dict[str, Tensor]:
        overlaps, matches = self.best_matches()
        scores = cat(self.found_scores, torch.float64)
        found_labels = cat(self.found_labels, torch.int64)
        truth_labels = cat(self.truth_labels, torch.int64)
        difficult = cat(self.truth_difficult, torch.bool)
        classes = torch.unique(torch.cat([found_labels, truth_labels]))
        per_class = {"ap_50_voc07": [], "ap_50_voc10": []}
        for label in classes.tolist():
            positives = int(((truth_labels == label) & ~difficult).sum())
            if positives == 0:
                per_class["ap_50_voc07"].append(UNMEASURED)
                per_class["ap_50_voc10"].append(UNMEASURED)
                continue
            mine = found_labels == label
            recall, precision = precision_recall(scores[mine], overlaps[mine], matches[mine], difficult, positives)
            per_class["ap_50_voc07"].append(eleven_point_ap(recall, precision))
            per_class["ap_50_voc10"].append(area_under_envelope(recall, precision))
        result: dict[str, Tensor] = {"classes": classes}
        for name, values in per_class.items():
            ap = torch.tensor(values, dtype=torch.float64)
            measured = ap[ap != UNMEASURED]
            result[name] = ap
            result[name.replace("ap_", "map_", 1)] = (
                measured.mean() if len(measured) else torch.tensor(UNMEASURED, dtype=torch.float64)
            )
        return result

    def best_matches(self) -> tuple[Tensor, Tensor]:
        """For every detection (all images, in order): its highest IoU with a ground-truth box of its class in its
        image (-inf where there is none) and that box's index among all images' boxes (-1 where none)."""
        overlaps, matches, first_box = [], [], 0
        for boxes, labels, truth_boxes, truth_labels in zip(self.found_boxes, self.found_labels, self.truth_boxes,
                                                            self.truth_labels, strict=True):  # fmt: skip
            best = torch.full((len(boxes),), -torch.inf, dtype=torch.float64)
            index = torch.full((len(boxes),), -1, dtype=torch.int64)
            if len(boxes) and len(truth_boxes):
                iou = box_iou(self.edges(boxes), self.edges(truth_boxes))  # detections x boxes
                iou[labels.cpu()[:, None] != truth_labels.cpu()[None, :]] = -torch.inf
                best, index = iou.max(dim=1)  # the first box of the highest IoU, as the devkit's strict ``ov > ovmax``
                index = torch.where(best > -torch.inf, index + first_box, -1)
            overlaps.append(best)
            matches.append(index)
            first_box += len(truth_boxes)
        return cat(overlaps, torch.float64), cat(matches, torch.int64)

    def edges(self, boxes: Tensor) -> Tensor:
        """Boxes as continuous edges in float64: inclusive pixel indices end one pixel further."""
        boxes = boxes.detach().cpu().to(torch.float64)
        return boxes + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64) if self.pixel_boxes else boxes


def precision_recall(
    scores: Tensor, overlaps: Tensor, matches: Tensor, difficult: Tensor, positives: int
) -> tuple[Tensor, Tensor]:
    """One class's recall and precision after each of its detections, highest score first (VOCevaldet.m)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    overlaps, matches = overlaps[order], matches[order]
    matched = overlaps >= MIN_OVERLAP
    on_difficult = matched & difficult[matches.clamp(min=0)]
    claims = matched & ~on_difficult
    # A box goes to the first detection in score order that claims it; every later claim is a duplicate.
    rank = torch.arange(len(order))
    first_claim = torch.full((len(difficult),), len(order), dtype=torch.int64)
    first_claim = first_claim.scatter_reduce(0, matches[claims], rank[claims], reduce="amin")
    true = claims & (first_claim[matches.clamp(min=0)] == rank)
    false = ~matched | (claims & ~true)
    tp, fp = torch.cumsum(true.double(), 0), torch.cumsum(false.double(), 0)
    counted = tp + fp
    precision = torch.where(counted > 0, tp / counted.clamp(min=1), 0.0)  # 0/0 before any counted detection: 0
    return tp / positives, precision


def eleven_point_ap(recall: Tensor, precision: Tensor) -> float:
    """VOC2007: the highest precision at recall >= t, for t in VOC07_RECALLS, summed over 11 as the devkit adds."""
    ap = 0.0
    for threshold in VOC07_RECALLS:
        reached = precision[recall >= threshold]
        ap += (float(reached.max()) if len(reached) else 0.0) / 11
    return ap


def area_under_envelope(recall: Tensor, precision: Tensor) -> float:
    """VOC2010+ (VOCap.m): recall framed by 0 and 1, precision by 0 and 0; precision made non-increasing from the
    right; the sum of recall steps times the envelope's precision where recall changes."""
    framed_recall = torch.cat([recall.new_zeros(1), recall, recall.new_ones(1)])
    framed = torch.cat([precision.new_zeros(1), precision, precision.new_zeros(1)])
    envelope = torch.flip(torch.cummax(torch.flip(framed, [0]), 0).values, [0])
    steps = torch.nonzero(framed_recall[1:] != framed_recall[:-1]).flatten() + 1
    return float(((framed_recall[steps] - framed_recall[steps - 1]) * envelope[steps]).sum())


def cat(tensors: list[Tensor], dtype: torch.dtype) -> Tensor:
    return torch.cat([t.detach().cpu().to(dtype) for t in tensors]) if tensors else torch.zeros(0, dtype=dtype)


# What update's dicts hold, for its messages.
FIELDS = {
    "preds": "'boxes' (N x 4 xyxy), 'scores' (N) and 'labels' (N)",
    "target": "'boxes' (M x 4 xyxy), 'labels' (M) and optionally 'difficult' and 'iscrowd' (M bools)",
}


def field(record: Mapping[str, Tensor], key: str, index: int, name: str) -> Tensor:
    """``record[key]``, or a ValueError naming the image, the key and what the dict should hold."""
    if not isinstance(record, Mapping) or not isinstance(record.get(key), Tensor):
        raise ValueError(
            f"VOCAveragePrecision.update: {name}[{index}] has no tensor {key!r} (got {type(record).__name__}"
            f"{' with keys ' + str(sorted(record)) if isinstance(record, Mapping) else ''}); each of {name} is a dict "
            f"with {FIELDS[name]}."
        )
    return record[key]


def check_boxes(boxes: Tensor, per_box: dict[str, Tensor], index: int, name: str) -> None:
    """Boxes N x 4 with x2 >= x1 and y2 >= y1, and each of ``per_box`` one value per box."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}[{index}]['boxes'] must be N x 4 (xyxy), got shape {tuple(boxes.shape)}.")
    for key, values in per_box.items():
        if values.shape != (len(boxes),):
            raise ValueError(
                f"{name}[{index}][{key!r}] has shape {tuple(values.shape)}, but there are {len(boxes)} boxes: give "
                "one value per box."
            )
    inverted = torch.nonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).flatten()
    if len(inverted):
        raise ValueError(
            f"{name}[{index}]['boxes'][{int(inverted[0])}] = {boxes[inverted[0]].tolist()} has x2 < x1 or y2 < y1: "
            "boxes are (x1, y1, x2, y2), top-left corner first."
        )
