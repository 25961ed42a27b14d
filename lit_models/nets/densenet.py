"""DenseNet-BC, Huang et al. 2017, "Densely connected convolutional networks".

State-dict keys, tensor shapes and parameter counts equal torchvision's ``densenet121/161/169/201``
(current key format, e.g. ``features.denseblock1.denselayer1.norm1.weight``), so a local torchvision
checkpoint loads with ``strict=True``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn

__all__ = ["DenseNet"]

# depth -> (block config, growth rate k, stem channels); the paper's ImageNet DenseNet-BC settings (Table 1).
_DEPTHS: dict[int, tuple[tuple[int, ...], int, int]] = {
    121: ((6, 12, 24, 16), 32, 64),
    161: ((6, 12, 36, 24), 48, 96),
    169: ((6, 12, 32, 32), 32, 64),
    201: ((6, 12, 48, 32), 32, 64),
}
# The CIFAR DenseNet-BC of §3/Table 2: three dense blocks of (L - 4) / 6 bottleneck layers, a 3x3 stem of 2k.
CIFAR_GROWTH = {100: 12, 250: 24, 190: 40}
_DEPTHS.update({depth: (((depth - 4) // 6,) * 3, k, 2 * k) for depth, k in CIFAR_GROWTH.items()})


class _DenseLayer(nn.Module):
    """Bottleneck layer BN-ReLU-Conv1x1(bn_size*k)-BN-ReLU-Conv3x3(k); its k maps join the block's concat."""

    def __init__(self, in_ch: int, growth_rate: int, bn_size: int, drop_rate: float, memory_efficient: bool):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_ch, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.memory_efficient = memory_efficient

    def _bottleneck(self, *features: Tensor) -> Tensor:
        # The concat and its BN/ReLU outputs are the big tensors (N x C_in x H x W, C_in grows with depth).
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))  # N x bn_size*k x H x W

    def _checkpointed_bottleneck(self, features: list[Tensor]) -> Tensor:
        # Only the small N x bn_size*k output is kept; concat, BN and ReLU are recomputed in backward
        # (Pleiss et al. 2017). On the recompute, BN must not update its running stats a second time:
        # in train mode it normalises with batch stats anyway, so let it update throw-away copies (copies,
        # not None, so the recompute saves the same tensors as the first pass, which checkpoint checks).
        calls = [0]

        def run(*feats: Tensor) -> Tensor:
            calls[0] += 1
            bn = self.norm1
            if calls[0] == 1 or not bn.training or bn.running_mean is None or bn.running_var is None:
                return self._bottleneck(*feats)
            x = F.batch_norm(
                torch.cat(feats, 1),
                bn.running_mean.clone(),
                bn.running_var.clone(),
                bn.weight,
                bn.bias,
                True,
                bn.momentum if bn.momentum is not None else 0.0,
                bn.eps,
            )
            return self.conv1(self.relu1(x))

        return cp.checkpoint(run, *features, use_reentrant=False)

    def forward(self, features: list[Tensor]) -> Tensor:
        if self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            x = self._checkpointed_bottleneck(features)
        else:
            x = self._bottleneck(*features)
        x = self.conv2(self.relu2(self.norm2(x)))  # N x k x H x W
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class _DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; every layer sees the concat of the block input and all earlier outputs."""

    def __init__(
        self,
        num_layers: int,
        in_ch: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        memory_efficient: bool,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(in_ch + i * growth_rate, growth_rate, bn_size, drop_rate, memory_efficient)
            self[f"denselayer{i + 1}"] = layer
        self.out_channels = in_ch + num_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        # Collect the maps in a list and concat once per layer inside it (not a running concat), so the
        # memory-efficient path can checkpoint that concat.
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)  # N x (C_in + num_layers*k) x H x W


class _Transition(nn.Sequential):
    """BN-ReLU-Conv1x1 (compression) - AvgPool 2x2: halves the map size between dense blocks."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)


class DenseNet(nn.Module):
    """DenseNet-BC (Huang et al. 2017): dense blocks with bottlenecks, compressing transitions.

    Layout and state-dict keys follow ``torchvision.models.densenet121/161/169/201``: ``features``
    (``conv0``, ``norm0``, ``relu0``, ``pool0``, ``denseblock{i}``, ``transition{i}``, ``norm5``) and
    ``classifier``. The forward pass ends with ReLU after ``norm5``, global average pooling and the linear
    classifier, as in the paper's Table 1.

    Deviations / additions:

    * ``small_input=True`` replaces the ImageNet stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) by the
      paper's CIFAR stem, a single 3x3 stride-1 conv with ``num_init_features`` (2k) channels; ``norm0``,
      ``relu0`` and ``pool0`` are then absent, so keys differ from torchvision only by those modules. The
      paper's CIFAR nets also use three equal dense blocks; here the four blocks of ``depth`` are kept (a
      32x32 input ends at 4x4).
    * ``memory_efficient=True`` checkpoints the concat-BN-ReLU-Conv1x1 bottleneck (Pleiss et al. 2017,
      "Memory-efficient implementation of DenseNets"): same outputs and gradients, less memory, roughly
      one extra bottleneck forward per layer in backward. BN running statistics are updated once per step,
      as in the normal path.
    * ``drop_rate`` applies dropout after each dense layer's 3x3 conv (the paper uses 0.2 on CIFAR without
      augmentation, 0 on ImageNet).
    * Depths 100, 250 and 190 are the paper's CIFAR DenseNet-BC (growth rate 12, 24 and 40 by default): the
      CIFAR stem and three dense blocks of (L - 4) / 6 layers; at growth rate 12, DenseNet-BC-100 has the
      0.8 M parameters of Table 2.
    """

    def __init__(
        self,
        depth: Literal[121, 161, 169, 201, 100, 250, 190] = 121,
        num_classes: int = 1000,
        growth_rate: int | None = None,
        num_init_features: int | None = None,
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        small_input: bool = False,
        memory_efficient: bool = False,
    ) -> None:
        """Build the network.

        Args:
            depth: Network depth: 121, 161, 169, 201 pick the ImageNet layers per dense block
                ((6,12,24,16), (6,12,36,24), (6,12,32,32), (6,12,48,32)); 100, 250, 190 are the CIFAR
                DenseNet-BC (three blocks of (depth - 4) / 6 layers, CIFAR stem).
            num_classes: Number of output classes.
            growth_rate: Channels k added by each dense layer; ``None`` is the paper's value for ``depth``
                (48 for 161, 12/24/40 for the CIFAR 100/250/190, else 32).
            num_init_features: Channels of the stem conv; ``None`` is the paper's value (2k, i.e. 96 for
                161, else 64).
            bn_size: Bottleneck width factor: the 1x1 conv outputs ``bn_size * growth_rate`` channels.
            compression: Transition compression theta in (0, 1]: a transition maps C channels to
                ``floor(theta * C)``. 0.5 is DenseNet-BC.
            drop_rate: Dropout probability after each dense layer (0 disables it).
            small_input: Use the paper's CIFAR stem (one 3x3 stride-1 conv, no max-pool) for 32x32 inputs.
            memory_efficient: Gradient-checkpoint each layer's bottleneck to save memory at some compute
                cost; results are identical.
        """
        super().__init__()
        cifar = depth in CIFAR_GROWTH
        self.torchvision_name = None if cifar else f"densenet{depth}"  # whose weights fit a torchvision layout
        if depth not in _DEPTHS:
            raise ValueError(f"depth must be one of {sorted(_DEPTHS)}, got {depth!r}")
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if bn_size < 1:
            raise ValueError(f"bn_size must be >= 1, got {bn_size}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        block_config, default_k, default_init = _DEPTHS[depth]
        if growth_rate is None:
            growth_rate = default_k
        if num_init_features is None:
            num_init_features = default_init
        if growth_rate < 1 or num_init_features < 1:
            raise ValueError(
                f"growth_rate and num_init_features must be >= 1, got {growth_rate} and {num_init_features}"
            )

        features = nn.Sequential()
        if small_input or cifar:
            # N x 2k x 32 x 32: no downsampling in the CIFAR stem.
            features.add_module("conv0", nn.Conv2d(3, num_init_features, 3, padding=1, bias=False))
        else:
            # N x 64 x 112 x 112 -> N x 64 x 56 x 56 for a 224 input.
            features.add_module("conv0", nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False))
            features.add_module("norm0", nn.BatchNorm2d(num_init_features))
            features.add_module("relu0", nn.ReLU(inplace=True))
            features.add_module("pool0", nn.MaxPool2d(3, stride=2, padding=1))

        ch = num_init_features
        for i, num_layers in enumerate(block_config, start=1):
            block = _DenseBlock(num_layers, ch, growth_rate, bn_size, drop_rate, memory_efficient)
            features.add_module(f"denseblock{i}", block)
            ch = block.out_channels
            if i != len(block_config):
                # DenseNet-121 at 224: 56 -> 28 -> 14 -> 7 spatially; 256 -> 128, 512 -> 256, 1024 -> 512.
                out_ch = max(1, math.floor(compression * ch))
                features.add_module(f"transition{i}", _Transition(ch, out_ch))
                ch = out_ch
        # The dense layers are pre-activation, so the last block's output still needs a BN (+ ReLU).
        features.add_module("norm5", nn.BatchNorm2d(ch))
        self.features = features
        self.classifier = nn.Linear(ch, num_classes)
        self.num_features = ch

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.features(x))  # N x 1024 x 7 x 7 (DenseNet-121, 224 input)
        x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)  # N x 1024
        return self.classifier(x)  # N x num_classes
