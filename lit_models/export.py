"""``lit-models export CHECKPOINT``: the network of any lit-models checkpoint as an ONNX file (torch.export, then
ONNX), checked in onnxruntime against PyTorch on the same input before it is kept.

What the graph holds, by family (``describe`` prints it beside the file):

* classification: images N x 3 x S x S (preprocessed: ``module.preprocess``) -> class scores N x K (softmax gives
  the probabilities);
* segmentation: images N x 3 x H x W -> per-pixel scores N x K x H x W (argmax over K is the mask);
* sequences: features N x T x D, or token ids N x T for a language model -> outputs N x K (per sequence) or
  N x T x V (per step, language model); full-length sequences, no carried state;
* YOLO v1: images N x 3 x S x S -> its raw grid N x S' x S' x (5B + C). The graph stops there: the detections
  are ``lit_models.nets.yolo.decode(grid, image_size, boxes_per_cell, box_score_thresh, box_nms_thresh,
  box_detections_per_img)``, whose thresholding and NMS give a number of boxes that depends on the data, which
  torch.export cannot trace;
* Faster R-CNN, Fast R-CNN, SPPNet, R-CNN: images -> the trunk's feature map only. Proposals, RoI pooling, the
  heads and NMS are data-dependent and stay in PyTorch (``module.net.predict``); no full detector graph is
  exported yet.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lit_models.inference import load

TOLERANCE = 1e-4  # largest absolute difference allowed between onnxruntime's outputs and PyTorch's


class FirstOutput(nn.Module):
    """A net whose forward returns a tuple or NamedTuple (GoogLeNet's logits, a sequence net's outputs), reduced to
    its first tensor: the one the exported graph gives."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inputs: Tensor) -> Tensor:
        output = self.net(inputs)
        return output if isinstance(output, Tensor) else output[0]


def image_side(hparams: dict[str, Any]) -> int:
    """The square side the data fed the network, or 224 where it kept image sizes."""
    for name in ("image_size", "crop_size", "base_size"):
        if hparams.get(name):
            return int(hparams[name])
    return 224


def graph(module: nn.Module) -> tuple[nn.Module, Tensor, str]:
    """(the module to export, an example input, what the graph computes) for a module from ``lit_models.load``."""
    from lit_models.detection.base import Detector
    from lit_models.sequence.base import SequenceModule

    hparams = getattr(module, "inference_data", (None, {}))[1]
    if isinstance(module, SequenceModule):
        steps = hparams.get("seq_len") or 16
        if module.input_size is None:  # token ids
            example = torch.randint(0, module.num_classes, (2, steps))
            return FirstOutput(module.net), example, "token ids N x T -> next-token scores N x T x V"
        example = torch.randn(2, steps, module.input_size)
        return FirstOutput(module.net), example, f"features N x T x {module.input_size} -> outputs N x K"
    side = image_side(hparams)
    example = torch.randn(2, 3, side, side)
    if isinstance(module, Detector):
        if hasattr(module.net, "trunk"):
            return module.net.trunk, example, "images -> the trunk's feature map (the rest stays in PyTorch)"
        if hasattr(module.net, "backbone") and not hasattr(module.net, "grid_size"):
            return module.net.backbone, example, "images -> the backbone's feature map (the rest stays in PyTorch)"
        side = module.net.image_size
        example = torch.randn(2, 3, side, side)
        return module.net, example, "images -> raw grid N x S x S x (5B + C); decode with lit_models.nets.yolo.decode"
    return FirstOutput(module.net), example, "images -> scores (N x K, or N x K x H x W for segmentation)"


def export(
    checkpoint: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False
) -> tuple[Path, str, float]:
    """Write the checkpoint's network as ONNX to ``output``; return (file, what it computes, largest difference
    from PyTorch's outputs in onnxruntime on the example input)."""
    import onnxruntime

    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; choose another --output or pass --overwrite.")
    module = load(checkpoint, device="cpu")
    net, example, what = graph(module)
    net.eval()
    batch = torch.export.Dim("batch", min=1)  # the examples hold 2: torch.export fixes a size of 1
    with torch.no_grad():
        expected = net(example).numpy()
        program = torch.onnx.export(net, (example,), dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(output))
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    found = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    difference = float(np.abs(found - expected).max())
    if difference > TOLERANCE:
        raise RuntimeError(f"{output}: onnxruntime differs from PyTorch by {difference:.2e} (> {TOLERANCE}).")
    return output, what, difference


def main(argv: list[str]) -> None:
    """``lit-models export CHECKPOINT [--output FILE] [--overwrite]``."""
    parser = argparse.ArgumentParser(
        prog="lit-models export", description="Write a lit-models checkpoint's network as ONNX, checked in onnxruntime."
    )
    parser.add_argument("checkpoint", help="a .ckpt file written by lit-models")
    parser.add_argument("--output", help="the .onnx file to write (default: beside the checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    output = args.output or str(Path(args.checkpoint).with_suffix(".onnx"))
    path, what, difference = export(args.checkpoint, output, args.overwrite)
    print(f"wrote {path}: {what}; onnxruntime matches PyTorch within {difference:.1e} (tolerance {TOLERANCE})")
