"""R-CNN, SPPNet and Fast R-CNN: proposals in the DataModule's batches, cached once, and the three detectors
through the real CLI on VOC and COCO layouts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import REPO, last_metrics, run_cli

from lit_models.datamodules.detection import DetectionDataModule
from lit_models.datamodules.proposal_command import main
from lit_models.datamodules.sources.shapes import CLASS_NAMES, export_shapes
from lit_models.detection import FastRCNN

CONFIGS = REPO / "configs" / "detection"
DETECTORS = ["rcnn", "sppnet", "fast_rcnn"]


@pytest.fixture(scope="module")
def shapes_tree(tmp_path_factory) -> Path:
    """VOC XML and COCO JSON of the same 64-px scenes: 6 train, 3 val, 3 test."""
    return export_shapes(tmp_path_factory.mktemp("prop") / "VOC", num_train=6, num_val=3, num_test=3, size=64)


def data(root: Path, **kwargs) -> DetectionDataModule:
    options = {"proposals": "fast", "proposal_width": None, "num_workers": 0, "batch_size": 3, "hflip": False}
    return DetectionDataModule(root=str(root), **{**options, **kwargs})


def test_prepare_data_caches_proposals_once_and_reports_recall(shapes_tree, tmp_path):
    dm = data(shapes_tree, proposal_dir=str(tmp_path / "cache"))
    report = dm.compute_proposals(("train", "val"))
    files = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == 9  # 6 train + 3 val images, one file each
    assert set(report) == {"train", "val"} and report["val"].recall_50 > 0.8
    stamps = [f.stat().st_mtime_ns for f in files]
    again = data(shapes_tree, proposal_dir=str(tmp_path / "cache"))
    again.compute_proposals(("train", "val"))
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read, not recomputed
    other = data(shapes_tree, proposal_dir=str(tmp_path / "cache"), max_proposals=5)
    other.compute_proposals(("val",))
    assert len(sorted((tmp_path / "cache").rglob("*.npy"))) == 12  # another setting, another folder


def test_batches_carry_proposals_moved_with_the_image(shapes_tree, tmp_path):
    plain = data(shapes_tree, proposal_dir=str(tmp_path / "cache"))
    plain.compute_proposals(("train", "val"))
    plain.setup("fit")
    batch = next(iter(plain.val_dataloader()))
    cached = [torch.from_numpy(plain.proposal_cache.load(path)) for path in batch["path"]]
    assert all(torch.equal(found, kept) for found, kept in zip(batch["proposals"], cached, strict=True))

    resized = data(shapes_tree, proposal_dir=str(tmp_path / "cache"), image_size=128)
    resized.setup("fit")
    batch = next(iter(resized.val_dataloader()))
    for found, kept in zip(batch["proposals"], cached, strict=True):
        assert torch.allclose(found, kept * 2)  # 64 -> 128 px: the proposals are in the model's pixels

    flipped = data(shapes_tree, proposal_dir=str(tmp_path / "cache"), hflip=True)
    flipped.setup("fit")
    flipped.datasets["train"].transform.transforms[0].p = 1.0  # always flip
    item = flipped.datasets["train"][0]
    kept = torch.from_numpy(flipped.proposal_cache.load(item["path"]))
    mirrored = torch.stack([64 - kept[:, 2], kept[:, 1], 64 - kept[:, 0], kept[:, 3]], dim=1)
    assert torch.allclose(item["proposals"], mirrored)


def test_a_missing_cache_entry_names_the_image_and_the_command(shapes_tree, tmp_path):
    dm = data(shapes_tree, proposal_dir=str(tmp_path / "empty"))
    dm.setup("fit")
    item = dm.datasets["val"][0]  # carried to the main process, which raises it (FileDataset's contract)
    assert item["path"] in item["error"] and "prepare_data" in item["error"]


def tiny(detector: str, root: Path, *extra: str) -> list[str]:
    sizes = {"rcnn": ["--model.init_args.warp_size", "32", "--model.init_args.pool_size", "1",
                      "--model.init_args.finetune_epochs", "1"],
             "sppnet": ["--model.init_args.finetune_epochs", "1", "--model.init_args.min_size", "128"],
             "fast_rcnn": ["--model.init_args.min_size", "128"]}  # fmt: skip  # the 64-px scenes at x2
    return [
        "--config", str(CONFIGS / f"{detector}_shapes.yaml"),
        "--data.init_args.root", str(root),
        "--data.init_args.batch_size", "3",
        "--model.init_args.width_mult", "0.125",
        "--model.init_args.representation_size", "32",
        "--model.init_args.rois_per_image", "16",
        "--data.init_args.proposal_width", "null",  # the 64-px scenes as they are, at most 200 boxes each
        "--data.init_args.max_proposals", "200",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.log_every_n_steps", "1",
        *sizes[detector],
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("detector", DETECTORS)
def test_fit_test_predict_in_new_processes_on_voc(detector, shapes_tree, tmp_path):
    args = tiny(detector, shapes_tree, "--data.init_args.proposal_dir", str(tmp_path / "proposals"))
    run_cli("fit", *args, "--trainer.max_epochs", "2", cwd=tmp_path)
    runs = tmp_path / "runs" / f"{detector}_shapes"
    checkpoint = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["class_names"] == CLASS_NAMES and checkpoint["epoch"] == 1
    metrics = (runs / "version_0" / "metrics.csv").read_text()
    assert "val/map_50" in metrics
    if detector != "fast_rcnn":  # epoch 0 fine-tunes; epoch 1 mines the SVMs, then trains the box regressors
        assert "train/loss_classifier" in metrics and "train/loss_box_reg" in metrics
        assert "train/svm_solve_seconds" in metrics and "train/loss_svm" not in metrics
        assert bool(checkpoint["state_dict"]["net.svm_trained"])
        assert len(list((runs / "svm_cache").glob("*.pt"))) == 6  # the 6 training images' features
    assert len(list((tmp_path / "proposals").rglob("*.npy"))) == 9  # fit: train and val images only

    run_cli("test", *args, "--ckpt_path", "best", cwd=tmp_path)
    metrics = (runs / "version_0" / "test" / "metrics.csv").read_text()  # beside the run it evaluates
    for key in ("test/map_50", "test/map", "test/ap_50/circle"):
        assert key in metrics

    run_cli("predict", *args, "--ckpt_path", "last", cwd=tmp_path)
    records = json.loads((runs / "version_0" / "predict" / "predictions" / "detections.json").read_text())
    test_ids = (shapes_tree / "ImageSets" / "Main" / "test.txt").read_text().split()
    assert [record["name"] for record in records] == test_ids
    for record in records:
        for detection in record["detections"]:
            x1, y1, x2, y2 = detection["box"]
            assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 64
            assert detection["label"] == CLASS_NAMES[detection["label_index"]] != "background"


def test_fast_rcnn_on_coco_json(shapes_tree, tmp_path):
    args = tiny("fast_rcnn", shapes_tree, "--data.init_args.format", "coco",
                "--data.init_args.proposal_dir", str(tmp_path / "proposals"))  # fmt: skip
    run_cli("fit", *args, "--trainer.max_epochs", "1", cwd=tmp_path)
    run_cli("test", *args, "--ckpt_path", "last", cwd=tmp_path)
    metrics = (tmp_path / "runs" / "fast_rcnn_shapes" / "version_0" / "test" / "metrics.csv").read_text()
    assert "test/map_50" in metrics and "test/ap_50/triangle" in metrics


def test_bad_svd_ranks_are_refused_when_the_module_is_built():
    with pytest.raises(ValueError, match="svd_ranks must be two ranks >= 1"):
        FastRCNN(num_classes=4, backbone="resnet18", width_mult=0.125, representation_size=32, svd_ranks=(0, 4))


def test_a_proposal_detector_without_proposals_is_refused(shapes_tree, tmp_path):
    args = tiny("fast_rcnn", shapes_tree, "--data.init_args.proposals", "null")
    with pytest.raises(AssertionError, match="data.proposals is null"):
        run_cli("fit", *args, "--trainer.max_epochs", "1", cwd=tmp_path)


def test_the_command_fills_a_voc_folder_and_reports_recall_per_split(shapes_tree, tmp_path, capsys):
    main([str(shapes_tree), "--width", "none", "--workers", "1", "--proposal-dir", str(tmp_path / "proposals")])
    out = capsys.readouterr().out
    assert "12 of 12 images computed" in out
    for split, images in (("train", 6), ("val", 3), ("test", 3)):
        assert re.search(
            rf"{split}: {images} images, \d+ boxes, \d+ proposals per image, recall [01]\.\d+ at IoU 0\.5", out
        )


def test_ddp_on_two_cpu_processes_matches_single_process(shapes_tree, tmp_path):
    args = tiny("fast_rcnn", shapes_tree, "--data.init_args.proposal_dir", str(tmp_path / "proposals"))
    ddp = ["--trainer", str(REPO / "configs" / "trainer" / "ddp_cpu.yaml")]
    single = ["--trainer", str(REPO / "configs" / "trainer" / "default.yaml"), "--trainer.accelerator", "cpu"]
    run_cli("fit", *args, *ddp, "--trainer.max_epochs", "1", cwd=tmp_path)
    values = []  # each validate writes into the fit's run folder, replacing the one before
    for trainer in (ddp, single):
        run_cli("validate", *args, *trainer, "--ckpt_path", "last", cwd=tmp_path)
        values.append(last_metrics(tmp_path / "runs" / "fast_rcnn_shapes" / "version_0" / "validate" / "metrics.csv"))
    # 3 val scenes over 2 ranks: mAP gathers every rank's detections and truth, each scene counted once.
    for key in ("val/map_50", "val/map"):
        assert values[0][key] == pytest.approx(values[1][key], abs=1e-6)


def test_staged_training_under_ddp_needs_unused_parameters_found(shapes_tree, tmp_path):
    args = tiny("sppnet", shapes_tree, "--data.init_args.proposal_dir", str(tmp_path / "proposals"),
                "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.max_epochs", "2")  # fmt: skip
    with pytest.raises(AssertionError, match="ddp_find_unused_parameters_true"):
        run_cli("fit", *args, "--trainer.strategy", "ddp", cwd=tmp_path)
    run_cli("fit", *args, "--trainer.strategy", "ddp_find_unused_parameters_true", cwd=tmp_path)
    checkpoint = tmp_path / "runs" / "sppnet_shapes" / "version_1" / "checkpoints" / "last.ckpt"
    assert bool(torch.load(checkpoint, weights_only=True)["state_dict"]["net.svm_trained"])  # both stages ran


def test_the_truncated_head_is_restored_when_test_raises(shapes_tree, tmp_path, monkeypatch):
    model = FastRCNN(num_classes=4, backbone="resnet18", width_mult=0.125, representation_size=32, svd_ranks=(8, 8),
                     min_size=64, max_size=64)  # fmt: skip

    def fails_once_truncated(*args, **kwargs):
        assert model.net._truncated_head, "test detects with the truncated head"
        raise RuntimeError("a bad batch")

    monkeypatch.setattr(model.net, "predict", fails_once_truncated)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(RuntimeError, match="a bad batch"):
        trainer.test(model, data(shapes_tree, proposal_dir=str(tmp_path / "cache")))
    assert model.net._truncated_head == ()  # fc6/fc7 again, for whatever runs next
