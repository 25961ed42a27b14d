"""VGG (Simonyan & Zisserman 2015), configurations A, B, D and E, with torchvision's state-dict layout."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lit_models.nets.checks import check_classifier_head
from lit_models.nets.dense_evaluation import FullyConnectedHead

# Paper Table 1: five stages of 3x3 convs, each closed by a 2x2/2 max-pool, with 64, 128, 256, 512, 512
# channels. Depths count weight layers: the convs plus the three FC layers.
_STAGE_WIDTHS = (64, 128, 256, 512, 512)
_CONVS_PER_STAGE: dict[int, tuple[int, ...]] = {
    11: (1, 1, 2, 2, 2),  # configuration A
    13: (2, 2, 2, 2, 2),  # configuration B
    16: (2, 2, 3, 3, 3),  # configuration D
    19: (2, 2, 4, 4, 4),  # configuration E
}


class VGG(FullyConnectedHead):
    """VGG image classifier, layer for layer as ``torchvision.models.vgg{11,13,16,19}[_bn]``.

    Same state-dict keys, shapes and parameter counts as torchvision, so its checkpoints load.

    Deviations from the paper:

    * ``batch_norm=True`` (BatchNorm after every conv, before its ReLU) is torchvision's addition;
      batch normalisation postdates the paper.
    * ``avgpool = AdaptiveAvgPool2d((7, 7))`` before the classifier (identity at 224 px) so inputs of
      any size >= 32 px work. The paper's test-time conversion of the FC layers to convolutions ("dense"
      evaluation, §3.2) is ``score_map``, used by ``ImageFolderDataModule(test_crops="dense")``.
    * Initialisation follows torchvision (Kaiming-normal fan-out convs, N(0, 0.01) linear weights, zero
      biases), not the paper's scheme of initialising deeper nets from a trained configuration A; the
      paper itself notes (§3.1) that Glorot-style random init works without pre-training.
    * Configuration C (1x1 convs in the last three stages) and A-LRN are not offered.
    """

    def __init__(
        self,
        depth: Literal[11, 13, 16, 19] = 16,
        num_classes: int = 1000,
        batch_norm: bool = False,
        width_mult: float = 1.0,
        representation_size: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        """Build the network.

        Args:
            depth: Number of weight layers: 11, 13, 16 or 19 (paper configurations A, B, D, E).
            num_classes: Number of output logits.
            batch_norm: Insert BatchNorm2d after every conv (torchvision's ``vgg*_bn``).
            width_mult: Multiplier on every conv channel count (rounded, at least 1). A size knob for
                tests and small data.
            representation_size: Width of the two hidden fully connected layers (4096 in the paper).
            dropout: Dropout probability after each hidden fully connected layer.
        """
        super().__init__()
        self.torchvision_name = f"vgg{depth}_bn" if batch_norm else f"vgg{depth}"
        if depth not in _CONVS_PER_STAGE:
            raise ValueError(f"depth must be one of {sorted(_CONVS_PER_STAGE)}, got {depth!r}")
        check_classifier_head("VGG", num_classes, width_mult, representation_size, dropout)

        # One flat Sequential (not nested stages) so indices match torchvision's `features.N` keys.
        layers: list[nn.Module] = []
        in_ch = 3
        for width, repeats in zip(_STAGE_WIDTHS, _CONVS_PER_STAGE[depth], strict=True):
            out_ch = max(1, round(width * width_mult))
            for _ in range(repeats):
                layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))  # keeps H x W
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out_ch))
                layers.append(nn.ReLU(inplace=True))
                in_ch = out_ch
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))  # halves H x W
        self.features = nn.Sequential(*layers)  # N x 512 x 7 x 7 at 224 px
        # Identity at 224 px; lets other input sizes reach the fixed-size classifier.
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * 7 * 7, representation_size),  # N x 25088 -> N x 4096
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(representation_size, representation_size),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(representation_size, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # fan_out keeps the backward signal's variance constant through ReLU layers (He et al. 2015).
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map N x 3 x H x W images (H, W >= 32) to N x num_classes logits."""
        x = self.features(x)
        x = self.avgpool(x)  # N x 512 x 7 x 7
        x = torch.flatten(x, 1)  # N x 25088
        return self.classifier(x)
