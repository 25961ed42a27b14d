"""Where a detector's detections go wrong: each one in one of Hoiem et al.'s five categories, counted over each
class's top N as YOLO's error analysis counts them (Redmon et al. 2016, §4.2, Fig. 4), and each class's
precision-recall curve, over a whole test split.

The categories and their overlaps are those of Hoiem, Chodpathumwan & Dai 2012 ("Diagnosing Error in Object
Detectors", ECCV) as their released code computes them (``analyzeFalsePositives.m``,
``matchDetectionsWithGroundTruth.m``), which is what YOLO used ("We use the methodology and tools of Hoiem et al.").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import box_iou

from lit_models.metrics import gather_images

CATEGORIES = ("correct", "localization", "similar", "other", "background")
CORRECT, LOCALIZATION, SIMILAR, OTHER, BACKGROUND = range(len(CATEGORIES))
# Hoiem et al.'s HIGH_OV and LOW_OV; their matching counts an overlap that reaches the threshold (ov >= thresh),
# where YOLO §4.2 writes IoU > .5 and > .1.
FOUND_IOU = 0.5
TOUCH_IOU = 0.1


def similar_pairs(groups: Sequence[Sequence[str]], class_names: Sequence[str]) -> Tensor:
    """K x K bool: ``[a, b]`` where the classes a != b are in one group of ``groups`` (class names).

    Raises:
        ValueError: A group of fewer than two classes, or a name that is not one of ``class_names``.
    """
    index = {name: position for position, name in enumerate(class_names)}
    similar = torch.zeros(len(class_names), len(class_names), dtype=torch.bool)
    for group in groups:
        unknown = [name for name in group if name not in index]
        if unknown:
            raise ValueError(
                f"model.similar_classes names {unknown}, not classes of the data ({', '.join(class_names)}): give "
                "groups of the data's class names, or null (a recipe's VOC groups on other data)."
            )
        if len(set(group)) < 2:
            raise ValueError(f"model.similar_classes has the group {list(group)}: a group needs two classes or more.")
        members = torch.tensor([index[name] for name in group])
        similar[members.unsqueeze(1), members] = True
    return similar.fill_diagonal_(False)


def categorise(found: dict[str, Tensor], truth: dict[str, Tensor], similar: Tensor) -> tuple[Tensor, Tensor]:
    """Each detection of one image in one of ``CATEGORIES``, taken in descending score order:

    - correct: the object of its class it overlaps most among those not yet found, at IoU >= 0.5, which is then
      found;
    - localization: an object of its class at IoU >= 0.1 otherwise: a misplaced box, or a duplicate of an object
      already found (Hoiem et al.'s code: ``isloc = (label >= 0 | isduplicate) & ~iscorrect`` at the low overlap);
    - similar, other: an object of another class at IoU >= 0.1, whose class shares a group of ``similar`` with the
      detection's or not; of several, the one it overlaps most decides;
    - background: IoU < 0.1 with every object.

    Args:
        found: ``boxes`` D x 4 xyxy, ``scores`` D, ``labels`` D.
        truth: ``boxes`` G x 4 xyxy and ``labels`` G: every object, difficult ones too (Hoiem et al. keep them).
        similar: K x K bool, from :func:`similar_pairs`.

    Returns:
        The category of each detection (D, long), and for a correct one the index of the object it found (else -1).
    """
    count = len(found["labels"])
    categories = torch.full((count,), BACKGROUND, dtype=torch.long)
    objects = torch.full((count,), -1, dtype=torch.long)
    if count == 0 or len(truth["labels"]) == 0:
        return categories, objects
    labels, truth_labels = found["labels"].cpu(), truth["labels"].cpu()
    overlaps = box_iou(found["boxes"].detach().float().cpu(), truth["boxes"].float().cpu())  # D x G
    same = labels.unsqueeze(1) == truth_labels.unsqueeze(0)
    # The greedy matching runs only where a detection of the class reaches 0.5 (few): the rest cannot be correct.
    reaches = same & (overlaps >= FOUND_IOU)
    taken = torch.zeros(len(truth_labels), dtype=torch.bool)
    for detection in found["scores"].cpu().argsort(descending=True, stable=True).tolist():
        free = reaches[detection] & ~taken
        if free.any():
            best = int(torch.where(free, overlaps[detection], -1.0).argmax())
            taken[best] = True
            categories[detection], objects[detection] = CORRECT, best
    own = torch.where(same, overlaps, 0.0).amax(dim=1)
    others = torch.where(same, 0.0, overlaps)
    nearest = others.argmax(dim=1)  # per detection, the other-class object it overlaps most
    alike = similar.cpu()[labels, truth_labels[nearest]]
    wrong_class = others.amax(dim=1) >= TOUCH_IOU
    rest = categories != CORRECT
    categories[rest & wrong_class & alike] = SIMILAR
    categories[rest & wrong_class & ~alike] = OTHER
    categories[rest & (own >= TOUCH_IOU)] = LOCALIZATION  # before a wrong class: Hoiem et al.'s ~isloc there
    return categories, objects


@dataclass
class Breakdown:
    """The error analysis of a split.

    Attributes:
        counts: K x 5, per class (row 0, background, stays empty) the categories of its top N detections, N being
            the number of its objects that are not difficult.
        fractions: 5, each category's share of a class's top N (of all its detections where it has fewer),
            averaged over the classes with detections (YOLO's Fig. 4: "averaged across all 20 classes").
        curves: Per class, its precision-recall curve at IoU 0.5 as a 2 x D tensor (recall, precision) over its
            detections in descending score order, those that found a difficult object left out; None for a class
            without objects.
    """

    counts: Tensor
    fractions: Tensor
    curves: list[Tensor | None]


class ErrorBreakdown(Metric):
    """YOLO's error analysis (§4.2, Fig. 4) over a whole split: for each class, its top N detections by score (N =
    the number of its objects in the split, difficult ones not counted, as Hoiem et al.'s ``topN``), each in one
    category of :func:`categorise`; and each class's precision-recall curve.

    Difficult objects (and COCO's crowds) are kept as objects, as Hoiem et al. keep them: a detection that finds one
    is correct in the breakdown, and one of another class near it is a similar or other error. The curves leave such
    detections out (neither true nor false positives), as VOC's AP does.

    Each image's detections are categorised when it is seen; the split's top N are cut when computing. The states
    are per-image lists, gathered from every rank by :func:`lit_models.metrics.gather_images`, so DDP shards of any
    size count each image once.

    Args:
        num_classes: Classes including background (index 0).
    """

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__(sync_on_compute=False)
        self.num_classes = num_classes
        # K x K: which classes are alike (similar_pairs), set from the data's class names before the first update
        self.similar = torch.zeros(num_classes, num_classes, dtype=torch.bool)
        for name in ("labels", "scores", "categories", "found_ignored", "objects"):
            # per image: each detection's class, score, category and whether it found a difficult object; the
            # classes of its objects that count (not difficult)
            self.add_state(name, default=[], dist_reduce_fx=None)

    def update(self, detections: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        """Categorise a batch's detections.

        Args:
            detections: Per image, as ``predict`` gives them.
            targets: Per image, as :func:`lit_models.metrics.evaluation_targets` gives them (``iscrowd`` marks
                difficult and crowd objects).
        """
        for found, truth in zip(detections, targets, strict=True):
            categories, objects = categorise(found, truth, self.similar)
            ignored = truth["iscrowd"].bool().cpu()
            found_ignored = torch.zeros_like(objects, dtype=torch.bool)
            found_ignored[objects >= 0] = ignored[objects[objects >= 0]]
            self.labels.append(found["labels"].cpu())
            self.scores.append(found["scores"].detach().float().cpu())
            self.categories.append(categories)
            self.found_ignored.append(found_ignored)
            self.objects.append(truth["labels"].cpu()[~ignored])

    def compute(self) -> Breakdown:
        gather_images(self)  # every rank then computes the same, whole-split values
        labels, categories, objects = (
            joined(getattr(self, name), torch.long) for name in ("labels", "categories", "objects")
        )
        scores, found_ignored = joined(self.scores, torch.float), joined(self.found_ignored, torch.bool)
        objects = torch.bincount(objects, minlength=self.num_classes)
        counts = torch.zeros(self.num_classes, len(CATEGORIES), dtype=torch.long)
        curves: list[Tensor | None] = [None] * self.num_classes
        for label in range(1, self.num_classes):
            mine = labels == label
            order = scores[mine].argsort(descending=True, stable=True)
            ranked, skipped = categories[mine][order], found_ignored[mine][order]
            counts[label] = torch.bincount(ranked[: int(objects[label])], minlength=len(CATEGORIES))
            if objects[label] > 0:
                true = (ranked == CORRECT)[~skipped].double().cumsum(0)
                precision = true / torch.arange(1, len(true) + 1)
                curves[label] = torch.stack([true / objects[label], precision])
        taken = counts.sum(dim=1, keepdim=True)
        shares = (counts / taken.clamp(min=1))[taken.squeeze(1) > 0]
        fractions = shares.mean(dim=0) if len(shares) else torch.zeros(len(CATEGORIES))
        return Breakdown(counts=counts, fractions=fractions, curves=curves)


def joined(parts: list[Tensor], dtype: torch.dtype) -> Tensor:
    """The per-image tensors of a list state end to end, on the CPU (empty when no image was seen)."""
    return torch.cat([torch.zeros(0, dtype=dtype), *(part.cpu().to(dtype) for part in parts)])
