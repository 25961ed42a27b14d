"""Parameter counts of every classifier configuration at 1,000 classes, beside torchvision's where it has one, and
FLOPs per 224 x 224 image (torch's FLOP counter: a multiply-add counts 2).

python benchmarks/param_counts.py      # prints the table in docs/classification.md (nets are built on the meta device)
"""

from __future__ import annotations

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from lit_models.nets.alexnet import AlexNet
from lit_models.nets.densenet import DenseNet
from lit_models.nets.googlenet import GoogLeNet
from lit_models.nets.resnet import ResNet
from lit_models.nets.vgg import VGG

ROWS = [
    ("AlexNet", 'variant="paper"', lambda: AlexNet(variant="paper"), None),
    ("AlexNet", 'variant="paper", two_tower=True', lambda: AlexNet(variant="paper", two_tower=True), None),
    ("AlexNet", 'variant="torchvision"', lambda: AlexNet(variant="torchvision"), "alexnet"),
    *[("VGG", f"depth={d}", (lambda d=d: VGG(depth=d)), f"vgg{d}") for d in (11, 13, 16, 19)],
    ("VGG", "depth=16, batch_norm=True", lambda: VGG(depth=16, batch_norm=True), "vgg16_bn"),
    ("GoogLeNet", 'variant="paper", aux_weight=0', lambda: GoogLeNet(aux_logits=False), None),
    (
        "GoogLeNet",
        'variant="torchvision", aux_weight=0',
        lambda: GoogLeNet(variant="torchvision", aux_logits=False),
        "googlenet",
    ),
    *[("ResNet", f"depth={d}", (lambda d=d: ResNet(depth=d)), f"resnet{d}") for d in (18, 34, 50, 101, 152)],
    ("ResNet", "depth=34, residual=False (plain-34)", lambda: ResNet(depth=34, residual=False), None),
    *[("DenseNet", f"depth={d}", (lambda d=d: DenseNet(depth=d)), f"densenet{d}") for d in (121, 161, 169, 201)],
]


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def gflops(net: torch.nn.Module) -> float:
    """FLOPs of one 224 x 224 image, in billions (counted on the meta device: no arithmetic is done)."""
    with FlopCounterMode(display=False) as counter:
        net.eval()(torch.empty(1, 3, 224, 224))
    return counter.get_total_flops() / 1e9


def main() -> None:
    print("| module | arguments | parameters | torchvision | GFLOPs (224 px) |")
    print("|---|---|---:|---:|---:|")
    with torch.device("meta"):
        for name, args, build, reference in ROWS:
            theirs = "—"
            if reference:
                kwargs = {"aux_logits": False, "init_weights": False} if reference == "googlenet" else {}
                theirs = f"{count(getattr(torchvision.models, reference)(**kwargs)):,}"
            net = build()
            print(f"| `{name}` | `{args}` | {count(net):,} | {theirs} | {gflops(net):.2f} |")


if __name__ == "__main__":
    main()
