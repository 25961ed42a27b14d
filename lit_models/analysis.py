"""Measuring what the papers argue: receptive fields from input gradients, where the parameters sit, and how much
gradient reaches an early step of a recurrent net. Used by ``benchmarks/claims.py`` and the notebooks; each
function works on any ``nn.Module`` (a package net, a part of one, or a user's own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn


class ReceptiveField(NamedTuple):
    """The input region one output unit sees: its ``height`` x ``width`` in pixels, and ``gradient``, the H x W
    map of how strongly each input pixel moves that unit (mean absolute input gradient; zero outside the field)."""

    height: int
    width: int
    gradient: Tensor


def receptive_field(net: nn.Module, input_size: int, in_channels: int = 3, samples: int = 8) -> ReceptiveField:
    """Measure the receptive field of the centre unit of ``net``'s output map from input gradients.

    ``net`` maps N x ``in_channels`` x H x W images to N x C x H' x W' maps. The summed channels of the centre unit
    are differentiated with respect to ``samples`` random inputs of ``input_size`` x ``input_size``; the field is
    the bounding box of the pixels whose gradient is non-zero in any of them. Several inputs, because a ReLU that
    is off for one input hides its part of the field for that input only. ``input_size`` must exceed the field,
    or the measurement is cut at the image border.
    """
    was_training = net.training
    net.eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(samples, in_channels, input_size, input_size, generator=generator, requires_grad=True)
    output = net(images)
    net.train(was_training)
    if output.dim() != 4:
        raise ValueError(f"receptive_field needs a net with N x C x H x W outputs; it returned {tuple(output.shape)}")
    centre = output[:, :, output.shape[2] // 2, output.shape[3] // 2].sum()
    (gradient,) = torch.autograd.grad(centre, images)  # leaves the parameters' .grad alone
    gradient = gradient.abs().mean(dim=(0, 1))  # H x W
    rows, cols = (gradient.sum(dim=axis) > 0 for axis in (1, 0))
    height = int(rows.nonzero().max() - rows.nonzero().min() + 1) if rows.any() else 0
    width = int(cols.nonzero().max() - cols.nonzero().min() + 1) if cols.any() else 0
    return ReceptiveField(height, width, gradient)


def parameter_count(module: nn.Module, of: tuple[type[nn.Module], ...] | None = None) -> int:
    """Parameters of ``module``, or only those held by its submodules of the types ``of`` (e.g. ``(nn.Linear,)``
    for the fully connected layers)."""
    if of is None:
        return sum(parameter.numel() for parameter in module.parameters())
    layers = [layer for layer in module.modules() if isinstance(layer, of)]
    return sum(parameter.numel() for layer in layers for parameter in layer.parameters(recurse=False))


def gradient_through_time(loss_of_inputs: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
    """How much gradient reaches each step: the T values ``mean over the batch of ||d loss / d inputs[:, t]||``.

    ``inputs`` is N x T x F; ``loss_of_inputs`` maps it to a scalar loss, typically of the last step's output, so
    the value at step t is the gradient that flowed back through T - 1 - t recurrent steps (Bengio et al. 1994's
    vanishing gradients, measured).
    """
    inputs = inputs.detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(loss_of_inputs(inputs), inputs)  # leaves the parameters' .grad alone
    return gradient.norm(dim=2).mean(dim=0)
