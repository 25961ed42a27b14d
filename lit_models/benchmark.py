"""``lit-models benchmark CHECKPOINT|RECIPE``: how fast a network runs, on synthetic inputs of its shape, in PyTorch
eager, under ``torch.compile`` and as its exported ONNX graph in onnxruntime, at batch 1 and a larger batch.

The network is what ``lit-models export`` writes (the family's ``export_graph``: a detector whole, with its NMS):
a checkpoint's, or a recipe's untrained one at the recipe's input size (built as ``lit-models summary`` builds it,
without reading data). Each backend is warmed up first (``torch.compile`` compiles then), then the backends take
turns, one call each per round, so that a load that comes and goes on a shared machine falls on all of them alike.
Latency is per call (a batch): the median and the 90th percentile; throughput is the batch over the median.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from lit_models.errors import CommandParser
from lit_models.export import as_inputs, first_line, onnxruntime_session, run_onnx, save_onnx
from lit_models.export_ops import tracing_quietly
from lit_models.summary import module_of

BACKENDS = ("eager", "compile", "onnx")
BACKEND_TITLES = {"eager": "PyTorch eager", "compile": "torch.compile", "onnx": "ONNX (onnxruntime)"}


class Timing(NamedTuple):
    """One backend at one batch size: seconds per call, or why it could not run."""

    seconds: list[float]
    reason: str = ""


def device_of(name: str) -> torch.device:
    """``--device``: "auto" is CUDA where there is a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch finds no CUDA GPU here; use --device cpu (or auto).")
    return torch.device(name)


def batch_of(inputs: tuple[torch.Tensor, ...], size: int) -> tuple[torch.Tensor, ...]:
    """The example's first input (its first dimension the batch) repeated or cut to ``size`` samples; the other
    inputs (a region detector's proposals) as they are."""
    first = inputs[0]
    return (first[torch.arange(size) % len(first)].contiguous(), *inputs[1:])


def prepare(backend: str, net: nn.Module, example: tuple[torch.Tensor, ...], device: torch.device, folder: Path):
    """``backend``'s form of the network, a function of the inputs: the net on ``device``, compiled (at its first
    call of each input shape), or its ONNX graph in an onnxruntime session, exported at its first call: once where
    the graph's batch is dynamic, for each batch size where it is fixed (a detector's, whose images the nets' Python
    loop visits one by one: traced for N images, the loop is N copies in the graph)."""
    if backend == "onnx":
        fixed_batch = 0 not in getattr(net, "dynamic_shapes", ({0: "batch"},))[0]
        provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
        sessions: dict[int, Any] = {}

        def run_graph(inputs: tuple[torch.Tensor, ...]) -> list:
            size = len(inputs[0]) if fixed_batch else 0
            if size not in sessions:
                path = folder / f"graph-{size}.onnx"
                save_onnx(net, batch_of(example, size) if fixed_batch else example, path)
                sessions[size] = onnxruntime_session(path, (provider,), torch.get_num_threads())
            return run_onnx(sessions[size], tuple(value.cpu() for value in inputs))

        return run_graph
    model = net.to(device)
    model = torch.compile(model) if backend == "compile" else model

    def run(inputs: tuple[torch.Tensor, ...]) -> None:
        with torch.inference_mode():
            model(*inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the call's time, not its launch's

    return run


def measure(
    net: nn.Module,
    example: tuple[torch.Tensor, ...],
    batch_sizes: list[int],
    backends: list[str],
    device: torch.device,
    iterations: int,
    warmup: int,
) -> dict[tuple[str, int], Timing]:
    """Seconds per call of each backend at each batch size, the backends taking turns (module docstring).

    Whatever stops a backend (an operator ONNX cannot express, no C++ compiler for torch.compile) is recorded as
    the reason for its cells, and the others go on."""
    results: dict[tuple[str, int], Timing] = {}
    with tempfile.TemporaryDirectory() as folder:
        prepared: dict[str, Callable] = {}
        for backend in backends:
            try:
                prepared[backend] = prepare(backend, net, example, device, Path(folder))
            except Exception as error:  # any failure is this backend's cells, not the command's end
                results.update({(backend, size): Timing([], first_line(error)) for size in batch_sizes})
        for size in batch_sizes:
            inputs = tuple(value.to(device) for value in batch_of(example, size))
            runs: dict[str, Callable] = {}
            for backend, run in prepared.items():
                try:
                    for _ in range(warmup):
                        run(inputs)
                    runs[backend] = run
                except Exception as error:  # torch.compile and the ONNX export happen, and may fail, at a first call
                    results[backend, size] = Timing([], first_line(error))
            seconds: dict[str, list[float]] = {backend: [] for backend in runs}
            for _ in range(iterations):
                for backend, run in runs.items():
                    start = time.perf_counter()
                    run(inputs)
                    seconds[backend].append(time.perf_counter() - start)
            results.update({(backend, size): Timing(times) for backend, times in seconds.items()})
    return results


def cell(timing: Timing, samples: int, unit: str) -> str:
    """ "1,234 images/s, 0.81 ms (p90 0.95)" for a batch of ``samples``, or why the backend could not run."""
    if timing.reason:
        return f"cannot run: {timing.reason}"
    median = statistics.median(timing.seconds)
    p90 = statistics.quantiles(timing.seconds, n=10, method="inclusive")[-1] if len(timing.seconds) > 1 else median
    return f"{samples / median:,.0f} {unit}/s, {median * 1e3:.2f} ms (p90 {p90 * 1e3:.2f})"


def table(
    results: dict[tuple[str, int], Timing], backends: list[str], batch_sizes: list[int], per_sample: int, unit: str
) -> list[str]:
    """The markdown table: a row per batch size, a column per backend."""
    lines = [
        "| batch | " + " | ".join(BACKEND_TITLES[backend] for backend in backends) + " |",
        "|---:|" + "---|" * len(backends),
    ]
    for size in batch_sizes:
        cells = [cell(results[backend, size], size * per_sample, unit) for backend in backends]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return lines


def benchmark(
    source: str | os.PathLike,
    batch_size: int = 32,
    iterations: int = 20,
    warmup: int = 3,
    device: str = "auto",
    backends: list[str] | None = None,
    threads: int | None = None,
) -> str:
    """The report of ``lit-models benchmark``: what ran, on what, and the table."""
    for name, value, ok in (
        ("--batch_size", batch_size, batch_size >= 1),
        ("--iterations", iterations, iterations >= 1),
        ("--warmup", warmup, warmup >= 0),
        ("--threads", threads, threads is None or threads >= 1),
    ):
        if not ok:
            raise ValueError(f"{name} must be >= {0 if name == '--warmup' else 1}, got {value}")
    backends = list(backends or BACKENDS)
    if threads is not None:  # onnxruntime takes torch's number too
        torch.set_num_threads(threads)
    where = device_of(device)
    module = module_of(str(source))
    net, example, what = module.export_graph()
    example = as_inputs(example)
    # A region detector's proposals, random boxes in the image, are an input besides the images.
    input_names = getattr(net, "input_names", ("inputs",))[1:]
    net.eval()
    sizes = sorted({1, batch_size})
    spec = module.data_spec
    # A sequence model's speed is in tokens (steps), an image model's in images.
    per_sample, unit = (example[0].shape[1], "tokens") if spec.inputs in ("features", "tokens") else (1, "images")
    with tracing_quietly():  # torch.compile traces too
        results = measure(net, example, sizes, backends, where, iterations, warmup)
    others = zip(input_names, example[1:], strict=True)
    shape = " x ".join(str(side) for side in example[0].shape[1:]) + " per sample"
    shape += "".join(f", {name} {' x '.join(map(str, value.shape))}" for name, value in others)
    hardware = torch.cuda.get_device_name(where) if where.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [
        f"{type(module).__name__} ({Path(str(source)).name}): {what}",
        f"inputs: synthetic random tensors of {shape} (not your data); device: {hardware}",
        f"{iterations} timed calls per cell after {warmup} warm-up calls; latency per call (a batch): median (p90)",
        "",
        *table(results, backends, sizes, per_sample, unit),
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """``lit-models benchmark CHECKPOINT|RECIPE [--batch_size N] [--iterations N] [--warmup N] [--device D]
    [--backends B ...] [--threads N]``."""
    parser = CommandParser(prog="lit-models benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a .ckpt file written by lit-models, or a recipe (name or YAML file)")
    parser.add_argument("--batch_size", type=int, default=32, help="the larger batch, besides 1 (default 32)")
    parser.add_argument("--iterations", type=int, default=20, help="timed calls per backend and batch (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3; compile happens then)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if there is one")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="what to time")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads of PyTorch and onnxruntime (default: torch's, one per core); on a "
        "machine shared with other work, fewer threads than cores avoids threads waiting for each other",
    )
    args = parser.parse_args(argv)
    report = benchmark(
        args.source, args.batch_size, args.iterations, args.warmup, args.device, args.backends, args.threads
    )
    print(report)
