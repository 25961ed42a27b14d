"""A detector's mistakes over a test split: the confusion of its confident detections with the true objects, and the
worst mistakes themselves (its highest-scoring false positives, the largest objects it missed) kept with their
images to be shown."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import box_area, box_iou

from lit_models.detection.errors import CATEGORIES, CORRECT, FOUND_IOU
from lit_models.drawing import displayable, draw_boxes, side_by_side
from lit_models.metrics import gather_images
from lit_models.pictures import Sample

FALSE_POSITIVE, MISSED = 0, 1


@dataclass
class Matches:
    """One image's confident detections matched to its objects whatever their classes.

    Attributes:
        truth: The true class of each pair (0 for a detection that matched no object).
        predicted: The detection's class of each pair (0 for an object that no detection matched).
        missed: Indices of the objects no detection matched (difficult and crowd ones left out).
    """

    truth: Tensor
    predicted: Tensor
    missed: Tensor


def nearest(overlaps: Tensor) -> tuple[int | None, float]:
    """The index of the largest of some overlaps and its IoU; None where there are none above 0."""
    if len(overlaps) == 0 or float(overlaps.max()) <= 0:
        return None, 0.0
    return int(overlaps.argmax()), float(overlaps.max())


def match_any_class(found: dict[str, Tensor], truth: dict[str, Tensor], min_score: float) -> Matches:
    """The detections scoring at least ``min_score``, in descending score order, each matched to the object it
    overlaps most among those not yet matched, at IoU >= 0.5, whatever the two classes: the pairs of a detection
    confusion matrix (a second detection of a matched object matches nothing). A pair with a difficult or crowd
    object counts neither way, as in VOC's AP.

    Args:
        found: ``boxes`` D x 4 xyxy, ``scores`` D, ``labels`` D.
        truth: ``boxes`` G x 4, ``labels`` G, ``iscrowd`` G (difficult and crowd objects), as
            :func:`lit_models.metrics.evaluation_targets` gives them.
    """
    keep = found["scores"].cpu() >= min_score
    boxes, labels = found["boxes"].detach().float().cpu()[keep], found["labels"].cpu()[keep]
    truth_labels, ignored = truth["labels"].cpu(), truth["iscrowd"].bool().cpu()
    overlaps = box_iou(boxes, truth["boxes"].float().cpu())  # D x G
    taken = torch.full((len(truth_labels),), -1, dtype=torch.long)  # per object, the detection that matched it
    matched = torch.zeros(len(labels), dtype=torch.bool)
    for detection in found["scores"].cpu()[keep].argsort(descending=True, stable=True).tolist():
        free = (overlaps[detection] >= FOUND_IOU) & (taken < 0)
        if free.any():
            best = int(torch.where(free, overlaps[detection], -1.0).argmax())
            taken[best], matched[detection] = detection, True
    pairs = (taken >= 0) & ~ignored
    missed = ((taken < 0) & ~ignored).nonzero().flatten()
    unmatched = labels[~matched]
    return Matches(
        truth=torch.cat([truth_labels[pairs], torch.zeros_like(unmatched), truth_labels[missed]]),
        predicted=torch.cat([labels[taken[pairs]], unmatched, torch.zeros_like(missed)]),
        missed=missed,
    )


class Mistakes(Metric):
    """The ``most`` highest-scoring detections that are not correct (of :mod:`lit_models.detection.errors`'s
    categories) and the ``most`` largest missed objects (matched by no confident detection: :func:`match_any_class`)
    of a split, each kept with its image to be drawn.

    Each rank keeps its own best candidates as it goes; computing gathers them from every rank
    (:func:`lit_models.metrics.gather_images`) and keeps the best of all.

    Args:
        most: Mistakes kept of each kind.
    """

    full_state_update = False

    def __init__(self, most: int = 8) -> None:
        super().__init__(sync_on_compute=False)
        self.most = most
        # per mistake: its image (3 x H x W uint8); the boxes and classes to draw, its own first, then the one beside
        # it if any (a false positive's most overlapped object, a missed object's most overlapping detection); and
        # (kind, rank key, score, category, IoU) as numbers.
        for name in ("pictures", "boxes", "labels", "numbers"):
            self.add_state(name, default=[], dist_reduce_fx=None)

    def update(
        self,
        images: Sequence[Tensor],
        statistics: tuple[Sequence[float] | None, Sequence[float] | None],
        detections: list[dict[str, Tensor]],
        targets: list[dict[str, Tensor]],
        categories: list[Tensor],
        missed: list[Tensor],
    ) -> None:
        """Keep the batch's mistakes that rank among the best so far.

        Args:
            images: The batch's images as the model sees them (C x H x W each).
            statistics: Their normalisation's mean and std, to show them (:func:`lit_models.drawing.displayable`).
            detections: Per image, as :func:`match_any_class` takes them.
            targets: Per image, as :func:`match_any_class` takes them.
            categories: Each image's detections' categories (:func:`lit_models.detection.errors.categorise`).
            missed: Each image's missed objects (:attr:`Matches.missed`).
        """
        for image, found, truth, kinds, lost in zip(images, detections, targets, categories, missed, strict=True):
            # Drawn only if one of its mistakes ranks, once.
            picture = functools.cache(lambda image=image: displayable(image.unsqueeze(0), *statistics)[0])
            boxes, scores, labels = found["boxes"].detach().float().cpu(), found["scores"].cpu(), found["labels"].cpu()
            truth_boxes, truth_labels = truth["boxes"].float().cpu(), truth["labels"].cpu()
            overlaps = box_iou(boxes, truth_boxes)  # D x G
            # An image's candidates best first: once one does not rank, none after it does.
            wrong = (kinds != CORRECT).nonzero().flatten()
            for detection in wrong[scores[wrong].argsort(descending=True, stable=True)][: self.most].tolist():
                score = float(scores[detection])
                if not self.ranks(FALSE_POSITIVE, score):
                    break
                near, iou = nearest(overlaps[detection])
                partner = None if near is None else (truth_boxes[near], truth_labels[near])
                shown = (boxes[detection], labels[detection])
                self.add(picture(), shown, partner, [FALSE_POSITIVE, score, score, int(kinds[detection]), iou])
            areas = box_area(truth_boxes[lost])
            largest = areas.argsort(descending=True, stable=True)[: self.most]
            for item, area in zip(lost[largest].tolist(), areas[largest].tolist(), strict=True):
                if not self.ranks(MISSED, area):
                    break
                best, iou = nearest(overlaps[:, item])
                partner = None if best is None else (boxes[best], labels[best])
                score = 0.0 if best is None else float(scores[best])
                self.add(picture(), (truth_boxes[item], truth_labels[item]), partner, [MISSED, area, score, -1, iou])

    def kept(self, kind: int) -> list[int]:
        return [index for index, numbers in enumerate(self.numbers) if int(numbers[0]) == kind]

    def ranks(self, kind: int, key: float) -> bool:
        """Whether a mistake of this kind and rank key joins the ``most`` kept (earlier ones win ties)."""
        same = self.kept(kind)
        return len(same) < self.most or key > min(float(self.numbers[index][1]) for index in same)

    def add(
        self, picture: Tensor, shown: tuple[Tensor, Tensor], partner: tuple[Tensor, Tensor] | None, numbers: list
    ) -> None:
        """Keep a mistake (``shown``: its box and class; ``partner``: the box beside it, or None), dropping the
        weakest of its kind when ``most`` are kept."""
        same = self.kept(numbers[0])
        if len(same) >= self.most:
            weakest = min(reversed(same), key=lambda index: float(self.numbers[index][1]))
            for name in ("pictures", "boxes", "labels", "numbers"):
                getattr(self, name).pop(weakest)
        pairs = [shown] if partner is None else [shown, partner]
        self.pictures.append(picture.cpu())
        self.boxes.append(torch.stack([box for box, _ in pairs]))
        self.labels.append(torch.stack([label for _, label in pairs]))
        self.numbers.append(torch.tensor(numbers, dtype=torch.float64))

    def compute(self) -> tuple[list[int], list[int]]:
        """The indices of the false positives (highest score first) and missed objects (largest first) to show."""
        gather_images(self)
        chosen = []
        for kind in (FALSE_POSITIVE, MISSED):
            same = [index for index, kept in enumerate(self.numbers) if int(kept[0]) == kind]
            chosen.append(sorted(same, key=lambda index: -float(self.numbers[index][1]))[: self.most])
        return chosen[0], chosen[1]

    def samples(self, names: Sequence[str]) -> tuple[list[Sample], list[Sample]]:
        """The kept false positives and missed objects drawn on their images, truth on the left."""
        false_positives, missed = self.compute()
        return [self.drawn(index, names) for index in false_positives], [self.drawn(index, names) for index in missed]

    def drawn(self, index: int, names: Sequence[str]) -> Sample:
        picture, boxes, labels = self.pictures[index].cpu(), self.boxes[index].cpu(), self.labels[index].cpu()
        kind, _, score, category, iou = self.numbers[index].tolist()
        if kind == FALSE_POSITIVE:
            truth = draw_boxes(picture, boxes[1:], labels[1:], names, width=1)
            drawn = draw_boxes(picture, boxes[:1], labels[:1], names, torch.tensor([score]), 0.0, width=1)
            caption = f"{CATEGORIES[int(category)]}: {names[int(labels[0])]} {score:.2f}"
            if len(labels) > 1 and iou > 0:
                caption += f"\nIoU {iou:.2f} with a {names[int(labels[1])]}"
        else:
            truth = draw_boxes(picture, boxes[:1], labels[:1], names, width=1)
            scores = torch.full((len(boxes) - 1,), score)  # the detection beside it, if any
            drawn = draw_boxes(picture, boxes[1:], labels[1:], names, scores, 0.0, width=1)
            caption = f"missed {names[int(labels[0])]}\n"
            caption += f"best: {names[int(labels[1])]} {score:.2f}, IoU {iou:.2f}" if len(labels) > 1 else "no box near"
        return Sample(image=side_by_side(truth, drawn), caption=caption, colour="red")
