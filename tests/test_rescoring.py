"""YOLO's boost of Fast R-CNN's detections (YOLO §4.3) on hand-made detections, and the command on two tiny
checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from families import fit_and_save
from torch import Tensor

from lit_models import DetectionDataModule, FastRCNN, YOLOv1
from lit_models.class_names import ClassNamesMismatchError
from lit_models.detection.evaluation import SplitDetections
from lit_models.detection.rescoring import compare, main, rescore


def boxes(rows: list, scores: list, labels: list) -> dict[str, Tensor]:
    return {"boxes": torch.tensor(rows, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.int64)}  # fmt: skip


FAST_RCNN = boxes([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.6, 0.7, 0.5], [1, 1, 2])
YOLO = boxes(
    [[0, 0, 10, 11], [2, 0, 12, 10], [20, 20, 30, 30], [40, 40, 50, 50]],
    [0.8, 0.9, 0.9, 0.4],
    [1, 1, 2, 2],
)


def test_a_box_yolo_also_finds_is_boosted_by_its_probability_times_the_overlap():
    found = rescore(FAST_RCNN, YOLO)
    # [0,0,10,10]: YOLO's [0,0,10,11] (IoU 100/110, p 0.8: 0.727) beats [2,0,12,10] (IoU 80/120, p 0.9: 0.6).
    # [20,20,30,30]: YOLO's box there is another class: no boost. [40,40,50,50]: IoU 1, p 0.4.
    expected = boxes([[0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30]],
                     [(0.6 + 0.8 * 100 / 110) / 2, (0.5 + 0.4) / 2, 0.7 / 2], [1, 2, 1])  # fmt: skip
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(found[key], expected[key])


def test_only_boxes_overlapping_at_the_match_iou_count():
    assert rescore(FAST_RCNN, YOLO, match_iou=0.95)["scores"].tolist() == pytest.approx([0.45, 0.35, 0.3])
    nothing = {key: value[:0] for key, value in YOLO.items()}
    assert rescore(FAST_RCNN, nothing)["scores"].tolist() == pytest.approx([0.35, 0.3, 0.25])
    with pytest.raises(ValueError, match="match_iou must be in"):
        rescore(FAST_RCNN, YOLO, match_iou=0.0)


def test_rescoring_puts_the_boxes_yolo_confirms_first_and_raises_map():
    # One circle; Fast R-CNN ranks a background box above it, YOLO finds only the circle.
    circle = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1]), "iscrowd": torch.tensor([0])}
    truth = {"a": circle}
    fast_rcnn = SplitDetections({"a": boxes([[0, 0, 10, 10], [20, 20, 30, 30]], [0.6, 0.7], [1, 1])}, truth,
                               ["background", "circle"], 0.0)  # fmt: skip
    yolo = SplitDetections({"a": boxes([[0, 0, 10, 11]], [0.5], [1])}, truth, ["background", "circle"], 0.0)
    assert compare(fast_rcnn, yolo) == pytest.approx(
        {"Fast R-CNN": 0.5, "YOLO": 1.0, "Fast R-CNN rescored by YOLO": 1.0}
    )
    with pytest.raises(ClassNamesMismatchError, match="Fast R-CNN's classes .* differ from YOLO's"):
        compare(fast_rcnn, SplitDetections(yolo.found, truth, ["background", "square"], 0.0))
    with pytest.raises(ValueError, match="test images differ"):
        compare(fast_rcnn, SplitDetections({"b": yolo.found["a"]}, {"b": truth["a"]}, yolo.class_names, 0.0))


def test_the_command_compares_two_checkpoints_on_their_test_images(shapes_tree, tmp_path, one_thread, capsys):
    torch.manual_seed(0)
    proposals = DetectionDataModule(str(shapes_tree), proposals="fast", proposal_width=None, max_proposals=100,
                                    batch_size=2, num_workers=0)  # fmt: skip
    fast_rcnn = FastRCNN(num_classes=proposals.num_classes, backbone="resnet18", width_mult=0.125, min_size=None,
                         representation_size=16, rois_per_image=16)  # fmt: skip
    grid = DetectionDataModule(str(shapes_tree), image_size=64, batch_size=2, num_workers=0)
    yolo = YOLOv1(num_classes=grid.num_classes, image_size=64, grid_size=4, width_mult=0.125, backbone="resnet18")
    checkpoints = [fit_and_save(fast_rcnn, proposals, tmp_path / "fast"), fit_and_save(yolo, grid, tmp_path / "yolo")]
    main(["--fast_rcnn", str(checkpoints[0]), "--yolo", str(checkpoints[1])])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "test mAP@0.5 on 3 images:"
    names = [line.rsplit(maxsplit=1)[0].strip() for line in lines[1:]]
    assert names == ["Fast R-CNN", "YOLO", "Fast R-CNN rescored by YOLO"]
    assert all(0 <= float(line.split()[-1]) <= 1 for line in lines[1:])


def test_a_checkpoint_of_another_family_is_refused(tmp_path, image_tree):
    from families import classifier

    checkpoint = fit_and_save(*classifier(image_tree), tmp_path)
    with pytest.raises(ValueError, match="holds a ResNet, not a detector"):
        main(["--fast_rcnn", str(checkpoint), "--yolo", str(checkpoint)])


def test_checkpoint_paths_are_checked(tmp_path: Path):
    with pytest.raises(ValueError, match="does not exist"):
        main(["--fast_rcnn", str(tmp_path / "missing.ckpt"), "--yolo", str(tmp_path / "missing.ckpt")])
