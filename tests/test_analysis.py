"""lit_models.analysis: receptive fields from input gradients, parameter counts, gradient through time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_models.analysis import gradient_through_time, parameter_count, receptive_field


def stack(*convs: tuple[int, int]) -> nn.Sequential:
    """(kernel, stride) convolutions, 4 channels, 'same' padding, ReLU after each."""
    layers: list[nn.Module] = []
    for index, (kernel, stride) in enumerate(convs):
        layers += [nn.Conv2d(3 if index == 0 else 4, 4, kernel, stride, padding=kernel // 2), nn.ReLU()]
    return nn.Sequential(*layers)


@pytest.mark.parametrize(
    ("convs", "size"),
    [
        ([(3, 1)], 3),
        ([(3, 1), (3, 1)], 5),  # VGG's argument: two 3x3 see 5x5
        ([(3, 1)] * 3, 7),
        ([(3, 2), (3, 1)], 7),  # after a stride 2, a 3x3 reaches 2 input pixels per step: 3 + 2 * 2
        ([(7, 1)], 7),
    ],
)
def test_receptive_field_from_gradients(convs: list[tuple[int, int]], size: int) -> None:
    field = receptive_field(stack(*convs), 21)
    assert (field.height, field.width) == (size, size)
    assert field.gradient.shape == (21, 21)
    assert (field.gradient > 0).sum() <= size * size


def test_receptive_field_needs_a_map() -> None:
    with pytest.raises(ValueError, match=r"N x C x H x W outputs; it returned \(8, 4\)"):
        receptive_field(nn.Sequential(stack((3, 1)), nn.Flatten(2), nn.Flatten(1), nn.Linear(4 * 81, 4)), 9)


def test_parameter_count_by_layer_type() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(10, 5), nn.Linear(5, 2, bias=False))
    assert parameter_count(net) == (3 * 4 * 9 + 4) + (10 * 5 + 5) + 5 * 2
    assert parameter_count(net, (nn.Linear,)) == 55 + 10
    assert parameter_count(net, (nn.Conv2d,)) == 112


def test_gradient_through_time_by_hand() -> None:
    """loss = sum of step T-1 + 2 * sum of step 0: norms 2 * sqrt(F) at 0, sqrt(F) at T-1, zero between."""
    inputs = torch.randn(5, 6, 4)
    norms = gradient_through_time(lambda x: x[:, -1].sum() + 2 * x[:, 0].sum(), inputs)
    assert torch.allclose(norms, torch.tensor([4.0, 0, 0, 0, 0, 2.0]))
    assert inputs.grad is None  # the caller's tensor is left alone


def test_measurements_leave_the_parameters_alone() -> None:
    net = stack((3, 1))
    receptive_field(net, 9)
    gradient_through_time(lambda x: net(x.view(1, 3, 3, 3)).sum(), torch.randn(1, 9, 3))  # 9 steps = a 3x3 image
    assert all(parameter.grad is None for parameter in net.parameters())
