"""``lit-models export CHECKPOINT``: the network of any lit-models checkpoint as an ONNX file (torch.export, then
ONNX), checked in onnxruntime against PyTorch on the same input before it is kept.

What the graph holds is the family's ``export_graph`` (printed beside the file, and written into the file's
metadata with the class names, the task and the preprocessing):

* classification: images N x 3 x S x S (preprocessed: ``module.preprocess``) -> class scores N x K (softmax gives
  the probabilities);
* segmentation: images N x 3 x H x W -> per-pixel scores N x K x H x W (argmax over K is the mask);
* sequences: features N x T x D, or token ids N x T for a language model -> outputs N x K (per sequence) or
  N x T x V (per step, language model); full-length sequences, no carried state;
* detection, the whole detector (:mod:`lit_models.nets.detection_graph`): YOLO v1 with its decoding, score
  threshold and per-class NMS; Faster R-CNN from the image alone, its RPN in the graph; Fast R-CNN, SPPNet and
  R-CNN from the image and its region proposals (input ``proposals``, R x 4 xyxy in the image's pixels, any R).
  The image is 1 x 3 x H x W at the data's size (the nets' ``predict`` loops over images in Python, so the graph
  is traced for one). The detections are padded to K = ``box_detections_per_img``: outputs ``boxes`` 1 x K x 4
  (xyxy, input pixels), ``scores`` 1 x K, ``labels`` 1 x K (1..C, 0 on padding) and ``counts`` 1, the number of
  real detections, which come first, by decreasing score: the rows of ``net.predict``. NMS is ONNX's
  NonMaxSuppression (torchvision's ``nms`` as onnxscript translates it), RoI max pooling ONNX's MaxRoiPool,
  RoIAlign ONNX's RoiAlign. The flip test (``test_flip``) is not part of the graph.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lit_models.errors import CommandParser
from lit_models.export_ops import TRANSLATIONS, exportable_nms, tracing_quietly
from lit_models.inference import load

# Largest difference allowed between onnxruntime's outputs and PyTorch's, relative to the largest output: float32
# kernels that add in another order differ in the last digits, whatever the outputs' scale.
TOLERANCE = 1e-4


def relative_difference(found: np.ndarray, expected: np.ndarray) -> float:
    """The largest absolute difference over the largest absolute expected value (1 where all are zero)."""
    scale = max(float(np.abs(expected).max()), 1e-12) if expected.size else 1.0
    return float(np.abs(found - expected).max()) / scale if expected.size else 0.0


def onnxruntime_session(path: Path, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 0):
    """An onnxruntime session of the graph at ``path`` (``threads``: its intra-op threads, 0: its default). Its
    threads do not spin-wait between calls: they would take the cores from whatever runs next (PyTorch, in
    ``lit-models benchmark``'s alternating rounds)."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "lit-models export checks the graph in onnxruntime, which is not installed: "
            "pip install 'lit-models[export]' (onnx, onnxscript, onnxruntime)."
        ) from None
    missing = set(providers) - set(onnxruntime.get_available_providers())
    if missing:
        raise RuntimeError(
            f"this onnxruntime has no {', '.join(sorted(missing))} (for CUDA: pip install onnxruntime-gpu)"
        )
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=list(providers))


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
    inputs = as_inputs(example)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".onnx", dir=output.parent, prefix=f".{output.stem}-")
    os.close(handle)
    staged = Path(name)
    try:
        save_onnx(net, inputs, staged)
        describe_in_metadata(staged, module, what)
        difference = compare(run_onnx(onnxruntime_session(staged), inputs), run_torch(net, inputs))
        if difference > TOLERANCE:
            raise RuntimeError(
                f"{output}: onnxruntime differs from PyTorch by {difference:.2e} of the largest output (more than "
                f"{TOLERANCE}); nothing was written. Please report it with the checkpoint's model."
            )
        staged.replace(output)
    finally:
        staged.unlink(missing_ok=True)
    return output, what, difference


def as_inputs(example: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``export_graph``'s example: one input tensor, or a tuple of them (a region detector's image and proposals)."""
    return example if isinstance(example, tuple) else (example,)


def save_onnx(net: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> None:
    """Trace ``net`` on ``inputs`` (torch.export, then the ONNX exporter) and write the graph to ``path``.

    Which dimensions vary between calls is the graph's ``dynamic_shapes`` (torch.export's form), by default the
    first input's batch; its inputs and outputs are named by its ``input_names`` / ``output_names`` where it has
    them. Raises RuntimeError naming the net when it cannot be traced."""
    batch = torch.export.Dim("batch", min=1)  # the examples hold 2: torch.export fixes a size of 1
    dynamic = getattr(net, "dynamic_shapes", ({0: batch},) + ({},) * (len(inputs) - 1))
    names = {key: list(getattr(net, key)) for key in ("input_names", "output_names") if hasattr(net, key)}
    try:
        # torch.export first: given a graph it cannot trace as asked, torch.onnx.export would fall back to one with
        # every size fixed.
        with torch.no_grad(), exportable_nms(), tracing_quietly():
            traced = torch.export.export(net.eval(), inputs, dynamic_shapes=dynamic)
            program = torch.onnx.export(
                traced, dynamo=True, verbose=False, custom_translation_table=TRANSLATIONS, **names
            )
    except Exception as error:  # torch.export's and the ONNX exporter's errors have no common base class
        raise RuntimeError(f"{type(net).__name__} cannot be exported to ONNX: {first_line(error)}") from error
    program.save(str(path))


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def run_torch(net: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """The net's outputs on ``inputs`` as arrays (one output or a tuple of them), as the graph gives them."""
    with torch.no_grad():
        outputs = net.eval()(*inputs)
    return [output.numpy() for output in (outputs if isinstance(outputs, tuple) else (outputs,))]


def run_onnx(session: Any, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """An onnxruntime session's outputs on ``inputs``, fed to its inputs in order."""
    feeds = {given.name: value.numpy() for given, value in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feeds)


def compare(found: list[np.ndarray], expected: list[np.ndarray]) -> float:
    """The largest :func:`relative_difference` over the outputs (infinite where their shapes differ)."""
    if [array.shape for array in found] != [array.shape for array in expected]:
        return float("inf")
    pairs = zip(found, expected, strict=True)
    return max(relative_difference(f.astype(np.float64), e.astype(np.float64)) for f, e in pairs)


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
