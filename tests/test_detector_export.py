"""A whole detector exports to ONNX (decoding, NMS, a region detector's RoI pooling and heads, Faster R-CNN's RPN),
and onnxruntime gives ``net.predict``'s detections: once the padding is dropped, the same number per image, the
same labels, and boxes and scores within float tolerance, on images and proposal counts the graph was not traced
with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_models.export import onnxruntime_session, run_onnx, save_onnx
from lit_models.nets.detection_graph import DetectionGraph, padded, unpadded
from lit_models.nets.fast_rcnn import FastRCNNNet
from lit_models.nets.rcnn import RCNNNet

HEAD = {"num_classes": 4, "backbone": "vgg16", "width_mult": 0.125, "representation_size": 16}


def fast_rcnn_multiscale():
    return FastRCNNNet(**HEAD, min_size=64, test_scales=(48, 96), max_size=200, test_window=16)


def rcnn_trained():
    net = RCNNNet(**HEAD, warp_size=32, context_padding=2)
    net.svm_trained.fill_(True)  # scores from the SVMs, boxes from the regressors
    return net


# YOLO v1 and Faster R-CNN export from their checkpoints in test_export.py, compared there with the same graph in
# PyTorch. Here the region detectors: Fast R-CNN's joint head on RoI max pooling over a multi-scale test pyramid
# (SPPNet shares that map), and a trained staged net, R-CNN's warps (RoIAlign) through the whole CNN.
NETS = {"fast_rcnn_multiscale": fast_rcnn_multiscale, "rcnn_trained": rcnn_trained}


@pytest.mark.parametrize("name", NETS)
def test_the_exported_detector_gives_predicts_detections(name, tmp_path, one_thread):
    torch.manual_seed(0)
    net = NETS[name]().eval()
    graph = DetectionGraph(net, net.box_detections_per_img, uses_proposals=True)
    image = torch.randn(1, 3, 64, 64)
    example = (image, graph.example_proposals(image))
    save_onnx(graph, example, tmp_path / "detector.onnx")
    session = onnxruntime_session(tmp_path / "detector.onnx")
    assert [output.name for output in session.get_outputs()] == ["boxes", "scores", "labels", "counts"]

    found_any = False
    for count in (5, 23):  # other images, and other numbers of proposals than the example's 16
        image = torch.randn(1, 3, 64, 64)
        proposals = graph.example_proposals(image, count)
        outputs = [torch.from_numpy(array) for array in run_onnx(session, (image, proposals))]
        assert outputs[0].shape == (1, net.box_detections_per_img, 4)
        with torch.no_grad():
            expected = net.predict(image, [proposals])
        for found, wanted in zip(unpadded(*outputs), expected, strict=True):
            assert len(found["scores"]) == len(wanted["scores"])
            assert torch.equal(found["labels"], wanted["labels"])
            torch.testing.assert_close(found["scores"], wanted["scores"], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(found["boxes"], wanted["boxes"], rtol=1e-4, atol=1e-3)
            found_any |= len(wanted["scores"]) > 0
        assert not outputs[2][0, int(outputs[3][0]) :].any()  # the padding's labels are the background, 0
    assert found_any  # the comparison saw detections, not only empty lists


def test_padding_round_trips():
    detections = [
        {"boxes": torch.rand(2, 4), "scores": torch.tensor([0.9, 0.5]), "labels": torch.tensor([3, 1])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    boxes, scores, labels, counts = padded(detections, 3)
    assert boxes.shape == (2, 3, 4) and counts.tolist() == [2, 0]
    assert labels.tolist() == [[3, 1, 0], [0, 0, 0]] and np.allclose(scores[0].numpy(), [0.9, 0.5, 0.0])
    for back, original in zip(unpadded(boxes, scores, labels, counts), detections, strict=True):
        assert all(torch.equal(back[key], original[key]) for key in original)
