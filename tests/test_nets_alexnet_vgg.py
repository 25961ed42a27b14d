"""AlexNet and VGG: torchvision parity, paper parameter counts, tiny forward/backward, argument checks."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lit_models.nets.alexnet import AlexNet
from lit_models.nets.vgg import VGG


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------
# (a) torchvision parity
# ---------------------------------------------------------------------------------------------------


def test_alexnet_torchvision_variant_matches_torchvision() -> None:
    torch.manual_seed(0)
    ours = AlexNet(num_classes=10, variant="torchvision")
    ref = torchvision.models.alexnet(weights=None, num_classes=10)
    assert _shapes(ours) == _shapes(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert _count(ours) == _count(ref) == 57_044_810  # docs/classification.md, parameter counts at 10 classes

    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_alexnet_torchvision_variant_1000_classes_count() -> None:
    with torch.device("meta"):
        assert _count(AlexNet(variant="torchvision")) == 61_100_840


@pytest.mark.parametrize("depth", [11, 13, 16, 19])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_state_dict_matches_torchvision(depth: int, batch_norm: bool) -> None:
    # Meta tensors: shapes and counts only, so full-size VGG-19 builds instantly.
    name = f"vgg{depth}_bn" if batch_norm else f"vgg{depth}"
    with torch.device("meta"):
        ours = VGG(depth=depth, num_classes=10, batch_norm=batch_norm)
        ref = getattr(torchvision.models, name)(weights=None, num_classes=10)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert _shapes(ours) == _shapes(ref)
    assert _count(ours) == _count(ref)
    if depth == 16 and not batch_norm:
        assert _count(ours) == 134_301_514  # docs/classification.md, parameter counts at 10 classes


def test_vgg11_loads_torchvision_weights_and_matches_outputs() -> None:
    torch.manual_seed(0)
    ours = VGG(depth=11, num_classes=10)
    ref = torchvision.models.vgg11(weights=None, num_classes=10)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------
# (b) paper AlexNet parameter counts
# ---------------------------------------------------------------------------------------------------

# By hand, 1000 classes, single tower (weights + biases):
#   conv1  96 x 3 x 11 x 11   + 96   =     34,944
#   conv2 256 x 96 x 5 x 5    + 256  =    614,656
#   conv3 384 x 256 x 3 x 3   + 384  =    885,120
#   conv4 384 x 384 x 3 x 3   + 384  =  1,327,488
#   conv5 256 x 384 x 3 x 3   + 256  =    884,992
#   fc6  4096 x 9216          + 4096 = 37,752,832
#   fc7  4096 x 4096          + 4096 = 16,781,312
#   fc8  1000 x 4096          + 1000 =  4,097,000
#   total                              62,378,344
# Two towers halve the weights of conv2, conv4, conv5 (each kernel sees half the input maps):
#   307,200 + 663,552 + 442,368 = 1,413,120 fewer -> 60,965,224 (~60.9 M; the paper says "60 million").
PAPER_SINGLE = 62_378_344
PAPER_TWO_TOWER = 60_965_224


def test_alexnet_paper_parameter_counts() -> None:
    with torch.device("meta"):
        single = AlexNet(variant="paper")
        two = AlexNet(variant="paper", two_tower=True)
    assert _count(single) == PAPER_SINGLE
    assert _count(two) == PAPER_TWO_TOWER

    # The savings, recomputed from the layer shapes: a conv with g groups has 1/g of the weights.
    grouped = [m for m in two.features if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [m.groups for m in grouped] == [2, 2, 2]
    savings = 0
    for m in grouped:
        out_ch, in_per_group, kh, kw = m.weight.shape
        full = out_ch * in_per_group * m.groups * kh * kw
        savings += full - m.weight.numel()
    assert savings == 1_413_120
    assert _count(single) - _count(two) == savings
    # Same keys either way: grouping changes shapes, not names.
    assert list(single.state_dict()) == list(two.state_dict())


def test_alexnet_paper_spatial_sizes_at_224() -> None:
    # The paper's 55 x 55 after conv1 and 6 x 6 before the classifier, from a 224 x 224 input.
    net = AlexNet(variant="paper", width_mult=0.125, representation_size=8, num_classes=3)
    x = torch.zeros(1, 3, 224, 224)
    assert net.features[0](x).shape[-2:] == (55, 55)
    assert net.features(x).shape[-2:] == (6, 6)


def test_alexnet_two_tower_lrn_stays_within_tower() -> None:
    # A spike in tower 1's last map must not suppress tower 2's first map (they were on different GPUs).
    net = AlexNet(variant="paper", two_tower=True, width_mult=0.125, representation_size=8)
    lrn = net.features[2]
    x = torch.ones(1, 12, 1, 1)
    x[0, 5] = 100.0  # last channel of tower 1 (12 channels -> 2 x 6)
    y = lrn(x)
    assert y[0, 6] == lrn(torch.ones(1, 12, 1, 1))[0, 6]
    assert y[0, 3] < y[0, 2]  # but channel 3 (window 1..5) in its own tower is suppressed


def test_alexnet_lrn_matches_paper_formula() -> None:
    # Paper §3.3: b = a / (2 + 1e-4 * sum over 5 neighbouring maps of a^2) ** 0.75.
    torch.manual_seed(0)
    net = AlexNet(variant="paper", width_mult=0.125, representation_size=8)
    lrn = net.features[2]
    a = torch.randn(1, 12, 2, 2) * 10
    sq = torch.nn.functional.pad(a.pow(2), (0, 0, 0, 0, 2, 2))
    window = torch.stack([sq[:, c : c + 5].sum(dim=1) for c in range(12)], dim=1)
    expected = a / (2.0 + 1e-4 * window).pow(0.75)
    torch.testing.assert_close(lrn(a), expected)


# ---------------------------------------------------------------------------------------------------
# (c) tiny builds: forward + backward
# ---------------------------------------------------------------------------------------------------


def _forward_backward(net: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    net.train()
    out = net(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (x.shape[0], num_classes)
    out.sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
    net.eval()
    with torch.no_grad():
        out_eval = net(x)
    assert type(out_eval) is type(out)
    assert out_eval.shape == out.shape


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variant": "paper"},
        {"variant": "paper", "two_tower": True},
        {"variant": "torchvision"},
    ],
)
def test_alexnet_tiny_forward_backward(kwargs: dict) -> None:
    torch.manual_seed(0)
    net = AlexNet(num_classes=7, width_mult=0.125, representation_size=32, **kwargs)
    _forward_backward(net, torch.randn(2, 3, 64, 64), 7)


@pytest.mark.parametrize("depth", [11, 13, 16, 19])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_tiny_forward_backward(depth: int, batch_norm: bool) -> None:
    torch.manual_seed(0)
    net = VGG(depth=depth, num_classes=7, batch_norm=batch_norm, width_mult=0.125, representation_size=32)
    _forward_backward(net, torch.randn(2, 3, 32, 32), 7)


def test_width_mult_rounding() -> None:
    with torch.device("meta"):
        two = AlexNet(variant="paper", two_tower=True, width_mult=0.01)
        vgg = VGG(depth=11, width_mult=0.001)
    for m in two.features:
        if isinstance(m, nn.Conv2d):
            assert m.out_channels % 2 == 0 and m.out_channels >= 2
    assert all(m.out_channels >= 1 for m in vgg.features if isinstance(m, nn.Conv2d))


def test_vgg_init_follows_torchvision_scheme() -> None:
    torch.manual_seed(0)
    net = VGG(depth=11, num_classes=10, batch_norm=True, width_mult=0.25, representation_size=512)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            assert torch.all(m.bias == 0)
    fc = net.classifier[3]
    assert abs(fc.weight.std().item() - 0.01) < 1e-3


# ---------------------------------------------------------------------------------------------------
# (d) bad arguments
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variant": "caffe"}, "variant"),
        ({"variant": "torchvision", "two_tower": True}, "two_tower"),
        ({"num_classes": 0}, "num_classes"),
        ({"width_mult": 0.0}, "width_mult"),
        ({"representation_size": 0}, "representation_size"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_alexnet_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AlexNet(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 15}, r"\[11, 13, 16, 19\]"),
        ({"num_classes": 0}, "num_classes"),
        ({"width_mult": -1.0}, "width_mult"),
        ({"representation_size": 0}, "representation_size"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
def test_vgg_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VGG(**kwargs)


def test_alexnet_paper_initialisation():
    torch.manual_seed(0)
    net = AlexNet(num_classes=10, width_mult=0.5, representation_size=256, init="paper")
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.classifier if isinstance(m, torch.nn.Linear)]
    biases = [float(m.bias.detach().unique()) for m in convs + linears]
    assert biases == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # §5: conv2, conv4, conv5, hidden FCs start at 1
    assert abs(float(linears[0].weight.detach().std()) - 0.01) < 1e-3


def test_alexnet_kaiming_initialisation_keeps_the_signal():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 64, 64)
    default = AlexNet(num_classes=10, width_mult=0.5, representation_size=256)
    kaiming = AlexNet(num_classes=10, width_mult=0.5, representation_size=256, init="kaiming")
    # Eight ReLU layers at default scale shrink the features ~30x; He initialisation keeps them at order 1.
    assert kaiming.features(x).std() > 10 * default.features(x).std()
    with pytest.raises(ValueError, match="init must be one of"):
        AlexNet(init="xavier")
