"""What torch.export and torch's ONNX exporter need to trace and write lit-models' detectors: a batched NMS without a
branch on the data, and ONNX translations of the operators the exporter translates wrongly or not at all (its
``custom_translation_table``). Used by :func:`lit_models.export.save_onnx`."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torchvision.ops import boxes as box_ops


@contextmanager
def tracing_quietly() -> Iterator[None]:
    """Without the FutureWarning of torchvision's NMS registration (its fake kernel, run whenever a graph with NMS is
    traced, calls a torch function since renamed): nothing a user can do about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`create_unbacked_symint` is deprecated", FutureWarning)
        yield


@contextmanager
def exportable_nms() -> Iterator[None]:
    """``torchvision.ops.boxes.batched_nms`` replaced, while a graph is traced, by the coordinate trick it uses
    for fewer than 4,000 boxes on CPU, without its early return on no boxes: whether there are any is known only
    when the graph runs, a branch torch.export cannot trace (nms of no boxes keeps none anyway). torchvision's RPN
    and RoI heads look it up there when they run, and so do the YOLO and region detector nets."""
    original = box_ops.batched_nms
    box_ops.batched_nms = coordinate_trick_nms
    try:
        yield
    finally:
        box_ops.batched_nms = original


def coordinate_trick_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float):
    """Per-class NMS as one NMS: each class's boxes shifted past every other's (torchvision's coordinate trick)."""
    top = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()  # boxes.max() of no boxes fails; they are >= 0
    return box_ops.nms(boxes + (idxs.to(boxes) * (top + 1))[:, None], scores, iou_threshold)


def onnx_roi_pool(features, rois, spatial_scale: float, pooled_height: int, pooled_width: int):
    """``torchvision::roi_pool`` as ONNX's MaxRoiPool (onnxscript's own translation takes the Python function's
    arguments, not the operator's). The operator also returns the argmax that its backward uses: a graph for
    inference has none, so a placeholder of the same shape stands for it."""
    from onnxscript import INT64
    from onnxscript import opset18 as op

    pooled = op.MaxRoiPool(features, rois, pooled_shape=(pooled_height, pooled_width), spatial_scale=spatial_scale)
    return pooled, op.Cast(pooled, to=INT64.dtype)


def onnx_adaptive_max_pool2d(features, output_size: list[int]):
    """``aten::adaptive_max_pool2d``, which ONNX lacks, from its definition: output cell i of a side of n cells is
    the max over input cells floor(i n / m) to ceil((i + 1) n / m) of m, rows first, then columns (a max is
    separable). The map's sides are fixed in the graph (R-CNN's warp). Its indices, for backward, get a placeholder
    as in :func:`onnx_roi_pool`."""
    from onnxscript import INT64
    from onnxscript import opset18 as op

    pooled = features
    for axis, size in ((2, output_size[0]), (3, output_size[1])):
        side = int(features.shape[axis])
        cells = [
            op.ReduceMax(op.Slice(pooled, [i * side // size], [-(-(i + 1) * side // size)], [axis]), [axis], keepdims=1)
            for i in range(size)
        ]
        pooled = op.Concat(*cells, axis=axis)
    return pooled, op.Cast(pooled, to=INT64.dtype)


# Operators the ONNX exporter has no (right) translation for.
TRANSLATIONS = {
    torch.ops.torchvision.roi_pool.default: onnx_roi_pool,
    torch.ops.aten.adaptive_max_pool2d.default: onnx_adaptive_max_pool2d,
}
