"""FCN-32s / 16s / 8s (Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks for Semantic Segmentation").

VGG-16 backbone, as the paper and its reference Caffe nets: VGG's fc6 (Linear 25088 -> 4096) becomes a 7x7
convolution and fc7 a 1x1 convolution with the same parameters reshaped (``convolutionalize``), so the classifier
slides over inputs of any size. conv1_1 is padded by 100 pixels and pooling rounds up, so even a 1x1 input
leaves a 7x7 pool5 map; score maps are cropped back at the reference nets' fixed offsets.

ResNet backbone (an option the paper predates): layer2, layer3 and layer4 (strides 8, 16, 32) take the places of
pool3, pool4 and fc7. ResNet's only fully connected layer follows global pooling, so there is nothing to
convolutionalize: its score layer reads layer4 directly.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import Tensor, nn

from lit_models.nets.backbones import BACKBONES, Backbone, classifier
from lit_models.nets.resnet import ResNet
from lit_models.nets.vgg import VGG
from lit_models.nets.weights import load_weights

STRIDES = {"32s": 32, "16s": 16, "8s": 8}
# The layers each variant adds to the coarser one (the final upsampling, whose stride changes, is rebuilt too).
SKIP_LAYERS = {
    "32s": (),
    "16s": ("upscore2", "score_pool4"),
    "8s": ("upscore2", "score_pool4", "upscore_pool4", "score_pool3"),
}
# The at-once net's fixed scaling of pool4 and pool3 before their score layers (voc-fcn8s-atonce, PAMI 2017 §4.3).
ATONCE_SCALES = (0.01, 0.0001)
# VGG: crop offsets of the reference Caffe nets (fcn.berkeleyvision.org) given conv1_1's padding of 100.
VGG_SKIP_OFFSETS = (5, 9)  # score_pool4, score_pool3
VGG_FINAL_OFFSETS = {"32s": 19, "16s": 27, "8s": 31}


def bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """channels x channels x k x k weights that make a stride-k/2 transposed conv do bilinear upsampling."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    steps = torch.arange(kernel_size, dtype=torch.float32)
    profile = 1 - (steps - center).abs() / factor  # k
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = profile[:, None] * profile[None, :]
    return weight


def upsampler(channels: int, stride: int, same: bool = False) -> nn.ConvTranspose2d:
    """Learnable "deconvolution" initialised to bilinear interpolation (paper §3.3).

    Default (the reference nets'): kernel 2s, stride s; input pixel i lands centred at output i*s + s - 1/2, so
    maps are aligned by cropping. ``same=True`` (for "same"-padded backbones, whose stride-s feature i sits at
    input pixel s*i): kernel 2s-1 with padding s-1, so input pixel i lands exactly on output s*i and an n-pixel
    map becomes n*s pixels.
    """
    kernel = 2 * stride - 1 if same else 2 * stride
    padding, output_padding = (stride - 1, stride - 1) if same else (0, 0)
    layer = nn.ConvTranspose2d(
        channels, channels, kernel, stride=stride, padding=padding, output_padding=output_padding, bias=False
    )
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, kernel))
    return layer


def crop(x: Tensor, offset: int, height: int, width: int) -> Tensor:
    return x[:, :, offset : offset + height, offset : offset + width]


def fuse(upsampled: Tensor, up_offset: int, skip: Tensor, skip_offset: int) -> Tensor:
    """Sum two score maps over the region both cover, each cropped at the offset that aligns it."""
    height = min(upsampled.shape[-2] - up_offset, skip.shape[-2] - skip_offset)
    width = min(upsampled.shape[-1] - up_offset, skip.shape[-1] - skip_offset)
    return crop(upsampled, up_offset, height, width) + crop(skip, skip_offset, height, width)


def zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    # Score layers start at zero (paper §4.3: random initialisation gave neither better results nor faster
    # convergence); so do the skips (§4.2), so a net refined from a coarser one starts as that net.
    layer = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class VGGEncoder(nn.Module):
    """VGG-16 convolutions (conv1_1 padded by 100, ceil-mode pooling) + fc6/fc7 as convolutions."""

    def __init__(self, width_mult: float, representation_size: int, dropout: float, batch_norm: bool = False) -> None:
        super().__init__()
        vgg = VGG(
            depth=16,
            num_classes=1,
            batch_norm=batch_norm,
            width_mult=width_mult,
            representation_size=representation_size,
        )
        self.features = vgg.features
        self.features[0].padding = (100, 100)
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        for index in pools:
            self.features[index].ceil_mode = True  # Caffe's pooling rounds up; the crop offsets assume it
        self.pool3_end, self.pool4_end = pools[2] + 1, pools[3] + 1
        convs = [m.out_channels for m in self.features if isinstance(m, nn.Conv2d)]
        # conv3_3, conv4_3 and conv5_3 feed pool3, pool4 and pool5.
        self.channels = (convs[6], convs[9], representation_size)
        self.fc6 = nn.Conv2d(convs[12], representation_size, 7)  # = Linear(512*7*7, 4096), reshaped
        self.fc7 = nn.Conv2d(representation_size, representation_size, 1)  # = Linear(4096, 4096), reshaped
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)  # element-wise, as Caffe's dropout in the reference nets

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pool3 = self.features[: self.pool3_end](x)  # N x 256 x ~(H+200)/8
        pool4 = self.features[self.pool3_end : self.pool4_end](pool3)  # N x 512 x ~(H+200)/16
        pool5 = self.features[self.pool4_end :](pool4)  # N x 512 x ~(H+200)/32
        fc7 = self.drop(self.relu(self.fc7(self.drop(self.relu(self.fc6(pool5))))))  # N x 4096 x ~(H+200)/32-6
        return pool3, pool4, fc7


class ResNetEncoder(nn.Module):
    """ResNet stem..layer4; its parameter names are those of lit_models.nets.resnet.ResNet without ``fc``."""

    def __init__(self, depth: int, width_mult: float) -> None:
        super().__init__()
        self.net = net = ResNet(depth=depth, num_classes=1, width_mult=width_mult)
        del net.fc, net.avgpool  # global pooling + classifier: nothing to convolutionalize
        # Output channels of layer2, layer3, layer4: their last block's last BatchNorm.
        self.channels = tuple(stage[-1].last_bn().num_features for stage in (net.layer2, net.layer3, net.layer4))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        net = self.net
        x = net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))  # N x C x H/4
        layer2 = net.layer2(x)  # N x C2 x H/8
        layer3 = net.layer3(layer2)  # N x C3 x H/16
        return layer2, layer3, net.layer4(layer3)  # ... N x C4 x H/32


class FCN(nn.Module):
    """FCN: scores from the stride-32 features, fused with stride-16 (16s) and stride-8 (8s) skip scores, upsampled
    by learnable bilinear-initialised transposed convolutions to N x num_classes x H x W for any H x W input."""

    def __init__(
        self,
        num_classes: int = 21,
        variant: Literal["32s", "16s", "8s"] = "8s",
        backbone: Backbone = "vgg16",
        width_mult: float = 1.0,
        representation_size: int = 4096,
        dropout: float = 0.5,
        batch_norm: bool = False,
        atonce_scaling: bool = False,
    ) -> None:
        """Build the network.

        Args:
            num_classes: Number of classes, background included (21 for PASCAL VOC).
            variant: "32s" (one 32x upsampling), "16s" (+ pool4 skip) or "8s" (+ pool3 skip).
            backbone: "vgg16" (the paper's) or "resnet18/34/50/101".
            width_mult: Multiplies the backbone's convolution widths (size knob for tests and CPUs).
            representation_size: Channels of fc6/fc7 (4096 in VGG-16; VGG backbone only).
            dropout: Dropout after fc6 and fc7, as in the classifier they come from (VGG backbone only).
            batch_norm: VGG-16 with batch norm after every convolution (torchvision's vgg16_bn; not in the paper,
                whose VGG-16 came pretrained on ImageNet): lets the VGG backbone train from scratch.
            atonce_scaling: Scale the pool4 and pool3 features by 0.01 and 0.0001 before their score layers, as the
                at-once FCN-8s trained in one stage does (PAMI 2017 §4.3): without the staged 32s -> 16s -> 8s
                training, the finer layers' larger activations would otherwise swamp the coarse scores.
        """
        super().__init__()
        if variant not in STRIDES:
            raise ValueError(f"FCN variant must be one of {list(STRIDES)}, got {variant!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"FCN backbone must be one of {BACKBONES}, got {backbone!r}")
        if backbone == "vgg16":
            self.encoder: nn.Module = VGGEncoder(width_mult, representation_size, dropout, batch_norm)
            self.skip_offsets, self.up_offset = VGG_SKIP_OFFSETS, 0
            self.final_offset = VGG_FINAL_OFFSETS[variant]
        else:
            self.encoder = ResNetEncoder(int(backbone.removeprefix("resnet")), width_mult)
            # "Same"-padded stages put stride-s feature i at input pixel s*i; so do "same" upsamplers: no offsets.
            self.skip_offsets, self.up_offset, self.final_offset = (0, 0), 0, 0
        self.variant, self.backbone, self.width_mult = variant, backbone, width_mult
        self.representation_size, self.batch_norm = representation_size, batch_norm
        self.skip_scales = ATONCE_SCALES if atonce_scaling else (1.0, 1.0)
        same = backbone != "vgg16"
        stride8_channels, stride16_channels, top_channels = self.encoder.channels
        self.score_fr = zero_conv(top_channels, num_classes)
        self.upscore = upsampler(num_classes, STRIDES[variant], same)  # the final upsampling to input resolution
        if variant != "32s":
            self.upscore2 = upsampler(num_classes, 2, same)
            self.score_pool4 = zero_conv(stride16_channels, num_classes)
        if variant == "8s":
            self.upscore_pool4 = upsampler(num_classes, 2, same)
            self.score_pool3 = zero_conv(stride8_channels, num_classes)

    def load_backbone_weights(self, path: str | os.PathLike) -> None:
        """Initialise the encoder from classifier weights (torchvision state dict or lit-models checkpoint, any
        head size), read through the classifier they were saved from: VGG-16 (fc6/fc7 as wide as
        ``representation_size``), whose fc6/fc7 are convolutionalized, or a ResNet, whose fc is dropped."""
        net = classifier(self.backbone, self.width_mult, self.batch_norm, representation_size=self.representation_size)
        load_weights(net, path, num_classes=1000)
        if isinstance(net, VGG):
            self.convolutionalize(net)
        else:
            self.encoder.net.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("fc.")})

    def convolutionalize(self, vgg: VGG) -> None:
        """Copy a VGG-16 classifier's convolutions and fc6/fc7 into the encoder (their parameters, reshaped)."""
        if not isinstance(self.encoder, VGGEncoder):
            raise TypeError("convolutionalize needs the vgg16 backbone")
        encoder = self.encoder
        with torch.no_grad():
            # Same layer sequence (padding and ceil mode are not parameters), batch norm included when present.
            encoder.features.load_state_dict(vgg.features.state_dict())
            fc6, fc7 = vgg.classifier[0], vgg.classifier[3]
            encoder.fc6.weight.copy_(fc6.weight.view_as(encoder.fc6.weight))  # 4096 x 25088 -> 4096 x 512 x 7 x 7
            encoder.fc6.bias.copy_(fc6.bias)
            encoder.fc7.weight.copy_(fc7.weight.view_as(encoder.fc7.weight))
            encoder.fc7.bias.copy_(fc7.bias)

    def forward(self, x: Tensor) -> Tensor:
        stride8, stride16, top = self.encoder(x)
        score = self.score_fr(top)  # N x C x h/32
        if self.variant != "32s":
            pool4 = self.score_pool4(stride16 * self.skip_scales[0])
            score = fuse(self.upscore2(score), self.up_offset, pool4, self.skip_offsets[0])
        if self.variant == "8s":
            pool3 = self.score_pool3(stride8 * self.skip_scales[1])
            score = fuse(self.upscore_pool4(score), self.up_offset, pool3, self.skip_offsets[1])
        return crop(self.upscore(score), self.final_offset, x.shape[-2], x.shape[-1])  # N x C x H x W
