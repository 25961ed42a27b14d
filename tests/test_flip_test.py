"""Horizontal-flip test-time augmentation (``Detector(test_flip=True, flip_merge=...)``): both passes, the boxes
mirrored back, and the merges by NMS and by box voting."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lit_models.detection import FasterRCNN, FastRCNN, YOLOv1
from lit_models.detection.test_time import flip_test, merge_detections, mirror_boxes

BACKBONE = {"backbone": "resnet18", "width_mult": 0.125, "box_score_thresh": 0.0}
MODULES = {
    "yolov1": lambda **kw: YOLOv1(num_classes=4, image_size=64, grid_size=4, backbone_stride=16, head="conv",
                                  head_channels=32, head_stride=1, **BACKBONE, **kw),  # fmt: skip
    "fast_rcnn": lambda **kw: FastRCNN(num_classes=4, min_size=None, representation_size=32, **BACKBONE, **kw),
    "faster_rcnn": lambda **kw: FasterRCNN(num_classes=4, min_size=64, max_size=64, anchor_sizes=(16, 32),
                                           representation_size=32, rpn_post_nms_top_n_test=20, **BACKBONE, **kw),
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


def detections(boxes: list, scores: list, labels: list) -> dict[str, Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.int64)}  # fmt: skip


FIRST = detections([[0, 0, 10, 10], [6, 0, 16, 10]], [0.9, 0.5], [1, 1])
SECOND = detections([[1, 0, 11, 10], [1, 0, 11, 10]], [0.8, 0.7], [1, 2])


def test_merging_by_nms_keeps_the_best_of_each_overlapping_group_per_class():
    merged = merge_detections(FIRST, SECOND, "nms", nms_thresh=0.3, most=100)
    # [1,0,11,10] of class 1 overlaps the 0.9 box at IoU 0.82: suppressed; the same box of class 2 stays, and so
    # does [6,0,16,10] (IoU 0.25 with the 0.9 box, 0.33 with the suppressed one).
    expected = detections([[0, 0, 10, 10], [1, 0, 11, 10], [6, 0, 16, 10]], [0.9, 0.7, 0.5], [1, 2, 1])
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(merged[key], expected[key])
    assert merge_detections(FIRST, SECOND, "nms", nms_thresh=0.3, most=2)["scores"].tolist() == pytest.approx(
        [0.9, 0.7]
    )


def test_merging_by_vote_averages_the_boxes_overlapping_each_kept_box_by_score():
    merged = merge_detections(FIRST, SECOND, "vote", nms_thresh=0.3, most=100)
    # The 0.9 box: voted by itself and the 0.8 box of its class (IoU 0.82 >= 0.5), not by [6,0,16,10] (0.25) nor
    # by the class-2 box. [6,0,16,10] overlaps no other box of its class at 0.5: it stays as it was.
    shift = 0.8 / 1.7
    expected = detections([[shift, 0, 10 + shift, 10], [1, 0, 11, 10], [6, 0, 16, 10]], [0.9, 0.7, 0.5], [1, 2, 1])
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(merged[key], expected[key])


def test_a_bad_merge_is_refused_when_the_module_is_built():
    with pytest.raises(ValueError, match="flip_merge must be 'nms' .* or 'vote' .*, got 'mean'"):
        MODULES["yolov1"](test_flip=True, flip_merge="mean")


def brightest_proposals(images: Tensor | list[Tensor], proposals: list[Tensor] | None) -> list[dict[str, Tensor]]:
    """A detector that mirrors exactly: each proposal scored by the mean brightness inside it (class 1), best
    first."""
    found = []
    for image, boxes in zip(images, proposals, strict=True):
        scores = torch.stack([image[:, int(y1) : int(y2), int(x1) : int(x2)].mean() for x1, y1, x2, y2 in boxes])
        order = scores.argsort(descending=True)
        found.append({"boxes": boxes[order], "scores": scores[order], "labels": torch.ones(len(boxes), dtype=int)})
    return found


@pytest.mark.parametrize("merge", ["nms", "vote"])
def test_flips_of_a_mirror_symmetric_image_give_the_single_pass_boxes(merge):
    half = torch.randint(0, 255, (3, 32, 16)).float()
    image = torch.cat([half, half.flip(-1)], dim=-1)  # 32 x 32, its own mirror image
    proposals = [torch.tensor([[0.0, 0, 8, 8], [20, 4, 30, 20], [2, 10, 14, 30]])]
    once = brightest_proposals([image], proposals)[0]
    flipped = flip_test(brightest_proposals, [image], proposals, merge, nms_thresh=0.3, most=100)[0]
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(flipped[key], once[key])


@pytest.mark.parametrize("merge", ["nms", "vote"])
@pytest.mark.parametrize("name", list(MODULES))
def test_flip_tta_of_every_detector_is_mirrored_with_the_image(name, merge):
    """Both passes make the detections of an image the mirror images of those of its mirror image, whatever the
    network: the images' detections and the mirrored image's have the same boxes and scores."""
    module = MODULES[name](test_flip=True, flip_merge=merge).eval()
    images = torch.rand(2, 3, 64, 64)
    proposals = [torch.tensor([[4.0, 4, 30, 30], [30, 10, 60, 50], [0, 0, 64, 64], [10, 30, 40, 60]])] * 2
    mirrored_proposals = [mirror_boxes(boxes, 64) for boxes in proposals]
    with torch.no_grad():
        found = module(images, proposals if module.uses_proposals else None)
        mirrored = module(images.flip(-1), mirrored_proposals if module.uses_proposals else None)
        plain = module.one_pass(images, proposals if module.uses_proposals else None)
    for a, b, single in zip(found, mirrored, plain, strict=True):
        assert 0 < len(a["boxes"]) <= module.net.box_detections_per_img
        torch.testing.assert_close(a["scores"], b["scores"])
        torch.testing.assert_close(a["boxes"], mirror_boxes(b["boxes"], 64))
        assert torch.equal(a["labels"], b["labels"])
        assert not torch.equal(a["scores"][: len(single["scores"])], single["scores"])  # the mirror pass counted
