"""Convolutional trunks of the image classifiers, for the detectors that put their own heads on top.

A trunk is the classifier without its pooling and classifier layers, cut at stride 16 (Faster R-CNN's conv5_3 of
VGG-16, or ResNet's conv4_x as in the ResNet paper's detection experiments) or 32 (the whole convolutional part).
Its parameter names are the classifier's (``features.N`` for VGG, ``layer3.0.conv1`` for ResNet) under ``body.``,
so classifier weights load through :meth:`Trunk.load_backbone_weights`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Literal, get_args

from torch import Tensor, nn

from lit_models.nets.resnet import ResNet
from lit_models.nets.vgg import VGG
from lit_models.nets.weights import load_weights

Backbone = Literal["vgg16", "resnet18", "resnet34", "resnet50", "resnet101"]
BACKBONES: tuple[str, ...] = get_args(Backbone)


def classifier(
    name: str, width_mult: float, batch_norm: bool, num_classes: int = 1000, representation_size: int = 4096
) -> VGG | ResNet:
    """The classifier a trunk is cut from (also what its weight files were saved from); ``representation_size``
    is VGG's fc6/fc7 width (ResNets have none)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")
    if name == "vgg16":
        return VGG(
            depth=16,
            num_classes=num_classes,
            batch_norm=batch_norm,
            width_mult=width_mult,
            representation_size=representation_size,
        )
    return ResNet(depth=int(name.removeprefix("resnet")), num_classes=num_classes, width_mult=width_mult)


def cut(net: VGG | ResNet, stride: int) -> nn.Sequential:
    """The classifier's layers up to the given output stride, sharing the classifier's modules."""
    if isinstance(net, VGG):
        # Five 2x2 max-pools; stride 16 drops the last one (pool5), leaving conv5_3 + ReLU as the output.
        layers = list(net.features) if stride == 32 else list(net.features)[:-1]
        return nn.Sequential(OrderedDict((str(i), layer) for i, layer in enumerate(layers)))
    stages = ["layer1", "layer2", "layer3", "layer4"][: 4 if stride == 32 else 3]
    names = ["conv1", "bn1", "relu", "maxpool", *stages]
    return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in names))


class Trunk(nn.Module):
    """N x 3 x H x W -> N x ``out_channels`` x H/stride x W/stride feature map of a classifier's trunk."""

    def __init__(
        self, name: Backbone = "vgg16", width_mult: float = 1.0, batch_norm: bool = False, stride: int = 16
    ) -> None:
        """Build the trunk.

        Args:
            name: "vgg16" or "resnet18/34/50/101".
            width_mult: Channel multiplier of the classifier (a size knob for tests and CPU configs).
            batch_norm: VGG-16 with BatchNorm (torchvision's vgg16_bn); ResNets always have it.
            stride: 16 (VGG conv5_3, ResNet conv4_x) or 32 (every convolutional stage).
        """
        super().__init__()
        if stride not in (16, 32):
            raise ValueError(f"trunk stride must be 16 or 32, got {stride}")
        self.name, self.width_mult, self.batch_norm, self.stride = name, width_mult, batch_norm, stride
        self.body = cut(classifier(name, width_mult, batch_norm), stride)
        convs = [m for m in self.body.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        self.out_channels = convs[-1].num_features if isinstance(convs[-1], nn.BatchNorm2d) else convs[-1].out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def load_backbone_weights(self, path: str | os.PathLike) -> VGG | ResNet:
        """Copy a classifier's weights (torchvision state dict or lit-models checkpoint, any head size) into the
        trunk; return the loaded classifier, whose other layers a detector may also want (VGG's fc6/fc7, for
        :func:`copy_vgg_fc`)."""
        net = classifier(self.name, self.width_mult, self.batch_norm)
        load_weights(net, path, num_classes=1000)
        self.body.load_state_dict(cut(net, self.stride).state_dict())
        return net


def copy_vgg_fc(net: VGG | ResNet, fc6: nn.Linear, fc7: nn.Linear) -> bool:
    """Initialise a detector's fc6/fc7 from VGG's first two classifier layers when the shapes agree (a VGG-16
    with a 4096-wide head whose fc6 sees 7 x 7 x C pooled features, as VGG's sees pool5); return whether it did."""
    if not isinstance(net, VGG):
        return False
    pairs = ((net.classifier[0], fc6), (net.classifier[3], fc7))
    if any(source.weight.shape != target.weight.shape for source, target in pairs):
        return False
    for source, target in pairs:
        target.load_state_dict(source.state_dict())
    return True
