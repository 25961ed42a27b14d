import torch
from PIL import Image

from lit_models.datamodules.transforms import PCALighting, classification_transform


def test_imagenet_preset_sizes_and_determinism():
    image = Image.new("RGB", (300, 200), (120, 60, 30))
    train = classification_transform("imagenet", 224, train=True)
    evaluate = classification_transform("imagenet", 224, train=False)
    assert train(image).shape == (3, 224, 224)
    assert evaluate(image).shape == (3, 224, 224)
    torch.testing.assert_close(evaluate(image), evaluate(image))  # resize 256 + centre crop: no randomness


def test_small_preset_with_affine_jitter():
    image = Image.new("RGB", (28, 28), 200)
    out = classification_transform("small", 32, train=True, hflip=False, rotation=10, scale_jitter=0.1)(image)
    assert out.shape == (3, 32, 32)


def test_pca_lighting_shifts_every_pixel_by_one_colour():
    torch.manual_seed(0)
    image = torch.rand(3, 8, 8)
    shifted = PCALighting(std=0.1)(image)
    delta = shifted - image
    per_channel = delta[:, 0, 0].view(3, 1, 1)
    torch.testing.assert_close(delta, per_channel.expand_as(delta))  # one illumination change for the image
    assert delta.abs().max() > 0
