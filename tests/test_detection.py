"""The detection family: the Detector loop and mAP, Faster R-CNN's parts, the writer, and both detectors
through the real CLI on VOC and COCO layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, last_metrics, run_cli
from PIL import Image
from torchvision.ops import FrozenBatchNorm2d, roi_pool

from lit_models.datamodules.sources.shapes import CLASS_NAMES, export_shapes
from lit_models.metrics import evaluation_targets, mean_average_precision
from lit_models.nets.faster_rcnn import FasterRCNNNet, RoIMaxPool, freeze_first_convs
from lit_models.nets.vgg import VGG
from lit_models.predictions import BoxPrediction
from lit_models.writers import DetectionWriter

CONFIGS = REPO / "configs" / "detection"


@pytest.fixture(scope="module")
def shapes_tree(tmp_path_factory) -> Path:
    """VOC XML and COCO JSON of the same 64-px scenes: 8 train, 4 val, 3 test."""
    return export_shapes(tmp_path_factory.mktemp("det") / "VOC", num_train=8, num_val=4, num_test=3, size=64)


def test_difficult_objects_are_neither_hits_nor_misses():
    truth = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]]),
            "labels": torch.tensor([1, 2, 1]),
            "difficult": torch.tensor([False, False, True]),
            "iscrowd": torch.tensor([False, False, False]),
        }
    ]
    found = {"boxes": truth[0]["boxes"][:2], "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])}
    metric = mean_average_precision()
    metric.update([found], evaluation_targets(truth))
    assert metric.compute()["map_50"] == pytest.approx(1.0)  # the difficult object is not missed
    # Detecting it is not a false positive either (VOC); counting it as ordinary truth would make it one miss.
    metric.reset()
    every = {"boxes": truth[0]["boxes"], "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 2, 1])}
    metric.update([every], evaluation_targets(truth))
    assert metric.compute()["map_50"] == pytest.approx(1.0)
    plain = [{k: v for k, v in truth[0].items() if k != "difficult"}]
    metric.reset()
    metric.update([found], evaluation_targets(plain))
    assert metric.compute()["map_50"] < 0.9


def test_roi_max_pool_is_fast_rcnns_roi_pooling_at_stride_16():
    features = torch.randn(2, 5, 8, 8)
    proposals = [torch.tensor([[0.0, 0, 64, 64], [16, 16, 48, 100]]), torch.tensor([[8.0, 8, 40, 24]])]
    pooled = RoIMaxPool(1 / 16)({"0": features}, proposals, [(128, 128)] * 2)
    assert pooled.shape == (3, 5, 7, 7)
    assert torch.equal(pooled, roi_pool(features, proposals, 7, 1 / 16))


def test_frozen_layers_fix_the_first_convolutions_and_their_batch_norms():
    net = FasterRCNNNet(4, "resnet18", width_mult=0.125, frozen_layers=1, min_size=64, max_size=64)
    trunk = net.backbone.body
    assert not trunk.conv1.weight.requires_grad and isinstance(trunk.bn1, FrozenBatchNorm2d)
    assert trunk.layer1[0].conv1.weight.requires_grad and not isinstance(trunk.layer1[0].bn1, FrozenBatchNorm2d)
    with pytest.raises(ValueError, match="only 15 convolutions"):  # conv1, 4 + 5 + 5 in layer1-3 (2 projections)
        freeze_first_convs(FasterRCNNNet(4, "resnet18", width_mult=0.125).backbone, 16)


def test_vgg_backbone_weights_initialise_the_trunk_and_fc6_fc7(tmp_path):
    vgg = VGG(depth=16, num_classes=10, width_mult=0.0625)
    torch.save(vgg.state_dict(), tmp_path / "vgg.pth")
    net = FasterRCNNNet(3, "vgg16", width_mult=0.0625, min_size=64, max_size=64)
    net.load_backbone_weights(tmp_path / "vgg.pth")
    assert torch.equal(net.backbone.body[0].weight, vgg.features[0].weight)
    assert torch.equal(net.backbone.body[28].weight, vgg.features[28].weight)  # conv5_3; pool5 is dropped
    assert torch.equal(net.roi_heads.box_head.fc6.weight, vgg.classifier[0].weight)
    assert torch.equal(net.roi_heads.box_head.fc7.bias, vgg.classifier[3].bias)


def test_faster_rcnn_net_trains_and_predicts_mixed_sizes():
    torch.manual_seed(0)
    net = FasterRCNNNet(4, "resnet18", width_mult=0.125, min_size=64, max_size=96, anchor_sizes=(16, 32),
                        representation_size=32, rpn_post_nms_top_n_test=20)  # fmt: skip
    images = [torch.randn(3, 64, 80), torch.randn(3, 72, 64)]
    targets = [
        {"boxes": torch.tensor([[4.0, 4, 30, 30]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # no objects: valid
    ]
    parts = net.loss(images, targets)
    assert set(parts) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    torch.stack(list(parts.values())).sum().backward()
    net.eval()
    with torch.no_grad():
        detections = net.predict(images)
    for image, found in zip(images, detections, strict=True):
        assert set(found) == {"boxes", "scores", "labels"}
        assert (found["boxes"][:, 2] <= image.shape[2]).all() and (found["boxes"][:, 3] <= image.shape[1]).all()
    # loss() is the losses whatever mode the net is in (a validation loss, a notebook's net.eval() first).
    with torch.no_grad():
        parts = net.loss(images, targets)
    assert set(parts) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert not net.training and not net.rpn.training and not net.roi_heads.training  # its mode kept


def test_writer_draws_boxes_and_writes_json(tmp_path):
    picture = np.full((30, 40, 3), 200, dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")

    class Module:
        display_names = CLASS_NAMES

    writer = DetectionWriter(output=str(tmp_path / "out"), draw_score=0.5)
    writer.path = tmp_path / "out"
    prediction = [
        BoxPrediction(path=str(tmp_path / "in.png"), name="in", boxes=torch.tensor([[2.0, 3, 20, 25], [5, 5, 9, 9]]),
                      scores=torch.tensor([0.9, 0.1]), labels=torch.tensor([2, 1]), names=["square", "circle"])
    ]  # fmt: skip
    writer.write_on_batch_end(None, Module(), prediction, None, None, 0, 0)

    class Trainer:
        world_size, is_global_zero = 1, True

    writer.on_predict_end(Trainer(), Module())
    records = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert records == [
        {
            "path": str(tmp_path / "in.png"),
            "name": "in",
            "detections": [
                {"label": "square", "label_index": 2, "score": 0.9, "box": [2.0, 3.0, 20.0, 25.0]},
                {"label": "circle", "label_index": 1, "score": 0.1, "box": [5.0, 5.0, 9.0, 9.0]},
            ],
        }
    ]
    drawn = np.array(Image.open(tmp_path / "out" / "images" / "in.png"))
    assert drawn.shape == picture.shape
    assert (drawn[3, 10] != 200).any()  # the square's box top edge, drawn in its colour
    assert (drawn[5, 7] == 200).all()  # the 0.1 circle is below draw_score: not drawn


def tiny(detector: str, root: Path, *extra: str) -> list[str]:
    sizes = {
        "faster_rcnn": ["--model.init_args.min_size", "64", "--model.init_args.max_size", "64",
                        "--model.init_args.representation_size", "32"],
        "yolov1": ["--model.init_args.image_size", "64", "--data.init_args.image_size", "64",
                   "--model.init_args.grid_size", "4"],
    }  # fmt: skip
    return [
        "--config", str(CONFIGS / f"{detector}_shapes.yaml"),
        "--data.init_args.root", str(root),
        "--data.init_args.batch_size", "4",
        "--model.init_args.width_mult", "0.125",
        *sizes[detector],
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("detector", ["faster_rcnn", "yolov1"])
def test_fit_test_predict_in_new_processes_on_voc(detector, shapes_tree, tmp_path):
    args = tiny(detector, shapes_tree)
    run_cli("fit", *args, "--trainer.max_epochs", "2", cwd=tmp_path)
    runs = tmp_path / "runs" / f"{detector}_shapes"
    checkpoint = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["class_names"] == CLASS_NAMES and checkpoint["epoch"] == 1
    assert "val/map_50" in (runs / "version_0" / "metrics.csv").read_text()

    run_cli("test", *args, "--ckpt_path", "best", cwd=tmp_path)
    metrics = (runs / "version_0" / "test" / "metrics.csv").read_text()  # beside the run it evaluates
    for key in ("test/map_50", "test/map", "test/map_75", "test/mar_100", "test/ap_50/circle"):
        assert key in metrics

    run_cli("predict", *args, "--ckpt_path", "last", cwd=tmp_path)
    predictions = runs / "version_0" / "predict" / "predictions"
    test_ids = (shapes_tree / "ImageSets" / "Main" / "test.txt").read_text().split()
    assert sorted(p.stem for p in (predictions / "images").iterdir()) == test_ids
    records = json.loads((predictions / "detections.json").read_text())
    assert [record["name"] for record in records] == test_ids
    for record in records:
        assert Image.open(predictions / "images" / f"{record['name']}.png").size == (64, 64)
        for detection in record["detections"]:
            x1, y1, x2, y2 = detection["box"]  # in the file's 64-px pixels, whatever the model's input size
            assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 64
            assert detection["label"] == CLASS_NAMES[detection["label_index"]] != "background"
    with pytest.raises(AssertionError, match="already exists"):
        run_cli("predict", *args, "--ckpt_path", "last", "--prediction_writer.output", str(predictions), cwd=tmp_path)


@pytest.mark.parametrize("detector", ["faster_rcnn", "yolov1"])
def test_fit_and_test_on_coco_json(detector, shapes_tree, tmp_path):
    args = tiny(detector, shapes_tree, "--data.init_args.format", "coco")
    run_cli("fit", *args, "--trainer.max_epochs", "1", cwd=tmp_path)
    run_cli("test", *args, "--ckpt_path", "last", cwd=tmp_path)
    metrics = (tmp_path / "runs" / f"{detector}_shapes" / "version_0" / "test" / "metrics.csv").read_text()
    assert "test/map_50" in metrics and "test/ap_50/triangle" in metrics


def test_yolo_refuses_a_data_size_other_than_its_own(shapes_tree, tmp_path):
    args = tiny("yolov1", shapes_tree, "--data.init_args.image_size", "48")
    with pytest.raises(AssertionError, match="data.image_size is 48 but model.image_size is 64"):
        run_cli("fit", *args, "--trainer.max_epochs", "1", cwd=tmp_path)


def test_ddp_on_two_cpu_processes_matches_single_process(shapes_tree, tmp_path):
    args = tiny("yolov1", shapes_tree, "--model.init_args.voc07_ap", "true")
    ddp = ["--trainer", str(REPO / "configs" / "trainer" / "ddp_cpu.yaml")]
    single = ["--trainer", str(REPO / "configs" / "trainer" / "default.yaml"), "--trainer.accelerator", "cpu"]
    run_cli("fit", *args, *ddp, "--trainer.max_epochs", "1", cwd=tmp_path)
    runs = tmp_path / "runs" / "yolov1_shapes"
    validated = []  # each validate writes into the fit's run folder, replacing the one before
    for trainer in (ddp, single):
        run_cli("validate", *args, *trainer, "--ckpt_path", "last", cwd=tmp_path)
        validated.append(last_metrics(runs / "version_0" / "validate" / "metrics.csv"))
    # 4 val scenes over 2 ranks: mAP gathers every rank's detections and truth, each scene counted once.
    for key in ("val/map_50", "val/map", "val/map_50_voc07", "val/map_50_voc10"):
        assert validated[0][key] == pytest.approx(validated[1][key], abs=1e-6)
    run_cli("predict", *args, *ddp, "--ckpt_path", "last", cwd=tmp_path)
    records = json.loads((runs / "version_0" / "predict" / "predictions" / "detections.json").read_text())
    test_ids = (shapes_tree / "ImageSets" / "Main" / "test.txt").read_text().split()
    assert [record["name"] for record in records] == test_ids  # both ranks' images, gathered into one file
