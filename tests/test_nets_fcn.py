import pytest
import torch
import torch.nn.functional as F

from lit_models.nets.fcn import FCN, upsampler
from lit_models.nets.resnet import ResNet
from lit_models.nets.vgg import VGG

TINY = {"width_mult": 0.125, "representation_size": 32}


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
@pytest.mark.parametrize("size", [(97, 131), (1, 1), (33, 200)])
@pytest.mark.parametrize("backbone", ["vgg16", "resnet18", "resnet50"])
def test_score_map_has_exactly_the_input_size(variant, size, backbone):
    net = FCN(num_classes=4, variant=variant, backbone=backbone, **TINY).eval()
    assert net(torch.randn(1, 3, *size)).shape == (1, 4, *size)


def test_resnet_backbone_keeps_resnet_parameter_names():
    net = FCN(num_classes=3, backbone="resnet18", width_mult=0.25)
    assert "encoder.net.layer4.1.conv2.weight" in net.state_dict()
    assert not any(k.startswith("encoder.net.fc") for k in net.state_dict())


def test_fc6_fc7_are_the_dense_layers_reshaped():
    torch.manual_seed(0)
    vgg = VGG(depth=16, num_classes=10, width_mult=0.125, representation_size=32).eval()
    fcn = FCN(num_classes=3, **TINY).eval()
    dense = [vgg.classifier[0], vgg.classifier[3]]
    assert sum(p.numel() for m in dense for p in m.parameters()) == sum(
        p.numel() for m in (fcn.encoder.fc6, fcn.encoder.fc7) for p in m.parameters()
    )
    fcn.convolutionalize(vgg)
    pool5 = torch.randn(2, 64, 7, 7)
    as_dense = vgg.classifier[:5](pool5.flatten(1))  # fc6, relu, dropout (eval), fc7, relu
    as_conv = F.relu(fcn.encoder.fc7(F.relu(fcn.encoder.fc6(pool5))))  # N x 32 x 1 x 1
    torch.testing.assert_close(as_conv.flatten(1), as_dense)
    # Full-size: the 7x7 and 1x1 convolutions hold exactly VGG-16's fc6/fc7 parameters.
    with torch.device("meta"):
        full = FCN(num_classes=21)
    fc6, fc7 = full.encoder.fc6, full.encoder.fc7
    assert fc6.weight.numel() + fc6.bias.numel() == 25088 * 4096 + 4096
    assert fc7.weight.numel() + fc7.bias.numel() == 4096 * 4096 + 4096


def test_deconvolution_starts_as_bilinear_interpolation_and_learns():
    torch.manual_seed(0)
    layer = upsampler(2, 2)
    x = torch.randn(1, 2, 5, 6)
    reference = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    # The transposed conv's output is one pixel larger on each side; inside, it is bilinear interpolation.
    torch.testing.assert_close(layer(x)[:, :, 2:-2, 2:-2], reference[:, :, 1:-1, 1:-1])
    assert layer.weight.requires_grad


@pytest.mark.parametrize("stride", [2, 8, 32])
def test_same_geometry_upsampler_puts_pixel_i_on_s_times_i(stride):
    torch.manual_seed(0)
    x = torch.randn(1, 2, 3, 5)
    out = upsampler(2, stride, same=True)(x)
    assert out.shape[-2:] == (3 * stride, 5 * stride)
    torch.testing.assert_close(out[:, :, ::stride, ::stride], x)  # exactly aligned, as ResNet's features are
    # Between two pixels: linear interpolation.
    torch.testing.assert_close(out[:, :, 0, stride // 2], (x[:, :, 0, 0] + x[:, :, 0, 1]) / 2)


def test_skip_scores_start_at_zero_and_everything_trains():
    net = FCN(num_classes=3, variant="8s", **TINY)
    assert not net.score_pool4.weight.any() and not net.score_pool3.weight.any()
    out = net(torch.randn(2, 3, 40, 48))
    F.cross_entropy(out, torch.randint(0, 3, (2, 40, 48))).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant must be one of"):
        FCN(variant="4s")
    with pytest.raises(ValueError, match="backbone must be one of"):
        FCN(backbone="resnet20")


def test_backbone_weights_load_through_the_classifier_they_came_from(tmp_path):
    torch.manual_seed(0)
    vgg = VGG(depth=16, num_classes=10, batch_norm=True, width_mult=0.125, representation_size=32)
    torch.save(vgg.state_dict(), tmp_path / "vgg.pth")
    fcn = FCN(num_classes=3, batch_norm=True, **TINY)
    fcn.load_backbone_weights(tmp_path / "vgg.pth")  # its own width and batch norm; the 10-class layer dropped
    assert torch.equal(fcn.encoder.features[1].running_var, vgg.features[1].running_var)
    assert torch.equal(fcn.encoder.fc6.weight.flatten(1), vgg.classifier[0].weight)
    assert torch.equal(fcn.encoder.fc7.bias, vgg.classifier[3].bias)
    resnet = ResNet(depth=18, num_classes=10, width_mult=0.125)
    torch.save(resnet.state_dict(), tmp_path / "resnet.pth")
    fcn = FCN(num_classes=3, backbone="resnet18", width_mult=0.125)
    fcn.load_backbone_weights(tmp_path / "resnet.pth")
    assert torch.equal(fcn.encoder.net.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="does not fit"):  # fc6/fc7 of another width
        FCN(num_classes=3, width_mult=0.125, representation_size=16).load_backbone_weights(tmp_path / "vgg.pth")
