"""AlexNet (Krizhevsky, Sutskever & Hinton 2012), as in the paper or as torchvision builds it."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lit_models.nets.checks import check_classifier_head
from lit_models.nets.dense_evaluation import FullyConnectedHead

# Paper §3.3: b = a / (k + alpha * sum_{n neighbours} a^2) ** beta with k=2, n=5, alpha=1e-4, beta=0.75.
# torch's LocalResponseNorm divides alpha by `size` (it averages the squares instead of summing them), so
# the paper's per-element alpha=1e-4 is torch alpha = 5 * 1e-4 = 5e-4. (Caffe's reference model passes
# alpha=1e-4 to a layer that also divides by n, i.e. 5x weaker normalisation than the paper wrote.)
_LRN_SIZE = 5
_LRN_ALPHA = _LRN_SIZE * 1e-4
_LRN_BETA = 0.75
_LRN_K = 2.0

_INITS = ("torch", "paper", "kaiming")
_VARIANTS = ("paper", "torchvision")


class _TowerLRN(nn.Module):
    """Local response normalisation run separately on each tower's channels.

    On two GPUs a kernel map was only normalised against its neighbours on the same GPU, so the
    window must not cross the tower boundary. Parameter-free: state-dict keys are unaffected.
    """

    def __init__(self, towers: int) -> None:
        super().__init__()
        self.towers = towers
        self.lrn = nn.LocalResponseNorm(size=_LRN_SIZE, alpha=_LRN_ALPHA, beta=_LRN_BETA, k=_LRN_K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.towers == 1:
            return self.lrn(x)
        # torch zero-pads the channel window at the edges but still divides by `size`, which is exactly
        # the paper's clipped sum at a tower's first/last maps.
        return torch.cat([self.lrn(t) for t in x.chunk(self.towers, dim=1)], dim=1)


def _scale(channels: int, width_mult: float, multiple: int) -> int:
    """Scaled channel count, at least `multiple` and divisible by it (so groups split it evenly)."""
    return max(multiple, multiple * round(channels * width_mult / multiple))


class AlexNet(FullyConnectedHead):
    """AlexNet image classifier.

    ``variant="paper"`` follows Krizhevsky et al. 2012 (§3, Fig. 2): conv 96-11x11/4, 256-5x5, 384-3x3,
    384-3x3, 256-3x3, ReLU after every conv/FC layer, local response normalisation after the ReLUs of
    conv1 and conv2, overlapping 3x3/2 max-pooling after conv1, conv2 and conv5, two 4096-wide FC layers
    with dropout. ``two_tower=True`` reproduces the two-GPU split: conv2, conv4 and conv5 only see the
    maps of their own tower (``groups=2``), conv3 and the FC layers connect across towers, and LRN windows
    stay inside one tower. conv1 is not grouped: each tower's 48 kernels see the full image, which is
    the same as one 96-kernel conv.

    ``variant="torchvision"`` reproduces ``torchvision.models.alexnet`` layer for layer (64-192-384-256-256,
    no LRN; the single-tower net of Krizhevsky 2014, "One weird trick"), with identical state-dict keys
    and shapes, so its checkpoints load.

    Deviations from the 2012 paper:

    * Input size: the paper says 224x224, but 11x11 kernels at stride 4 only give 55x55 from 227x227.
      We pad conv1 by 2 (as torchvision does), so 224x224 gives (224 + 4 - 11) // 4 + 1 = 55.
    * ``avgpool = AdaptiveAvgPool2d((6, 6))`` before the classifier (identity at 224 px) so any input of
      at least 63 px works; ``score_map`` applies the FC layers as convolutions over a larger image (VGG's
      dense evaluation).
    * Initialisation (``init``): "torch" (the layers' defaults, as torchvision's AlexNet), "paper" (§5: weights
      from N(0, 0.01), biases 1 in conv2, conv4, conv5 and the hidden FC layers so their ReLUs start with
      positive inputs, 0 elsewhere; it trains only with the paper's small, slowly decayed lr over many epochs)
      or "kaiming" (He et al. 2015, fan-in, zero biases: keeps the activation scale through the eight ReLU
      layers, so short runs on small data start learning at once, where the other two stall at chance).
    * The training recipe (SGD, momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 on plateau,
      PCA colour augmentation) belongs to the task / YAML, not to this module.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        variant: Literal["paper", "torchvision"] = "paper",
        two_tower: bool = False,
        width_mult: float = 1.0,
        representation_size: int = 4096,
        dropout: float = 0.5,
        init: Literal["torch", "paper", "kaiming"] = "torch",
    ) -> None:
        """Build the network.

        Args:
            num_classes: Number of output logits.
            variant: ``"paper"`` for the 2012 architecture with LRN (96-256-384-384-256 channels) or
                ``"torchvision"`` for torchvision's layout (64-192-384-256-256, no LRN) whose checkpoints
                load into this module.
            two_tower: Paper variant only: split conv2, conv4 and conv5 into two groups as the two-GPU
                model did (about 1.4 M fewer parameters).
            width_mult: Multiplier on every conv channel count (rounded, at least 1; kept even with
                ``two_tower``). A size knob for tests and small data.
            representation_size: Width of the two hidden fully connected layers (4096 in the paper).
            dropout: Dropout probability before each hidden fully connected layer.
            init: Weight initialisation: "torch" (layer defaults), "paper" (§5: N(0, 0.01) weights, biases 1
                in conv2/4/5 and the hidden FC layers) or "kaiming" (He et al. 2015, fan-in).
        """
        super().__init__()
        self.torchvision_name = "alexnet" if variant == "torchvision" else None  # the paper's has no weights
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
        if two_tower and variant != "paper":
            raise ValueError("two_tower=True is only defined for variant='paper' (torchvision's AlexNet has one tower)")
        check_classifier_head("AlexNet", num_classes, width_mult, representation_size, dropout)

        towers = 2 if two_tower else 1
        if variant == "paper":
            c1, c2, c3, c4, c5 = (_scale(c, width_mult, towers) for c in (96, 256, 384, 384, 256))
            g = towers
            self.features = nn.Sequential(
                nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2),  # N x 96 x 55 x 55 at 224 px
                nn.ReLU(inplace=True),
                _TowerLRN(towers),
                nn.MaxPool2d(kernel_size=3, stride=2),  # N x 96 x 27 x 27
                nn.Conv2d(c1, c2, kernel_size=5, padding=2, groups=g),  # N x 256 x 27 x 27
                nn.ReLU(inplace=True),
                _TowerLRN(towers),
                nn.MaxPool2d(kernel_size=3, stride=2),  # N x 256 x 13 x 13
                nn.Conv2d(c2, c3, kernel_size=3, padding=1),  # N x 384 x 13 x 13, crosses towers
                nn.ReLU(inplace=True),
                nn.Conv2d(c3, c4, kernel_size=3, padding=1, groups=g),  # N x 384 x 13 x 13
                nn.ReLU(inplace=True),
                nn.Conv2d(c4, c5, kernel_size=3, padding=1, groups=g),  # N x 256 x 13 x 13
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),  # N x 256 x 6 x 6
            )
        else:
            c1, c2, c3, c4, c5 = (_scale(c, width_mult, 1) for c in (64, 192, 384, 256, 256))
            # Indices 0, 3, 6, 8, 10 hold the convs, as in torchvision, so its state dict loads.
            self.features = nn.Sequential(
                nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2),  # N x 64 x 55 x 55 at 224 px
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),  # N x 64 x 27 x 27
                nn.Conv2d(c1, c2, kernel_size=5, padding=2),  # N x 192 x 27 x 27
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),  # N x 192 x 13 x 13
                nn.Conv2d(c2, c3, kernel_size=3, padding=1),  # N x 384 x 13 x 13
                nn.ReLU(inplace=True),
                nn.Conv2d(c3, c4, kernel_size=3, padding=1),  # N x 256 x 13 x 13
                nn.ReLU(inplace=True),
                nn.Conv2d(c4, c5, kernel_size=3, padding=1),  # N x 256 x 13 x 13
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),  # N x 256 x 6 x 6
            )
        # Identity at 224 px; lets smaller or larger inputs reach the fixed-size classifier.
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c5 * 6 * 6, representation_size),  # N x 9216 -> N x 4096
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(representation_size, representation_size),
            nn.ReLU(inplace=True),
            nn.Linear(representation_size, num_classes),
        )
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {init!r}")
        if init != "torch":
            self.initialise(init)

    def initialise(self, init: Literal["paper", "kaiming"]) -> None:
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        # Paper §5: these five layers start with bias 1, "which accelerates the early stages of learning by
        # providing the ReLUs with positive inputs".
        ones = {convs[1], convs[3], convs[4], linears[0], linears[1]}
        for layer in convs + linears:
            if init == "paper":
                nn.init.normal_(layer.weight, mean=0.0, std=0.01)
                nn.init.constant_(layer.bias, 1.0 if layer in ones else 0.0)
            else:
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map N x 3 x H x W images (H, W >= 63) to N x num_classes logits."""
        x = self.features(x)
        x = self.avgpool(x)  # N x 256 x 6 x 6
        x = torch.flatten(x, 1)  # N x 9216
        return self.classifier(x)
