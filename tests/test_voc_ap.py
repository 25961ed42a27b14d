"""PASCAL VOC's average precision (lit_models.detection.voc_ap) against a transcription of the VOC devkit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lit_models import DetectionDataModule, YOLOv1
from lit_models.detection.voc_ap import VOCAveragePrecision
from lit_models.metrics import evaluation_targets, mean_average_precision

# ------------------------------------------------------------------------------------------ the devkit, transcribed


def matlab_colon(start: float, step: float, stop: float) -> list[float]:
    """MATLAB's ``start:step:stop``: multiples of the step added to the start for the first half, subtracted from
    the stop for the second, the middle (of an odd count) halfway (MathWorks' description of its colon operator)."""
    n = round((stop - start) / step)
    values = [0.0] * (n + 1)
    for k in range(n // 2 + 1):
        values[k] = start + k * step
        values[n - k] = stop - k * step
    if n % 2 == 0:
        values[n // 2] = (start + stop) / 2
    return values


def matlab_max(values: list[float]) -> float | None:
    """MATLAB's ``max``: NaN skipped; NaN if all are NaN; empty (None) for no values."""
    if not values:
        return None
    numbers = [value for value in values if not math.isnan(value)]
    return max(numbers) if numbers else math.nan


def devkit(images: list[dict], cls: int, pixel: bool) -> tuple[float, float]:
    """VOCevaldet.m for class ``cls`` line by line, then VOC2007's 11-point AP (the 2007 devkit's loop) and
    VOC2010's VOCap.m. ``images``: per image ``found`` (boxes, scores, labels) and ``truth`` (boxes, labels,
    difficult) as lists. ``pixel``: the devkit's own +1 (inclusive pixel indices); without it, continuous edges."""
    one = 1.0 if pixel else 0.0
    # extract ground truth objects
    npos = 0
    gt = []
    for image in images:
        truth = image["truth"]
        clsinds = [k for k, label in enumerate(truth["labels"]) if label == cls]
        gt.append({
            "BB": [truth["boxes"][k] for k in clsinds],
            "diff": [truth["difficult"][k] for k in clsinds],
            "det": [False] * len(clsinds),
        })  # fmt: skip
        npos = npos + sum(not difficult for difficult in gt[-1]["diff"])
    # load results: the results file lists the images in order, each image's detections in order
    ids, confidence, BB = [], [], []
    for i, image in enumerate(images):
        for box, score, label in zip(image["found"]["boxes"], image["found"]["scores"], image["found"]["labels"],
                                     strict=True):  # fmt: skip
            if label == cls:
                ids.append(i)
                confidence.append(score)
                BB.append(box)
    # sort detections by decreasing confidence ([sc,si]=sort(-confidence): MATLAB's sort is stable, as Python's)
    si = sorted(range(len(confidence)), key=lambda d: -confidence[d])
    ids = [ids[d] for d in si]
    BB = [BB[d] for d in si]
    # assign detections to ground truth objects
    nd = len(confidence)
    tp = [0.0] * nd
    fp = [0.0] * nd
    for d in range(nd):
        i = ids[d]
        bb = BB[d]
        ovmax = -math.inf
        jmax = None
        for j in range(len(gt[i]["BB"])):
            bbgt = gt[i]["BB"][j]
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw = bi[2] - bi[0] + one
            ih = bi[3] - bi[1] + one
            if iw > 0 and ih > 0:
                # compute overlap as area of intersection / area of union
                ua = (bb[2] - bb[0] + one) * (bb[3] - bb[1] + one) + (bbgt[2] - bbgt[0] + one) * (
                    bbgt[3] - bbgt[1] + one) - iw * ih  # fmt: skip
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax = ov
                    jmax = j
        # assign detection as true positive/don't care/false positive
        if ovmax >= 0.5:  # VOCopts.minoverlap
            if not gt[i]["diff"][jmax]:
                if not gt[i]["det"][jmax]:
                    tp[d] = 1.0  # true positive
                    gt[i]["det"][jmax] = True
                else:
                    fp[d] = 1.0  # false positive (multiple detection)
        else:
            fp[d] = 1.0  # false positive
    # compute precision/recall
    fp = list(np.cumsum(fp))
    tp = list(np.cumsum(tp))
    rec = [t / npos for t in tp]
    prec = [t / (f + t) if f + t else math.nan for t, f in zip(tp, fp, strict=True)]  # MATLAB: 0/0 is NaN
    # VOC2007: compute average precision
    ap07 = 0.0
    for t in matlab_colon(0, 0.1, 1):
        p = matlab_max([prec[k] for k in range(nd) if rec[k] >= t])
        if p is None:
            p = 0.0
        ap07 = ap07 + p / 11
    # VOC2010+: VOCap.m
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = matlab_max([mpre[i], mpre[i + 1]])
    steps = [i + 1 for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i]]
    ap10 = sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in steps)
    return ap07, ap10


# ------------------------------------------------------------------------------------------------ generated splits


def random_box(rng: np.random.Generator, pixel: bool) -> list[float]:
    """Integer pixel indices, or continuous edges on a quarter-pixel grid (exact arithmetic: exact IoU ties)."""
    x, y = rng.integers(0, 40, 2)
    w, h = rng.integers(1 if pixel else 2, 16, 2)
    box = [x, y, x + w, y + h]
    return [float(v) for v in box] if pixel else [v + rng.integers(0, 4) / 4 for v in box]


def near(rng: np.random.Generator, box: list[float], pixel: bool) -> list[float]:
    """A detection of an object: its box moved by up to 2 pixels (sometimes not at all: a duplicate)."""
    moves = rng.integers(-2, 3, 4) if pixel else rng.integers(-8, 9, 4) / 4
    x1, y1, x2, y2 = (v + m for v, m in zip(box, moves, strict=True))
    return [x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)]


def generated_split(seed: int, pixel: bool) -> list[dict]:
    """1-6 images, some without objects; classes 1-3 in the truth (a quarter of the objects difficult, some boxes
    twice), detections near objects (0-2 each: misses and duplicates) and elsewhere, of classes 1-4 (4 never true);
    scores from 4 values, so many tie."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(rng.integers(1, 7)):
        boxes = [random_box(rng, pixel) for _ in range(rng.integers(0, 5))]
        labels = [int(v) for v in rng.integers(1, 4, len(boxes))]
        if boxes and rng.random() < 0.3:  # the same object annotated twice
            boxes.append(list(boxes[0]))
            labels.append(labels[0])
        difficult = [bool(v) for v in rng.random(len(boxes)) < 0.25]
        found, found_labels = [], []
        for box, label in zip(boxes, labels, strict=True):
            for _ in range(rng.integers(0, 3)):
                found.append(near(rng, box, pixel))
                found_labels.append(label if rng.random() < 0.9 else int(rng.integers(1, 5)))
        for _ in range(rng.integers(0, 4)):
            found.append(random_box(rng, pixel))
            found_labels.append(int(rng.integers(1, 5)))
        scores = [float(v) for v in rng.choice([0.2, 0.5, 0.7, 0.9], len(found))]
        images.append({
            "found": {"boxes": found, "scores": scores, "labels": found_labels},
            "truth": {"boxes": boxes, "labels": labels, "difficult": difficult},
        })  # fmt: skip
    return images


def as_tensors(images: list[dict], shift: float = 0.0) -> tuple[list[dict], list[dict]]:
    """The split as ``update``'s dicts (float64 boxes); ``shift`` is subtracted from x1 and y1."""

    def boxes(values: list[list[float]]) -> torch.Tensor:
        tensor = torch.tensor(values, dtype=torch.float64).reshape(-1, 4)
        return tensor - torch.tensor([shift, shift, 0.0, 0.0], dtype=torch.float64)

    preds = [{"boxes": boxes(image["found"]["boxes"]), "scores": torch.tensor(image["found"]["scores"]),
              "labels": torch.tensor(image["found"]["labels"], dtype=torch.int64)} for image in images]  # fmt: skip
    target = [{"boxes": boxes(image["truth"]["boxes"]), "labels": torch.tensor(image["truth"]["labels"],
               dtype=torch.int64), "difficult": torch.tensor(image["truth"]["difficult"], dtype=torch.bool)}
              for image in images]  # fmt: skip
    return preds, target


def measure(images: list[dict], pixel_boxes: bool, shift: float = 0.0) -> dict[str, torch.Tensor]:
    """The metric over the split, given two images per ``update``."""
    metric = VOCAveragePrecision(pixel_boxes=pixel_boxes)
    preds, target = as_tensors(images, shift)
    for first in range(0, len(images), 2):
        metric.update(preds[first : first + 2], target[first : first + 2])
    return {key: value.reshape(-1) for key, value in metric.compute().items()}


def assert_matches_devkit(result: dict[str, torch.Tensor], images: list[dict], pixel: bool) -> None:
    classes = sorted({label for image in images for part in ("found", "truth") for label in image[part]["labels"]})
    assert result["classes"].tolist() == classes
    means = {"voc07": [], "voc10": []}
    for index, cls in enumerate(classes):
        positives = sum(label == cls and not difficult for image in images
                        for label, difficult in zip(image["truth"]["labels"], image["truth"]["difficult"],
                                                    strict=True))  # fmt: skip
        if positives == 0:  # no (non-difficult) truth: not measured, left out of the mean
            assert result["ap_50_voc07"][index] == result["ap_50_voc10"][index] == -1
            continue
        ap07, ap10 = devkit(images, cls, pixel)
        # Every detection of the class on a difficult object: the devkit's 11-point AP is NaN (0/0 precision
        # only), the metric's 0 (its docstring).
        ap07 = 0.0 if math.isnan(ap07) else ap07
        assert float(result["ap_50_voc07"][index]) == pytest.approx(ap07, abs=1e-9)
        assert float(result["ap_50_voc10"][index]) == pytest.approx(ap10, abs=1e-9)
        means["voc07"].append(ap07)
        means["voc10"].append(ap10)
    for name, values in means.items():
        expected = sum(values) / len(values) if values else -1.0
        assert float(result[f"map_50_{name}"]) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("pixel", [True, False], ids=["pixel_boxes", "continuous"])
def test_generated_splits_match_the_devkit(pixel):
    for seed in range(150):
        images = generated_split(seed, pixel)
        assert_matches_devkit(measure(images, pixel_boxes=pixel), images, pixel)


def test_continuous_edges_from_voc_xml_give_the_devkits_pixel_overlap():
    # The VOC reader turns XML's inclusive (xmin, ymin, xmax, ymax) into edges (xmin - 1, ymin - 1, xmax, ymax)
    # (box_annotations.parse_voc_xml); on those, pixel_boxes=False is the devkit's +1 evaluation of the XML numbers.
    for seed in range(50):
        images = generated_split(seed, pixel=True)
        assert_matches_devkit(measure(images, pixel_boxes=False, shift=1.0), images, pixel=True)


# --------------------------------------------------------------------------------------------------- by hand

TRUTH = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1])}]
# Ranked by score: a hit (recall 1/2, precision 1), a miss (1/2, 1/2), a hit (2/2, 2/3).
FOUND = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]),
          "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}]  # fmt: skip


def voc_ap(preds: list[dict], target: list[dict], **options) -> dict[str, float]:
    metric = VOCAveragePrecision(**options)
    metric.update(preds, target)
    result = metric.compute()
    return {key: float(result[key]) for key in ("map_50_voc07", "map_50_voc10")}


def test_both_measures_against_a_hand_count():
    # The envelope is 1 up to recall 1/2 (recalls 0, 0.1, ..., 0.5: 6 points) and 2/3 after (5 points); its area is
    # 1/2 x 1 + 1/2 x 2/3.
    assert voc_ap(FOUND, TRUTH) == pytest.approx({"map_50_voc07": (6 + 5 * 2 / 3) / 11, "map_50_voc10": 5 / 6})


def test_a_detection_nearer_a_difficult_object_than_a_normal_one_counts_for_coco_not_for_voc():
    truth = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 12], [30, 30, 40, 40]]),
              "labels": torch.tensor([1, 1, 1]), "difficult": torch.tensor([False, True, False])}]  # fmt: skip
    # The second detection overlaps the normal box at IoU 100/110 and the difficult one at 110/120.
    found = [{"boxes": torch.tensor([[30.0, 30, 40, 40], [0, 0, 10, 11]]), "scores": torch.tensor([0.9, 0.8]),
              "labels": torch.tensor([1, 1])}]  # fmt: skip
    # The devkit matches it to its best box, the difficult one: ignored, the normal box missed (recall 1/2).
    assert voc_ap(found, truth) == pytest.approx({"map_50_voc07": 6 / 11, "map_50_voc10": 0.5})
    # COCO prefers a normal box where one matches (difficult objects are its crowds): both found.
    coco = mean_average_precision(iou_thresholds=[0.5])
    coco.update(found, evaluation_targets(truth))
    assert float(coco.compute()["map_50"]) == pytest.approx(1.0)


def test_a_duplicate_on_a_taken_box_is_false_even_where_another_box_would_match():
    truth = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 11]]), "labels": torch.tensor([1, 1])}]
    # Both detections overlap the first box best (IoU 1 and 0.95; the second box: 100/110 and 95/110).
    found = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9.5]]), "scores": torch.tensor([0.9, 0.8]),
              "labels": torch.tensor([1, 1])}]  # fmt: skip
    assert voc_ap(found, truth)["map_50_voc10"] == pytest.approx(0.5)  # the second: a duplicate, recall stays 1/2
    coco = mean_average_precision(iou_thresholds=[0.5])
    coco.update(found, evaluation_targets(truth))
    assert float(coco.compute()["map_50"]) == pytest.approx(1.0)  # COCO gives it the box left free


def test_equal_scores_keep_the_order_given():
    truth = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    hit, miss = [0.0, 0, 10, 10], [50.0, 50, 60, 60]
    ranked = {"scores": torch.tensor([0.5, 0.5]), "labels": torch.tensor([1, 1])}
    assert voc_ap([{"boxes": torch.tensor([hit, miss]), **ranked}], truth)["map_50_voc10"] == pytest.approx(1.0)
    assert voc_ap([{"boxes": torch.tensor([miss, hit]), **ranked}], truth)["map_50_voc10"] == pytest.approx(0.5)


def test_a_recall_of_exactly_three_tenths_misses_matlabs_fourth_recall_point():
    # 10 objects, 3 found: recall 3/10 = 0.3 < MATLAB's 0:0.1:1 fourth point, 3 * 0.1 = 0.30000000000000004.
    truth = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])} for _ in range(10)]
    found = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
             for _ in range(3)] + [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                                    "labels": torch.zeros(0, dtype=torch.int64)} for _ in range(7)]  # fmt: skip
    assert voc_ap(found, truth) == pytest.approx({"map_50_voc07": 3 / 11, "map_50_voc10": 0.3})


def test_pixel_boxes_add_one_to_widths_and_heights():
    truth = [{"boxes": torch.tensor([[1.0, 1, 10, 10]]), "labels": torch.tensor([1])}]
    # Inclusive pixels: 10 x 10 and 10 x 5 (IoU 0.5, a hit); continuous: 9 x 9 and 9 x 4 (IoU 4/9, a miss).
    found = [{"boxes": torch.tensor([[1.0, 1, 10, 5]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    assert voc_ap(found, truth, pixel_boxes=True)["map_50_voc10"] == pytest.approx(1.0)
    assert voc_ap(found, truth, pixel_boxes=False)["map_50_voc10"] == pytest.approx(0.0)


def test_bad_input_is_named():
    metric = VOCAveragePrecision()
    with pytest.raises(ValueError, match="detections of 1 images and ground truth of 2"):
        metric.update(FOUND, TRUTH * 2)
    with pytest.raises(ValueError, match=r"preds\[0\] has no tensor 'scores'"):
        metric.update([{"boxes": FOUND[0]["boxes"], "labels": FOUND[0]["labels"]}], TRUTH)
    with pytest.raises(ValueError, match=r"target\[0\]\['difficult'\] has shape \(1,\), but there are 2 boxes"):
        metric.update(FOUND, [{**TRUTH[0], "difficult": torch.tensor([True])}])
    with pytest.raises(ValueError, match=r"preds\[0\]\['boxes'\]\[1\] = \[60.0, 50.0, 50.0, 60.0\] has x2 < x1"):
        metric.update([{**FOUND[0], "boxes": torch.tensor([[0.0, 0, 10, 10], [60, 50, 50, 60], [0, 0, 1, 1]])}],
                      TRUTH)  # fmt: skip


# ------------------------------------------------------------------------------------------------- in the Detector


def test_a_detector_logs_voc_ap_beside_cocos_and_monitors_voc07(shapes_tree, tmp_path, one_thread):
    data = DetectionDataModule(str(shapes_tree), image_size=64, batch_size=3, num_workers=0)
    model = YOLOv1(num_classes=data.num_classes, image_size=64, grid_size=4, width_mult=0.125, backbone="resnet18",
                   voc07_ap=True)  # fmt: skip
    assert model.monitor == "val/map_50_voc07"
    trainer = pl.Trainer(max_steps=1, limit_val_batches=1, limit_test_batches=1, logger=False,
                         enable_progress_bar=False, default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(model, data)
    assert {"val/map_50_voc07", "val/map_50_voc10", "val/map_50"} <= set(trainer.callback_metrics)
    assert trainer.checkpoint_callback.monitor == "val/map_50_voc07"
    metrics = trainer.test(model, data, verbose=False)[0]
    assert {"test/map_50_voc07", "test/map_50_voc10", "test/map_50"} <= set(metrics)
    for key in ("ap_50_voc07", "ap_50_voc10"):
        assert {f"test/{key}/{name}" for name in data.class_names[1:]} <= set(metrics)
