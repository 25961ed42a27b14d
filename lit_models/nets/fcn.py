"""FCN-32s / 16s / 8s on VGG-16 (Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks for Semantic
Segmentation"), as in the authors' reference Caffe nets.

Convolutionalization: VGG's fc6 (Linear 25088 -> 4096) becomes a 7x7 convolution and fc7 a 1x1 convolution
with the same parameters reshaped (``convolutionalize``), so the classifier slides over inputs of any size.
conv1_1 is padded by 100 pixels (paper §4.1 / reference nets) so that even small inputs leave a pool5 map of at
least 7x7; the upsampled scores are then cropped back to the input at the reference nets' fixed offsets.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lit_models.nets.vgg import VGG

# Crop offsets of the reference Caffe nets (fcn.berkeleyvision.org): where, in each upsampled map, the pixel
# aligned with input pixel (0, 0) lies, given conv1_1's padding of 100.
POOL4_OFFSET = 5
POOL3_OFFSET = 9
FINAL_OFFSET = {"32s": 19, "16s": 27, "8s": 31}


def bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """channels x channels x k x k weights that make a stride-k/2 transposed conv do bilinear upsampling."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    steps = torch.arange(kernel_size, dtype=torch.float32)
    profile = 1 - (steps - center).abs() / factor  # k
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = profile[:, None] * profile[None, :]
    return weight


def upsampler(channels: int, stride: int) -> nn.ConvTranspose2d:
    """Learnable "deconvolution" initialised to bilinear interpolation (paper §3.3)."""
    layer = nn.ConvTranspose2d(channels, channels, 2 * stride, stride=stride, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, 2 * stride))
    return layer


def crop_like(x: Tensor, offset: int, reference: Tensor) -> Tensor:
    height, width = reference.shape[-2:]
    return x[:, :, offset : offset + height, offset : offset + width]


class FCN(nn.Module):
    """FCN on a VGG-16 backbone; ``variant`` fuses pool4 (16s) and pool3 (8s) predictions before upsampling.

    Skip score layers start at zero (paper §4.2), so a 16s/8s net initialised from a coarser one computes the
    coarser net's output until training moves them. Returns N x num_classes x H x W scores for an N x 3 x H x W
    input of any H, W.
    """

    def __init__(
        self,
        num_classes: int = 21,
        variant: Literal["32s", "16s", "8s"] = "8s",
        width_mult: float = 1.0,
        hidden: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        """Build the network.

        Args:
            num_classes: Number of classes, background included (21 for PASCAL VOC).
            variant: "32s" (one 32x upsampling), "16s" (+ pool4 skip) or "8s" (+ pool3 skip).
            width_mult: Multiplies VGG-16's convolution widths (size knob for tests and CPUs).
            hidden: Channels of fc6/fc7 (4096 in VGG-16).
            dropout: Dropout after fc6 and fc7, as in the classifier they come from.
        """
        super().__init__()
        if variant not in FINAL_OFFSET:
            raise ValueError(f"FCN variant must be one of {list(FINAL_OFFSET)}, got {variant!r}")
        self.variant = variant
        vgg = VGG(depth=16, num_classes=1, width_mult=width_mult, hidden=hidden)
        self.features = vgg.features
        first = self.features[0]
        first.padding = (100, 100)  # see module docstring
        # Split points: the outputs of pool3 and pool4 feed the skips.
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        for index in pools:
            self.features[index].ceil_mode = True  # Caffe's pooling rounds up; the crop offsets assume it
        self.pool3_end, self.pool4_end = pools[2] + 1, pools[3] + 1
        channels = [m.out_channels for m in self.features if isinstance(m, nn.Conv2d)]
        # conv3_3, conv4_3 and conv5_3 feed pool3, pool4 and pool5.
        pool3_channels, pool4_channels, pool5_channels = channels[6], channels[9], channels[12]
        self.fc6 = nn.Conv2d(pool5_channels, hidden, 7)  # = Linear(512*7*7, 4096), reshaped
        self.fc7 = nn.Conv2d(hidden, hidden, 1)  # = Linear(4096, 4096), reshaped
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)  # element-wise, as Caffe's dropout in the reference nets
        self.score_fr = nn.Conv2d(hidden, num_classes, 1)
        if variant == "32s":
            self.upscore = upsampler(num_classes, 32)
        else:
            self.upscore2 = upsampler(num_classes, 2)
            self.score_pool4 = nn.Conv2d(pool4_channels, num_classes, 1)
            nn.init.zeros_(self.score_pool4.weight)
            nn.init.zeros_(self.score_pool4.bias)
        if variant == "16s":
            self.upscore16 = upsampler(num_classes, 16)
        if variant == "8s":
            self.upscore_pool4 = upsampler(num_classes, 2)
            self.score_pool3 = nn.Conv2d(pool3_channels, num_classes, 1)
            nn.init.zeros_(self.score_pool3.weight)
            nn.init.zeros_(self.score_pool3.bias)
            self.upscore8 = upsampler(num_classes, 8)

    def convolutionalize(self, vgg: VGG) -> None:
        """Copy a VGG-16 classifier's convolutions and fc6/fc7 into this net (their parameters, reshaped)."""
        conv_self = [m for m in self.features if isinstance(m, nn.Conv2d)]
        conv_vgg = [m for m in vgg.features if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for ours, theirs in zip(conv_self, conv_vgg, strict=True):
                ours.weight.copy_(theirs.weight)
                ours.bias.copy_(theirs.bias)
            fc6, fc7 = vgg.classifier[0], vgg.classifier[3]
            self.fc6.weight.copy_(fc6.weight.view_as(self.fc6.weight))  # 4096 x 25088 -> 4096 x 512 x 7 x 7
            self.fc6.bias.copy_(fc6.bias)
            self.fc7.weight.copy_(fc7.weight.view_as(self.fc7.weight))
            self.fc7.bias.copy_(fc7.bias)

    def forward(self, x: Tensor) -> Tensor:
        pool3 = self.features[: self.pool3_end](x)  # N x 256 x ~(H+200)/8
        pool4 = self.features[self.pool3_end : self.pool4_end](pool3)  # N x 512 x ~(H+200)/16
        pool5 = self.features[self.pool4_end :](pool4)  # N x 512 x ~(H+200)/32
        fc7 = self.drop(self.relu(self.fc7(self.drop(self.relu(self.fc6(pool5))))))
        score = self.score_fr(fc7)  # N x C x ~(H+200)/32 - 6
        if self.variant == "32s":
            return crop_like(self.upscore(score), FINAL_OFFSET["32s"], x)
        score = self.upscore2(score)
        score = score + crop_like(self.score_pool4(pool4), POOL4_OFFSET, score)
        if self.variant == "16s":
            return crop_like(self.upscore16(score), FINAL_OFFSET["16s"], x)
        score = self.upscore_pool4(score)
        score = score + crop_like(self.score_pool3(pool3), POOL3_OFFSET, score)
        return crop_like(self.upscore8(score), FINAL_OFFSET["8s"], x)
