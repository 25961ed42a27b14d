"""Dense evaluation (Simonyan & Zisserman 2015, §3.2): a classifier's fully connected layers applied as convolutions
over a whole image of any size, giving a map of class scores instead of one score vector per crop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FullyConnectedHead(nn.Module):
    """Base of the nets whose convolutional ``features`` are pooled to a fixed grid (``avgpool``, an
    ``AdaptiveAvgPool2d``) and read by fully connected layers (``classifier``, a Sequential of Linear, ReLU and
    Dropout layers): AlexNet and VGG. Networks that average-pool globally before one linear layer (ResNet, GoogLeNet,
    DenseNet) are fully convolutional already: their output for a whole image is their averaged score map.
    """

    features: nn.Sequential
    avgpool: nn.AdaptiveAvgPool2d
    classifier: nn.Sequential

    def score_map(self, images: Tensor, window: int) -> Tensor:
        """Class scores N x K x h x w of images N x 3 x H x W, at every position of a ``window`` x ``window`` crop
        (the training input) over the feature map: §3.2's fully convolutional net, fc6 a convolution with the
        window's feature side as its kernel (7 x 7 at 224 px), fc7 and fc8 1 x 1, with the same weights (reshaped
        on the fly: the checkpoint keeps only the fully connected ones). Where the training input's feature map is
        not the pooled grid (VGG at 32 px ends at 1 x 1, pooled up to 7 x 7), the pooling is folded into fc6's
        kernel, so each position still scores exactly what the trained net computes from that window's features.

        Args:
            images: Normalised images, each side at least ``window``.
            window: The side of the square the net was trained on (the data's ``image_size``).
        """
        side = feature_side(self.features, window)
        features = self.features(images)  # N x C x H/32 x W/32 (VGG)
        if min(features.shape[-2:]) < side:
            raise ValueError(
                f"dense evaluation needs images at least {window} px a side (the training input), got "
                f"{tuple(images.shape[-2:])}: test at a scale Q of at least 224 (the papers' pixels)"
            )
        first = True
        scores = features
        for layer in self.classifier:
            if isinstance(layer, nn.Linear):
                if first:  # fc6: out x (C * p * p) -> out x C x side x side
                    pooled = layer.weight.view(layer.out_features, features.shape[1], *grid(self.avgpool))
                    weight = fold_pooling(pooled, side)
                else:  # fc7, fc8: 1 x 1
                    weight = layer.weight.view(layer.out_features, layer.in_features, 1, 1)
                scores = F.conv2d(scores, weight, layer.bias)
                first = False
            else:  # ReLU and Dropout act on each element, whatever the shape
                scores = layer(scores)
        return scores  # N x K x (H/32 - side + 1) x (W/32 - side + 1) for VGG


def grid(pool: nn.AdaptiveAvgPool2d) -> tuple[int, int]:
    """The adaptive pooling's output grid (7 x 7 for VGG, 6 x 6 for AlexNet)."""
    size = pool.output_size
    return (size, size) if isinstance(size, int) else tuple(size)


def fold_pooling(weight: Tensor, side: int) -> Tensor:
    """fc6's weight O x C x p x p as a kernel O x C x side x side over the unpooled ``side`` x ``side`` features.

    Adaptive average pooling is linear and separable: pooled = M x M^T with M the p x side pooling matrix, so
    fc6(pool(x)) is one convolution of x with the kernel M^T W M. At the paper's sizes (side = p) M is the identity.
    """
    if weight.shape[-1] == side and weight.shape[-2] == side:
        return weight
    if weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"folding needs a square pooled grid, got {tuple(weight.shape[-2:])}")
    basis = torch.eye(side, dtype=weight.dtype, device=weight.device).unsqueeze(0)  # 1 x side x side: unit inputs
    spread = F.adaptive_avg_pool1d(basis, weight.shape[-1])[0]  # side x p: M^T, what each input feeds each cell
    return torch.einsum("ocij,ai,bj->ocab", weight, spread, spread)


def feature_side(layers: nn.Sequential, side: int) -> int:
    """The side of the feature map that ``layers`` (convolutions, max-pools and layers that keep the size: ReLU,
    batch norm, LRN) make of a side x side input, by torch's output-size rule."""
    for layer in layers:
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            kernel, stride, padding, dilation = (
                value if isinstance(value, int) else value[0]
                for value in (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
            )
            span = side + 2 * padding - dilation * (kernel - 1) - 1
            ceil = isinstance(layer, nn.MaxPool2d) and layer.ceil_mode
            out = (-(-span // stride) if ceil else span // stride) + 1
            if ceil and (out - 1) * stride >= side + padding:  # torch: the last window must start inside the input
                out -= 1
            side = out
    return side
