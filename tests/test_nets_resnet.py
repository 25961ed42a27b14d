import pytest
import torch
import torchvision

from lit_models.nets.resnet import ResNet


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_state_dict_matches_torchvision(depth):
    with torch.device("meta"):
        ours = ResNet(depth=depth, num_classes=10)
        theirs = getattr(torchvision.models, f"resnet{depth}")(num_classes=10)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]
    assert count(ours) == count(theirs)


def test_parameter_anchors():
    with torch.device("meta"):
        assert count(ResNet(depth=18, num_classes=10)) == 11_181_642
        assert count(ResNet(depth=50, num_classes=10)) == 23_528_522
        assert count(ResNet(depth=50, num_classes=1000)) == 25_557_032


def test_torchvision_weights_give_identical_outputs():
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(num_classes=7).eval()
    ours = ResNet(depth=18, num_classes=7).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(ours(x), theirs(x))


def test_plain_network_has_no_shortcuts_and_same_layers():
    plain = ResNet(depth=18, num_classes=10, residual=False)
    residual = ResNet(depth=18, num_classes=10)
    assert not any("downsample" in k for k in plain.state_dict())
    # The plain net is the residual net minus its three projection shortcuts (paper Fig. 3).
    projections = sum(p.numel() for k, p in residual.named_parameters() if "downsample" in k)
    assert count(plain) == count(residual) - projections
    # Without shortcuts, changing a block's input changes its output only through the convolutions.
    block = plain.layer1[0].eval()
    with torch.no_grad():
        block.conv1.weight.zero_()
        out = block(torch.randn(1, 64, 8, 8))
    assert torch.count_nonzero(out - out[0, :, :1, :1]) == 0  # constant map: nothing bypassed the zeroed convs


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
@pytest.mark.parametrize("depth", [18, 50])
def test_tiny_forward_backward_all_shortcuts(depth, shortcut):
    torch.manual_seed(0)
    net = ResNet(depth=depth, num_classes=5, shortcut=shortcut, small_input=True, width_mult=0.125)
    x = torch.randn(2, 3, 32, 32)
    out = net(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    assert type(net(x)) is type(out)


def test_shortcut_options_parameter_counts():
    a, b, c = (count(ResNet(depth=34, num_classes=10, shortcut=s)) for s in "ABC")
    assert a < b < c  # A adds no parameters, B projects where shapes change, C projects everywhere


def test_small_input_keeps_resolution_and_paper_stride_option():
    net = ResNet(depth=50, num_classes=3, small_input=True, width_mult=0.125)
    assert net.features(torch.randn(1, 3, 32, 32)).shape[-1] == 4
    paper = ResNet(depth=50, num_classes=3, width_mult=0.125, stride_in_1x1=True)
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)
    assert count(paper) == count(ResNet(depth=50, num_classes=3, width_mult=0.125))


def test_zero_init_residual_starts_blocks_as_identity():
    net = ResNet(depth=18, num_classes=3, zero_init_residual=True, width_mult=0.25)
    assert all(torch.all(block.bn2.weight == 0) for block in net.layer1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depth": 21}, "depth must be one of"),
        ({"shortcut": "D"}, "shortcut"),
        ({"width_mult": 0}, "width_mult"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet(**kwargs)


@pytest.mark.parametrize(("depth", "millions"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_the_cifar_networks_of_section_4_2_have_the_papers_sizes(depth, millions):
    """He et al. 2016, Table 6: 6n + 2 layers, option A shortcuts; the plain twins have the same parameters."""
    residual = ResNet(depth=depth, num_classes=10, shortcut="A")
    plain = ResNet(depth=depth, num_classes=10, shortcut="A", residual=False)
    count = sum(p.numel() for p in residual.parameters())
    assert round(count / 1e6, 2 if millions < 1 else 1) == millions
    assert sum(p.numel() for p in plain.parameters()) == count
    assert residual(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert residual.features(torch.randn(1, 3, 32, 32)).shape == (1, 64, 8, 8)  # stages at 32, 16 and 8 px
    convs = [m for m in residual.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 1 == depth  # the weighted layers: convolutions and the classifier
