"""The papers' augmentation presets (lit_models/datamodules/transforms.py): sizes, scale ranges, colour noise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from torchvision.transforms import v2

from lit_models.datamodules.image_folder import ImageFolderDataModule
from lit_models.datamodules.transforms import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    PRESETS,
    PCALighting,
    classification_transform,
    training_transform,
)

RECIPES = Path(__file__).resolve().parents[1] / "lit_models" / "configs" / "classification"
NO_NORMALISATION = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def picture(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy())


def step(transform: v2.Compose, kind: type) -> v2.Transform:
    return next(t for t in transform.transforms if isinstance(t, kind))


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("size", [(40, 30), (30, 40), (9, 9)])
def test_every_preset_gives_the_network_its_square_in_training_and_evaluation(preset, size):
    image = picture(*size)
    assert classification_transform(preset, 16, train=True)(image).shape == (3, 16, 16)
    assert classification_transform(preset, 16, train=False)(image).shape == (3, 16, 16)


@pytest.mark.parametrize(
    ("preset", "image_size", "expected"),
    [("vgg", 224, (256, 512)), ("vgg", 28, (32, 64)), ("resnet", 224, (256, 480)), ("resnet", 28, (32, 60))],
)
def test_scale_jittering_draws_shorter_sides_across_the_papers_range_scaled_to_the_crop(preset, image_size, expected):
    resize = step(training_transform(preset, image_size), v2.RandomResize)
    torch.manual_seed(0)
    image = torch.zeros(1, 2, 3, dtype=torch.uint8)  # landscape: the shorter side is the height
    sides = torch.tensor([resize(image).shape[-2] for _ in range(500)], dtype=torch.float32)
    low, high = expected
    span = high - low
    assert low <= sides.min() <= low + 0.03 * span and high - 0.03 * span <= sides.max() <= high, "S spans the range"
    assert len(set(sides.tolist())) >= 0.8 * min(span + 1, 500 * 0.6), "every size in between, not a few scales"
    assert abs(sides.mean() - (low + high) / 2) < 0.05 * span, "uniform: centred on the middle"
    assert abs(sides.std() - span / 12**0.5) < 0.1 * span / 12**0.5, "uniform: the spread of U(low, high)"


def test_a_fixed_shorter_side_is_one_scale_and_is_scaled_with_the_crop():
    resize = step(training_transform("vgg", 56, shorter_side=(384, 384)), v2.RandomResize)
    torch.manual_seed(0)
    assert {resize(torch.zeros(3, 20, 30)).shape[-2] for _ in range(20)} == {96}  # 384 x 56 / 224


def test_alexnet_crops_stay_inside_the_central_square():
    # Red ends left and right of a blue central 40 x 40 square: AlexNet's crops (§2) never see red, VGG's do.
    image = torch.zeros(3, 40, 80, dtype=torch.uint8)
    image[2] = 255
    image[:, :, :20] = image[:, :, 60:] = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)
    image = Image.fromarray(image.permute(1, 2, 0).numpy())
    torch.manual_seed(0)
    alexnet = training_transform("alexnet", 28, lighting=0, **NO_NORMALISATION)
    vgg = training_transform("vgg", 28, lighting=0, **NO_NORMALISATION)
    assert max(alexnet(image)[0].max().item() for _ in range(40)) < 0.05
    assert max(vgg(image)[0].max().item() for _ in range(40)) > 0.5


def test_pca_lighting_moves_colours_along_the_imagenet_principal_components():
    torch.manual_seed(0)
    lighting = PCALighting(std=0.1)
    image = torch.full((3, 2, 2), 0.5)
    shifts = torch.stack([lighting(image)[:, 0, 0] - 0.5 for _ in range(4000)])  # 4000 x 3
    eigvec, eigval = torch.tensor(IMAGENET_EIGVEC), torch.tensor(IMAGENET_EIGVAL)
    expected = eigvec @ torch.diag((0.1 * eigval) ** 2) @ eigvec.T
    measured = torch.cov(shifts.T)
    torch.testing.assert_close(measured, expected, atol=0.05 * expected.max().item(), rtol=0)
    values, vectors = torch.linalg.eigh(measured)
    assert abs(torch.dot(vectors[:, -1], eigvec[:, 0])) > 0.999, "the main shift is along the grey axis"
    assert values[-1].item() == pytest.approx((0.1 * eigval[0].item()) ** 2, rel=0.1)


def test_pca_lighting_refuses_an_image_before_its_conversion_to_floats():
    with pytest.raises(TypeError, match="ToDtype"):
        PCALighting(0.1)(torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_the_papers_presets_add_lighting_unless_it_is_turned_off():
    for preset in ("alexnet", "vgg", "resnet", "googlenet"):
        assert step(training_transform(preset, 16), PCALighting).std == 0.1
        assert not any(isinstance(t, PCALighting) for t in training_transform(preset, 16, lighting=0).transforms)
    assert not any(isinstance(t, PCALighting) for t in training_transform("imagenet", 16).transforms)


def test_googlenet_scales_brightness_by_howards_factors_from_half_to_one_and_a_half():
    grey = Image.new("RGB", (20, 20), (102, 102, 102))  # 0.4: contrast and saturation leave a grey image as it is
    transform = training_transform("googlenet", 8, hflip=False, lighting=0, **NO_NORMALISATION)
    torch.manual_seed(0)
    levels = torch.tensor([transform(grey).mean().item() for _ in range(300)])
    assert 0.2 - 1e-3 <= levels.min() < 0.22 and 0.58 < levels.max() <= 0.6 + 1e-3


@pytest.mark.parametrize("preset", list(PRESETS))
def test_a_seed_fixes_the_augmentation(preset):
    transform = classification_transform(preset, 16, train=True, rotation=5, scale_jitter=0.1)
    image = picture(48, 36)
    torch.manual_seed(3)
    first = transform(image)
    torch.manual_seed(3)
    torch.testing.assert_close(transform(image), first)
    assert not torch.equal(transform(image), first), "and the next draw differs"


def test_the_papers_presets_evaluate_with_the_centre_crop(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
        picture().save(tmp_path / "train" / name / "0.png")
    for preset in PRESETS:
        data = ImageFolderDataModule(root=str(tmp_path), preset=preset, image_size=16)
        assert data.spec.resize == ("resize" if preset == "small" else "center_crop")


def test_bad_augmentation_arguments_are_refused_with_what_to_do(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="(?s)vggg.*imagenet.*small.*alexnet.*vgg.*resnet.*googlenet"):
        ImageFolderDataModule(root=str(tmp_path), preset="vggg")
    with pytest.raises(ValueError, match="alexnet, vgg, resnet.*leave shorter_side out"):
        ImageFolderDataModule(root=str(tmp_path), preset="imagenet", shorter_side=(256, 512))
    with pytest.raises(ValueError, match=r"224 <= low <= high"):
        ImageFolderDataModule(root=str(tmp_path), preset="vgg", shorter_side=(512, 256))
    with pytest.raises(ValueError, match="lighting"):
        ImageFolderDataModule(root=str(tmp_path), preset="alexnet", lighting=-0.1)


@pytest.mark.parametrize(
    ("recipe", "preset"),
    [("alexnet", "alexnet"), ("vgg16", "vgg"), ("googlenet", "googlenet"), ("resnet18", "resnet"),
     ("resnet50", "resnet"), ("densenet121", "resnet")],
)  # fmt: skip
def test_each_imagenet_recipe_uses_its_papers_preset_and_says_so(recipe, preset):
    text = (RECIPES / f"{recipe}_imagenet.yaml").read_text()
    assert yaml.safe_load(text)["data"]["init_args"]["preset"] == preset
    assert f"preset {preset}" in text.split("\nseed_everything")[0], "the comment names the preset it describes"
