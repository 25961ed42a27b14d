"""ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition") and its plain counterparts.

State-dict keys and parameter counts equal torchvision's ``resnet18 … resnet152`` at the default settings
(``shortcut="B"``, ``width_mult=1``, ``small_input=False``), so a local torchvision checkpoint file loads.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# depth -> (block type, blocks per stage); paper Table 1.
STAGES: dict[int, tuple[str, tuple[int, ...]]] = {
    # The CIFAR-10 networks of §4.2: three stages of n basic blocks (6n + 2 weighted layers), 16/32/64 wide.
    **{6 * n + 2: ("basic", (n, n, n)) for n in (3, 5, 7, 9, 18)},
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class ZeroPadShortcut(nn.Module):
    """Paper option A: identity shortcut that subsamples and zero-pads the extra channels (no parameters)."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))


def make_shortcut(
    shortcut: Literal["A", "B", "C"], in_channels: int, out_channels: int, stride: int
) -> nn.Module | None:
    """The shortcut branch of one block; None means the identity."""
    changes_shape = stride != 1 or in_channels != out_channels
    if shortcut == "C" or (shortcut == "B" and changes_shape):
        # Projection: 1x1 conv + BN (named `downsample.0/1` as in torchvision).
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
        )
    if shortcut == "A" and changes_shape:
        return ZeroPadShortcut(out_channels, stride)
    return None


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self, in_channels: int, channels: int, stride: int, residual: bool, shortcut: Literal["A", "B", "C"]
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride) if residual else None

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50/101/152).

    ``stride_in_1x1=True`` puts the stride in the first 1x1 convolution as the paper does; the default puts it in
    the 3x3 ("ResNet v1.5", torchvision's choice, about 0.5 % better top-1 for the same parameters).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int,
        residual: bool,
        shortcut: Literal["A", "B", "C"],
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        stride1, stride3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, channels, 1, stride=stride1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride) if residual else None

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class ResNet(nn.Module):
    """Residual network, or with ``residual=False`` the paper's *plain* network of the same depth.

    Deviations and options: batch norm after every convolution as in the paper (§3.4); ``small_input`` replaces
    the 7x7/2 stem and its max-pool with one 3x3/1 convolution for 32x32-class images, keeping the ImageNet stage
    widths (weights stay interchangeable with the ImageNet model except conv1). Depths 20, 32, 44, 56 and 110 are
    the paper's CIFAR-10 networks (§4.2): a 3x3 stem of 16 channels, three stages of n basic blocks 16, 32 and 64
    wide (strides 1, 2, 2), global average pooling and the classifier; with ``shortcut="A"`` (the paper's) ResNet-20
    has 0.27 M parameters and ResNet-56 0.85 M (Table 6), and ``residual=False`` gives the plain twins of Figure 6.
    """

    def __init__(
        self,
        depth: Literal[18, 34, 50, 101, 152, 20, 32, 44, 56, 110] = 50,
        num_classes: int = 1000,
        residual: bool = True,
        shortcut: Literal["A", "B", "C"] = "B",
        small_input: bool = False,
        width_mult: float = 1.0,
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        """Build the network.

        Args:
            depth: Number of weighted layers: 18, 34 (basic blocks) or 50, 101, 152 (bottleneck blocks); 20, 32, 44,
                56, 110 for the CIFAR-10 networks of §4.2 (3 stages, 16/32/64 wide, 3x3 stem; use shortcut "A").
            num_classes: Size of the classifier output.
            residual: False removes every shortcut, giving the paper's plain network (degradation experiment).
            shortcut: Paper §3.3 option: "A" zero-padding identity, "B" projection only where the shape changes
                (torchvision), "C" projection on every block.
            small_input: Use a 3x3 stride-1 stem without max-pooling, for 32x32-class images.
            width_mult: Multiplies every stage width (64, 128, 256, 512); below 1 builds a small net for tests.
            stride_in_1x1: Bottleneck stride in the first 1x1 conv (paper) instead of the 3x3 (torchvision).
            zero_init_residual: Start each block's last BN scale at zero, so every block begins as the identity
                (Goyal et al. 2017).
        """
        super().__init__()
        cifar = depth in (20, 32, 44, 56, 110)
        self.torchvision_name = None if cifar else f"resnet{depth}"  # whose weights fit a torchvision layout
        if depth not in STAGES:
            raise ValueError(f"ResNet depth must be one of {sorted(STAGES)}, got {depth}")
        if shortcut not in ("A", "B", "C"):
            raise ValueError(f"ResNet shortcut must be 'A', 'B' or 'C', got {shortcut!r}")
        if width_mult <= 0:
            raise ValueError(f"ResNet width_mult must be positive, got {width_mult}")
        kind, blocks = STAGES[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        widths = [max(1, round(w * width_mult)) for w in ((16, 32, 64) if cifar else (64, 128, 256, 512))]

        if small_input or cifar:
            self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)

        in_channels = widths[0]
        for stage, (channels, count) in enumerate(zip(widths, blocks, strict=True), start=1):
            layers = []
            for index in range(count):
                # The first block of stages 2-4 halves the resolution (paper: conv3_1, conv4_1, conv5_1).
                stride = 2 if stage > 1 and index == 0 else 1
                extra = {"stride_in_1x1": stride_in_1x1} if block is Bottleneck else {}
                layers.append(block(in_channels, channels, stride, residual, shortcut, **extra))
                in_channels = channels * block.expansion
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # He et al. 2015 initialisation, which the paper uses (§3.4).
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(module.last_bn().weight)

    def features(self, x: Tensor) -> Tensor:
        """Last stage's feature map: N x C x H/32 x W/32 (H/8 x W/8 with ``small_input``, H/4 x W/4 for CIFAR)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, getattr(self, "layer4", None)):
            x = stage(x) if stage is not None else x
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))
