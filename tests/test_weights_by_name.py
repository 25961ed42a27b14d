"""torchvision's weights by name (``weights: IMAGENET1K_V1``) for classifiers and the backbones of the other
families, through torchvision's weights API and torch's cache; never downloaded here: each test puts a file it
made into a temporary TORCH_HOME, or finds the network refused."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

import lit_models
from lit_models.nets.densenet import DenseNet as DenseNetNet
from lit_models.nets.resnet import ResNet as ResNetNet
from lit_models.nets.vgg import VGG as VGGNet


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, and no network: a download attempt fails as it does on a cluster node without one."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(url: str, *args, **kwargs) -> None:
        raise urllib.error.URLError(f"no network here (asked for {url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "torch"


def place(torch_home: Path, weights: torchvision.models.WeightsEnum, state: dict) -> Path:
    """Put a state dict where torch's cache keeps torchvision's file of these weights."""
    path = torch_home / "hub" / "checkpoints" / os.path.basename(weights.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_a_classifier_loads_named_weights_from_the_cache(torch_home):
    torch.manual_seed(0)
    source = ResNetNet(depth=18, num_classes=1000, width_mult=0.125)
    place(torch_home, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, source.state_dict())
    for name in ("IMAGENET1K_V1", "DEFAULT"):
        model = lit_models.ResNet(num_classes=3, depth=18, width_mult=0.125, weights=name)
        assert torch.equal(model.net.conv1.weight, source.conv1.weight)
        assert torch.equal(model.net.layer4[1].bn2.running_mean, source.layer4[1].bn2.running_mean)
        assert model.net.fc.out_features == 3  # ImageNet's head is left out, the 3-class one trains anew


def test_densenet_files_with_torchvisions_old_names_load(torch_home):
    source = DenseNetNet(depth=121, num_classes=1000, growth_rate=4, num_init_features=8)
    old_names = {
        key.replace("norm1.", "norm.1.").replace("conv1.", "conv.1.").replace("norm2.", "norm.2.")
        .replace("conv2.", "conv.2."): value
        for key, value in source.state_dict().items()
    }  # fmt: skip
    assert "features.denseblock1.denselayer1.norm.1.weight" in old_names
    place(torch_home, torchvision.models.DenseNet121_Weights.IMAGENET1K_V1, old_names)
    model = lit_models.DenseNet(num_classes=3, depth=121, growth_rate=4, num_init_features=8, weights="IMAGENET1K_V1")
    layer = model.net.features.denseblock1.denselayer1
    assert torch.equal(layer.norm1.weight, source.features.denseblock1.denselayer1.norm1.weight)


def test_backbones_of_the_other_families_load_named_weights(torch_home):
    torch.manual_seed(0)
    vgg = VGGNet(depth=16, num_classes=1000, width_mult=0.0625, representation_size=4096)
    place(torch_home, torchvision.models.VGG16_Weights.IMAGENET1K_V1, vgg.state_dict())
    resnet = ResNetNet(depth=18, num_classes=1000, width_mult=0.125)
    place(torch_home, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, resnet.state_dict())

    fcn = lit_models.FCN(num_classes=3, width_mult=0.0625, weights_backbone="IMAGENET1K_V1")
    assert torch.equal(fcn.net.encoder.features[0].weight, vgg.features[0].weight)
    detector = lit_models.FasterRCNN(num_classes=3, backbone="resnet18", width_mult=0.125, weights_backbone="DEFAULT")
    assert torch.equal(detector.net.backbone.body.conv1.weight, resnet.conv1.weight)
    yolo = lit_models.YOLOv1(num_classes=3, backbone="resnet18", width_mult=0.125, image_size=64, grid_size=2,
                             weights_backbone="IMAGENET1K_V1")  # fmt: skip
    assert torch.equal(yolo.net.backbone.body.conv1.weight, resnet.conv1.weight)


def test_offline_the_error_names_the_weights_the_file_and_where_to_put_it(torch_home):
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    expected = torch_home / "hub" / "checkpoints" / os.path.basename(weights.url)
    with pytest.raises(FileNotFoundError) as caught:
        lit_models.ResNet(num_classes=3, depth=50, width_mult=0.125, weights="DEFAULT")
    message = str(caught.value)
    assert "resnet50 weights ResNet50_Weights.IMAGENET1K_V2 are not in torch's cache" in message
    assert f"download {weights.url} and put the file at {expected}" in message and "no network here" in message


def test_names_that_do_not_exist_or_do_not_fit_say_what_to_do(torch_home):
    with pytest.raises(ValueError, match=r"torchvision has no IMAGENET9K weights for resnet18: choose one of"):
        lit_models.ResNet(num_classes=3, depth=18, weights="IMAGENET9K")
    with pytest.raises(ValueError, match="AlexNet with these arguments has no torchvision counterpart"):
        lit_models.AlexNet(num_classes=3, width_mult=0.125, representation_size=8, weights="IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError, match="no such file, and not a torchvision weights name"):
        lit_models.ResNet(num_classes=3, depth=18, width_mult=0.125, weights="missing/resnet.pth")
