"""Fast R-CNN's detections rescored by YOLO's (Redmon, Divvala, Girshick & Farhadi 2016, "You Only Look Once",
§4.3 "Combining Fast R-CNN and YOLO"), and a command that measures it on two trained checkpoints:

    python -m lit_models.detection.rescoring --fast_rcnn FAST.ckpt --yolo YOLO.ckpt [--root DIR] [--match_iou 0.5]

It prints the test mAP@0.5 of Fast R-CNN alone, YOLO alone and the rescored Fast R-CNN, each detector run over its
data's test images as ``lit-models predict`` runs it (its own preprocessing, proposals and test protocol), the boxes
compared in the pixels of the image files. Both must have been trained on the same classes and test images.

What the paper specifies: YOLO is used "to eliminate background detections from Fast R-CNN": "For every bounding
box that R-CNN predicts we check to see if YOLO predicts a similar box. If it does, we give that prediction a boost
based on the probability predicted by YOLO and the overlap between the two boxes" (VOC 2007 test: 71.8 -> 75.0
mAP, Table 2). Only Fast R-CNN's boxes are output. It gives no formula, no threshold and no training of the
combination, so these are choices made here:

* "similar box": a YOLO detection of the same class at IoU >= ``match_iou`` (0.5: the overlap at which PASCAL VOC
  counts a detection right);
* "a boost based on the probability and the overlap": p x IoU of the similar YOLO box for which it is largest (p its
  class-specific score), added to Fast R-CNN's score s. The sum is halved, (s + p x IoU) / 2, to stay a score in
  [0, 1]; halving changes no ranking, and ranking is all that mAP reads. A box without a similar YOLO box keeps s
  (halved), so it falls behind every boosted box of the same score;
* nothing is learnt: the combination is this fixed rule.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor
from torchvision.ops import box_iou

from lit_models.class_names import ClassNamesMismatchError
from lit_models.detection.evaluation import SplitDetections, detect_test_split, load_detector, map_50
from lit_models.errors import CommandParser

MATCH_IOU = 0.5


def rescore(fast_rcnn: dict[str, Tensor], yolo: dict[str, Tensor], match_iou: float = MATCH_IOU) -> dict[str, Tensor]:
    """One image's Fast R-CNN detections ({"boxes", "scores", "labels"}) with scores (s + p x IoU) / 2, where p x IoU
    is the largest over YOLO's detections of the same class at IoU >= ``match_iou`` (0 without one), best first
    (module docstring)."""
    if not 0 < match_iou <= 1:
        raise ValueError(f"match_iou must be in (0, 1] (0.5: PASCAL VOC's overlap for a correct box), got {match_iou}")
    boxes, scores, labels = fast_rcnn["boxes"], fast_rcnn["scores"], fast_rcnn["labels"]
    overlap = box_iou(boxes, yolo["boxes"].to(boxes))  # F x Y
    similar = (overlap >= match_iou) & (labels[:, None] == yolo["labels"].to(labels)[None, :])
    support = torch.where(similar, overlap * yolo["scores"].to(scores)[None, :], 0.0)  # F x Y: p x IoU
    boost = support.max(1).values if support.shape[1] else torch.zeros_like(scores)
    rescored = (scores + boost) / 2
    order = rescored.argsort(descending=True)
    return {"boxes": boxes[order], "scores": rescored[order], "labels": labels[order]}


def compare(fast_rcnn: SplitDetections, yolo: SplitDetections, match_iou: float = MATCH_IOU) -> dict[str, float]:
    """Test mAP@0.5 of Fast R-CNN, YOLO and the rescored Fast R-CNN on the same images.

    Raises:
        ClassNamesMismatchError: The two detectors have other classes.
        ValueError: They were tested on other images.
    """
    if fast_rcnn.class_names != yolo.class_names:
        raise ClassNamesMismatchError(
            f"Fast R-CNN's classes {fast_rcnn.class_names} differ from YOLO's {yolo.class_names}: a label must mean "
            "the same class in both; give checkpoints trained on the same data."
        )
    if fast_rcnn.truth.keys() != yolo.truth.keys():
        only = sorted(fast_rcnn.truth.keys() ^ yolo.truth.keys())
        raise ValueError(f"the two detectors' test images differ ({len(only)} in one list only, e.g. {only[:3]}): "
                         "give checkpoints trained on the same data, or the same --root.")  # fmt: skip
    rescored = {name: rescore(found, yolo.found[name], match_iou) for name, found in fast_rcnn.found.items()}
    return {
        "Fast R-CNN": map_50(fast_rcnn.found, fast_rcnn.truth),
        "YOLO": map_50(yolo.found, yolo.truth),
        "Fast R-CNN rescored by YOLO": map_50(rescored, fast_rcnn.truth),
    }


def main(argv: list[str]) -> None:
    parser = CommandParser(
        prog="python -m lit_models.detection.rescoring",
        description="Test mAP@0.5 of Fast R-CNN, YOLO, and Fast R-CNN's detections rescored by YOLO's (YOLO §4.3).",
    )
    parser.add_argument("--fast_rcnn", required=True, help="a FastRCNN checkpoint (.ckpt)")
    parser.add_argument("--yolo", required=True, help="a YOLOv1 checkpoint trained on the same classes")
    parser.add_argument("--root", help="the data folder of both (default: the one each was trained on)")
    parser.add_argument("--match_iou", type=float, default=MATCH_IOU,
                        help="IoU from which a YOLO box of the same class counts as similar (default 0.5)")  # fmt: skip
    args = parser.parse_args(argv)
    if not 0 < args.match_iou <= 1:
        parser.error(f"--match_iou must be in (0, 1], got {args.match_iou}")
    found = {name: detect_test_split(*load_detector(path, args.root))
             for name, path in (("fast_rcnn", args.fast_rcnn), ("yolo", args.yolo))}  # fmt: skip
    results = compare(found["fast_rcnn"], found["yolo"], args.match_iou)
    print(f"test mAP@0.5 on {len(found['fast_rcnn'].truth)} images:")
    for name, value in results.items():
        print(f"  {name:<28} {value:.4f}")


if __name__ == "__main__":
    from lit_models.commands import run_ours

    run_ours(main, sys.argv[1:])
