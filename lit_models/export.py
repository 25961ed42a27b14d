"""``lit-models export CHECKPOINT``: the network of any lit-models checkpoint as an ONNX file (torch.export, then
ONNX), checked in onnxruntime against PyTorch on the same input before it is kept.

What the graph holds is the family's ``export_graph`` (printed beside the file, and written into the file's
metadata with the class names, the task and the preprocessing):

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

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from lit_models.errors import CommandParser
from lit_models.inference import load

# Largest difference allowed between onnxruntime's outputs and PyTorch's, relative to the largest output: float32
# kernels that add in another order differ in the last digits, whatever the outputs' scale.
TOLERANCE = 1e-4


def relative_difference(found: np.ndarray, expected: np.ndarray) -> float:
    """The largest absolute difference over the largest absolute expected value (1 where all are zero)."""
    scale = max(float(np.abs(expected).max()), 1e-12) if expected.size else 1.0
    return float(np.abs(found - expected).max()) / scale if expected.size else 0.0


def onnxruntime_session(path: Path):
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "lit-models export checks the graph in onnxruntime, which is not installed: "
            "pip install 'lit-models[export]' (onnx, onnxscript, onnxruntime)."
        ) from None
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def export(
    checkpoint: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False
) -> tuple[Path, str, float]:
    """Write the checkpoint's network as ONNX to ``output``; return (file, what it computes, largest difference
    from PyTorch's outputs in onnxruntime on the example input, relative to the largest output).

    The graph is written to a temporary file beside ``output`` and moved into place only once onnxruntime agrees
    with PyTorch, so a refused graph leaves nothing behind and an existing file is replaced only by a checked one.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; choose another --output or pass --overwrite.")
    module = load(checkpoint, device="cpu")
    net, example, what = module.export_graph()
    net.eval()
    batch = torch.export.Dim("batch", min=1)  # the examples hold 2: torch.export fixes a size of 1
    with torch.no_grad():
        expected = net(example).numpy()
        program = torch.onnx.export(net, (example,), dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".onnx", dir=output.parent, prefix=f".{output.stem}-")
    os.close(handle)
    staged = Path(name)
    try:
        program.save(str(staged))
        describe_in_metadata(staged, module, what)
        session = onnxruntime_session(staged)
        found = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
        difference = relative_difference(found, expected)
        if difference > TOLERANCE:
            raise RuntimeError(
                f"{output}: onnxruntime differs from PyTorch by {difference:.2e} of the largest output (more than "
                f"{TOLERANCE}); nothing was written. Please report it with the checkpoint's model."
            )
        staged.replace(output)
    finally:
        staged.unlink(missing_ok=True)
    return output, what, difference


def describe_in_metadata(path: Path, module: torch.nn.Module, what: str) -> None:
    """Write what a user of the .onnx file needs into its metadata (``metadata_props``): the task, the class names,
    the preprocessing (the data's description), the model and what the graph computes."""
    import onnx

    spec = module.data_spec
    model = onnx.load(str(path))
    entries = {
        "lit_models.model": type(module).__name__,
        "lit_models.graph": what,
        "lit_models.task": spec.task,
        "lit_models.class_names": json.dumps(list(spec.class_names)),
        "lit_models.data_spec": json.dumps(spec.to_dict()),
    }
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def main(argv: list[str]) -> None:
    """``lit-models export CHECKPOINT [--output FILE] [--overwrite]``."""
    parser = CommandParser(
        prog="lit-models export",
        description="Write a lit-models checkpoint's network as ONNX, checked in onnxruntime; the class names, task "
        "and preprocessing go into the file's metadata. Needs the export extra: pip install 'lit-models[export]'.",
    )
    parser.add_argument("checkpoint", help="a .ckpt file written by lit-models")
    parser.add_argument("--output", help="the .onnx file to write (default: beside the checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    output = args.output or str(Path(args.checkpoint).with_suffix(".onnx"))
    path, what, difference = export(args.checkpoint, output, args.overwrite)
    print(f"wrote {path}: {what}; onnxruntime matches PyTorch within {difference:.1e} of the largest output "
          f"(tolerance {TOLERANCE})")  # fmt: skip
