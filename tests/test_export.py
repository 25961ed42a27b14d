"""Every family's checkpoint exports to ONNX, and onnxruntime gives PyTorch's outputs on a new batch (of another size
than the example the graph was traced with; a detector's graph takes one image: another image), within
lit_models.export.TOLERANCE."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import make_image_tree, run_cli
from families import detector, fit_and_save, language_model, segmenter, sequence_classifier

import lit_models
import lit_models.export
from lit_models import FasterRCNN, ImageFolderDataModule, ResNet
from lit_models.datamodules.sources import shapes
from lit_models.export import TOLERANCE, compare, export, relative_difference, run_onnx, run_torch


def googlenet(root):
    make_image_tree(root, {"train": 3, "val": 1})
    data = ImageFolderDataModule(str(root), image_size=32, batch_size=4, num_workers=0)
    return lit_models.GoogLeNet(num_classes=3, variant="torchvision", width_mult=0.125), data


def resnet(root):
    make_image_tree(root, {"train": 3, "val": 1})
    data = ImageFolderDataModule(str(root), image_size=32, batch_size=4, num_workers=0)
    return ResNet(num_classes=3, depth=18, width_mult=0.125), data


def faster_rcnn(root):
    shapes.export_shapes(root, 3, 1, 0)
    _, data = detector(root)
    model = FasterRCNN(num_classes=data.num_classes, backbone="resnet18", width_mult=0.125, representation_size=16,
                       min_size=64, max_size=64, anchor_sizes=(16, 32))  # fmt: skip
    return model, data


def shapes_family(make):
    def build(root):
        shapes.export_shapes(root, 3, 1, 0)
        return make(root)

    return build


BUILDERS = {
    "resnet": resnet,
    "googlenet": googlenet,
    "fcn": shapes_family(segmenter),
    "yolo": shapes_family(detector),
    "faster_rcnn": faster_rcnn,
    "language_model": language_model,
    "sequence_classifier": sequence_classifier,
}


@pytest.mark.parametrize("name", BUILDERS)
def test_every_family_exports_to_onnx_and_onnxruntime_agrees(name, tmp_path, one_thread):
    torch.manual_seed(0)
    (tmp_path / "data").mkdir()
    checkpoint = fit_and_save(*BUILDERS[name](tmp_path / "data"), tmp_path)
    path, what, difference = export(checkpoint, tmp_path / "model.onnx")
    assert difference <= TOLERANCE and what
    with pytest.raises(FileExistsError, match="already exists"):
        export(checkpoint, tmp_path / "model.onnx")

    module = lit_models.load(checkpoint, device="cpu")
    net, example, _ = module.export_graph()
    if isinstance(
        example, tuple
    ):  # a detector: another image of the size it was traced for (tests/test_detector_export.py)
        inputs = (torch.randn_like(example[0]), *example[1:])
    else:  # a batch of another size
        inputs = (torch.cat([example, example.flip(0) if example.dtype == torch.int64 else torch.randn_like(example)]),)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert compare(run_onnx(session, inputs), run_torch(net, inputs)) <= TOLERANCE


def test_export_from_the_command_line(tmp_path, one_thread, monkeypatch):
    torch.manual_seed(0)
    checkpoint = fit_and_save(*resnet(tmp_path / "data"), tmp_path)
    result = run_cli("export", str(checkpoint), cwd=checkpoint.parent)
    assert checkpoint.with_suffix(".onnx").is_file() and "onnxruntime matches PyTorch" in result.stdout
    exported = onnx.load(str(checkpoint.with_suffix(".onnx")))
    metadata = {prop.key: prop.value for prop in exported.metadata_props}
    assert json.loads(metadata["lit_models.class_names"]) == ["circle", "square", "stripes"]
    assert metadata["lit_models.task"] == "classification" and metadata["lit_models.model"] == "ResNet"
    assert json.loads(metadata["lit_models.data_spec"])["image_size"] == 32  # the preprocessing, with mean and std

    # A graph onnxruntime disagrees with is refused and leaves nothing behind.
    monkeypatch.setattr(lit_models.export, "TOLERANCE", -1.0)
    with pytest.raises(RuntimeError, match="nothing was written"):
        export(checkpoint, tmp_path / "refused.onnx")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "elsewhere"]
    # Without onnxruntime, the error names the extra to install.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'lit-models\[export\]'"):
        export(checkpoint, tmp_path / "again.onnx")
    assert not (tmp_path / "again.onnx").exists()


def test_the_tolerance_is_relative_to_the_outputs_scale():
    logits = np.array([[1.2e4, -3.0e3]], dtype=np.float32)
    assert relative_difference(logits + 3e-3, logits) < TOLERANCE  # float32's last digits at this scale
    assert relative_difference(np.array([[0.5, 0.2]]), np.array([[0.5, 0.3]])) > TOLERANCE
