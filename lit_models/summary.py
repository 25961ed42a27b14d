"""``lit-models summary CHECKPOINT|CONFIG``: parameters, FLOPs per sample (torch's FLOP counter, counting a
multiply-add as 2) and a per-layer table of a checkpoint's or a recipe's network, on the input its data feeds it."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lit_models.errors import CommandParser
from lit_models.inference import load
from lit_models.nets.detection_graph import DetectionGraph
from lit_models.task import FirstOutput


def layer_table(
    net: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], depth: int = 1, listed: str = ""
) -> tuple[list[tuple[str, str, int, float]], int, float]:
    """(rows of (layer, type, parameters, FLOPs per sample) for the modules ``depth`` levels down, total
    parameters, total FLOPs per sample) of one forward pass on ``example`` (its first dimension the batch; a tuple:
    the inputs, the first one's the batch). ``listed``: the submodule whose layers are the rows (a wrapper's
    network, ``"net"``), default the net's own."""
    inputs = example if isinstance(example, tuple) else (example,)
    within = net.get_submodule(listed)
    root = ".".join([type(net).__name__, *([listed] if listed else [])])
    with torch.no_grad(), FlopCounterMode(display=False, depth=depth + 1 + root.count(".")) as counter:
        net.eval()(*inputs)
    counts = counter.get_flop_counts()
    rows = []
    for name, layer in within.named_modules():
        if name and name.count(".") == depth - 1:
            flops = sum(counts.get(f"{root}.{name}", {}).values()) / len(inputs[0])
            rows.append((name, type(layer).__name__, sum(p.numel() for p in layer.parameters()), flops))
    total = sum(counter.get_flop_counts().get("Global", {}).values()) / len(inputs[0])
    return rows, sum(p.numel() for p in within.parameters()), total


def module_of(source: str) -> nn.Module:
    """The LightningModule of a checkpoint, or of a recipe (built with its DataModule, as ``fit`` builds it)."""
    if Path(source).suffix == ".ckpt":
        return load(source, device="cpu")
    from lit_models.cli import build_recipe

    cli = build_recipe(source)
    cli.model.use_data(cli.datamodule.spec)  # as fit does: a sequence module builds its net for the data's task
    return cli.model


def describe(source: str | os.PathLike, depth: int = 1) -> str:
    module = module_of(str(source))
    graph, example, what = module.export_graph()
    # The layers of the network itself, not of the wrapper that gives the graph's outputs.
    wrapped = isinstance(graph, (FirstOutput, DetectionGraph))
    net = graph.net if wrapped else graph
    rows, parameters, flops = layer_table(graph, example, depth, "net" if wrapped else "")
    shape = " x ".join(str(size) for size in (example[0] if isinstance(example, tuple) else example).shape[1:])
    lines = [
        f"{type(module).__name__} ({type(net).__name__}): {what}",
        f"input per sample: {shape}; parameters: {parameters:,}; FLOPs per sample: {flops / 1e9:.3f} G",
        "",
        f"{'layer':<32} {'type':<24} {'parameters':>14} {'GFLOPs':>10}",
    ]
    lines += [
        f"{name:<32} {kind:<24} {count:>14,} {layer_flops / 1e9:>10.4f}" for name, kind, count, layer_flops in rows
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """``lit-models summary CHECKPOINT|CONFIG [--depth N]``."""
    parser = CommandParser(prog="lit-models summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a .ckpt file written by lit-models, or a recipe (name or YAML file)")
    parser.add_argument("--depth", type=int, default=1, help="how many levels of layers the table lists")
    args = parser.parse_args(argv)
    print(describe(args.source, args.depth))
