"""PASCAL VOC 2007's 11-point interpolated AP at IoU 0.5, beside COCO's 101-point one, checked by hand."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from lit_models import DetectionDataModule, YOLOv1
from lit_models.metrics import evaluation_targets, mean_average_precision, voc07_average_precision

TRUTH = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1])}]
# Ranked by score: a hit (recall 1/2, precision 1), a miss (1/2, 1/2), a hit (2/2, 2/3).
FOUND = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]),
          "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}]  # fmt: skip


def test_eleven_points_against_a_hand_count():
    voc07 = voc07_average_precision()
    voc07.update(FOUND, TRUTH)
    # The precision envelope is 1 up to recall 0.5 (recalls 0, 0.1, ..., 0.5: 6 points) and 2/3 after (5 points).
    assert float(voc07.compute()["map_50"]) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11, abs=1e-6)
    coco = mean_average_precision(iou_thresholds=[0.5])
    coco.update(FOUND, TRUTH)
    assert float(coco.compute()["map_50"]) == pytest.approx((51 * 1 + 50 * 2 / 3) / 101, abs=1e-6)  # 101 points


def test_difficult_objects_are_neither_hit_nor_miss():
    truth = [{**TRUTH[0], "difficult": torch.tensor([False, True])}]
    voc07 = voc07_average_precision()
    voc07.update([{key: value[:1] for key, value in FOUND[0].items()}], evaluation_targets(truth))
    assert float(voc07.compute()["map_50"]) == pytest.approx(1.0)  # one scored box found the one counted object


def test_a_detector_logs_voc07_ap_beside_cocos(shapes_tree, tmp_path, one_thread):
    data = DetectionDataModule(str(shapes_tree), image_size=64, batch_size=3, num_workers=0)
    model = YOLOv1(num_classes=data.num_classes, image_size=64, grid_size=4, width_mult=0.125, backbone="resnet18",
                   voc07_ap=True)  # fmt: skip
    trainer = pl.Trainer(max_steps=1, limit_val_batches=1, limit_test_batches=1, logger=False,
                         enable_progress_bar=False, default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(model, data)
    assert "val/map_50_voc07" in trainer.callback_metrics and "val/map_50" in trainer.callback_metrics
    metrics = trainer.test(model, data, verbose=False)[0]
    assert {"test/map_50_voc07", "test/map_50"} <= set(metrics)
    assert {f"test/ap_50_voc07/{name}" for name in data.class_names[1:]} <= set(metrics)
