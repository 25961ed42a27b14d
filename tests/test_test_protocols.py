"""The classification papers' test protocols as data options (ten crops, GoogLeNet's 144 crops, VGG's dense and
multi-scale evaluation), and the test's mistakes shown."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torchvision.transforms import v2

from lit_models import VGG, AlexNet, ImageFolderDataModule, ResNet
from lit_models.classification import most_confused
from lit_models.datamodules.protocols import GOOGLENET_SCALES, ProtocolViews, crop_views
from lit_models.datamodules.spec import DataSpec
from lit_models.pictures import TrainingPictures

pytestmark = pytest.mark.usefixtures("one_thread")
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def picture(height: int, width: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8))


def by_hand(image: Image.Image, scale: int, crop: int) -> torch.Tensor:
    """The centre crop of the image at shorter side ``scale``, normalised: torchvision's own transforms."""
    steps = [v2.ToImage(), v2.Resize(scale, antialias=True), v2.CenterCrop(crop), v2.ToDtype(torch.float32, scale=True),
             v2.Normalize(MEAN, STD)]  # fmt: skip
    return v2.Compose(steps)(image).as_subclass(torch.Tensor)


def tiny(cls, image_size: int, **net_args):
    torch.manual_seed(0)
    model = cls(num_classes=3, width_mult=0.125, representation_size=32, **net_args).eval()
    model.use_data(DataSpec("classification", "images", ("a", "b", "c"), image_size, "center_crop", MEAN, STD))
    return model


# ------------------------------------------------------------------------------------------- crops


@pytest.mark.parametrize("size", [(30, 40), (40, 30), (9, 9)])
def test_ten_crops_are_torchvisions_tencrop_with_the_centre_first(size):
    image = picture(*size)
    crops = ProtocolViews(10, None, 16, MEAN, STD)(image)
    reference = v2.Compose([v2.ToImage(), v2.Resize(18, antialias=True), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(MEAN, STD), v2.TenCrop(16)])(image)  # fmt: skip
    reference = [crop.as_subclass(torch.Tensor) for crop in reference]
    assert crops.shape == (10, 3, 16, 16)
    # The same ten views (torchvision mirrors the image before cutting, so its mirrored corners come in another order).
    assert sorted(crop.sum().item() for crop in crops) == pytest.approx(sorted(c.sum().item() for c in reference))
    assert torch.equal(crops[0], by_hand(image, 18, 16))  # the centre crop first: the single-crop view
    assert torch.equal(crops[5], crops[0].flip(-1))  # and its mirror image first among the mirrored ones


def test_googlenet_144_crops_follow_the_papers_geometry():
    # §7 at 224 px, a landscape 300 x 400 image at shorter side 256: 256 x 341, squares at left 0, 42 and 85.
    views = crop_views(144, 256, 256, 341, 224)
    assert len(views) == 36 and views[18:] == [view._replace(flip=True) for view in views[:18]]
    squares = {(view.top, view.left) for view in views if view.side == 256}
    assert squares == {(0, 0), (0, 42), (0, 85)}  # the left, centre and right squares, each resized to 224
    crops = {(view.top, view.left) for view in views if view.side == 224}
    offsets = {(16, 16), (0, 0), (0, 32), (32, 0), (32, 32)}  # the centre and the four corners of a 256 square
    assert crops == {(top, left + square) for top, left in offsets for square in (0, 42, 85)}
    # A portrait image takes the top, middle and bottom squares instead.
    portrait = crop_views(144, 288, 384, 288, 224)
    assert {(view.top, view.left) for view in portrait if view.side == 288} == {(0, 0), (48, 0), (96, 0)}

    # The transform cuts exactly these views at the four scales (here at image_size 16: 256 -> 18, ... 352 -> 25).
    image = picture(30, 40)
    found = ProtocolViews(144, None, 16, MEAN, STD)(image)
    assert found.shape == (144, 3, 16, 16) and GOOGLENET_SCALES == (256, 288, 320, 352)
    expected = []
    for scale in (18, 21, 23, 25):
        resized = v2.functional.resize(v2.functional.to_image(image), [scale], antialias=True)
        for view in crop_views(144, scale, *resized.shape[-2:], 16):
            region = v2.functional.crop(resized, view.top, view.left, view.side, view.side)
            region = v2.functional.resize(region, [16, 16], antialias=True) if view.side != 16 else region
            expected.append(region.flip(-1) if view.flip else region)
    expected = v2.functional.normalize(torch.stack(expected).float() / 255, MEAN, STD)
    torch.testing.assert_close(found, expected.as_subclass(torch.Tensor))
    # First the centre square (resized), then its centre crop: the single-crop view, at the first scale.
    assert torch.equal(found[1], by_hand(image, 18, 16))


# ------------------------------------------------------------------------------------------- dense


def windows(model, image: torch.Tensor, side: int) -> torch.Tensor:
    """The net's logits for every side x side window of the image's feature map (the features of a crop there, at
    stride 32): what applying the classifier to each crop computes, given the dense net's boundary conditions."""
    net = model.net
    features = net.features(image)
    rows, columns = features.shape[-2] - side + 1, features.shape[-1] - side + 1
    return torch.cat([net.classifier(net.avgpool(features[..., i : i + side, j : j + side]).flatten(1))
                      for i in range(rows) for j in range(columns)])  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "image_size", "side", "net_args", "large", "count"),
    [
        (VGG, 224, 7, {"depth": 11}, (288, 320), 12),  # a 9 x 10 feature map: 3 x 4 windows of 7 x 7 at stride 32 px
        (VGG, 32, 1, {"depth": 11, "batch_norm": True}, (96, 128), 12),  # 1 x 1 windows, the pooling folded into fc6
        (AlexNet, 64, 1, {}, (192, 256), 35),  # a 5 x 7 feature map
    ],
)
@torch.no_grad()
def test_dense_logits_average_the_classifier_over_every_window(cls, image_size, side, net_args, large, count):
    model = tiny(cls, image_size, **net_args)
    image = torch.randn(1, 3, image_size, image_size)
    # An image of the training size is one window: dense evaluation scores it as the net does.
    torch.testing.assert_close(model.dense_logits(image), model(image), atol=1e-5, rtol=0)
    large = torch.randn(1, 3, *large)
    for image in (large, large.flip(-1)):
        every = windows(model, image, side)
        assert len(every) == count
        torch.testing.assert_close(model.dense_logits(image)[0], every.mean(0), atol=1e-5, rtol=0)
    # The image and its mirror image: their softmax posteriors averaged (§3.2).
    posteriors = [torch.softmax(windows(model, image, side).mean(0), 0) for image in (large, large.flip(-1))]
    found = model.evaluation_logits([[large[0], large[0].flip(-1)]])
    torch.testing.assert_close(found[0], torch.stack(posteriors).mean(0).log(), atol=1e-5, rtol=0)


def test_dense_evaluation_refuses_images_smaller_than_the_window():
    model = tiny(VGG, 224, depth=11)
    with pytest.raises(ValueError, match=r"at least 224 px a side.*Q of at least 224"):
        model.dense_logits(torch.randn(1, 3, 200, 300))


# ------------------------------------------------------------------------------------------- scales


@torch.no_grad()
def test_multi_scale_test_averages_the_posteriors_over_the_scales():
    torch.manual_seed(0)
    model = ResNet(num_classes=3, depth=18, width_mult=0.125, small_input=True).eval()
    image = picture(30, 40)
    scales = [224, 256, 384]  # at image_size 16: shorter sides 16, 18 and 27
    crops = ProtocolViews(1, scales, 16, MEAN, STD)(image)
    each = [torch.softmax(model(by_hand(image, side, 16)[None]), 1) for side in (16, 18, 27)]
    torch.testing.assert_close(model.evaluation_logits(crops[None]), torch.cat(each).mean(0, keepdim=True).log())

    dense = ProtocolViews("dense", scales, 16, MEAN, STD)(image)
    assert [tuple(view.shape[-2:]) for view in dense] == [(16, 21), (16, 21), (18, 24), (18, 24), (27, 36), (27, 36)]
    wholes = [torch.softmax(model(view[None]), 1) for view in dense]  # a global-pooling net takes the whole image
    torch.testing.assert_close(model.evaluation_logits([dense]), torch.cat(wholes).mean(0, keepdim=True).log())
    # Images of other shapes in one batch: each scored over its own views.
    portrait = ProtocolViews("dense", scales, 16, MEAN, STD)(picture(40, 30))
    one_by_one = torch.cat([model.evaluation_logits([views]) for views in (dense, portrait, dense)])
    torch.testing.assert_close(model.evaluation_logits([dense, portrait, dense]), one_by_one)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"test_crops": 5}, r"test_crops must be 1, 10, 144 or 'dense', got 5:\n  1: the centre crop"),
        ({"test_crops": "Dense"}, r"got 'Dense'"),
        ({"test_crops": 10, "test_scales": []}, r"test_scales is empty"),
        ({"test_crops": "dense", "test_scales": [200, 256]}, r"test_scales \[200, 256\] must be .* Q >= 224"),
        ({"test_crops": 1, "test_scales": [256, 256]}, r"must be distinct"),
        ({"test_crops": 144, "test_scales": [256]}, r"GoogLeNet's protocol at its own scales \[256, 288, 320, 352\]"),
    ],
)
def test_bad_test_options_are_refused_with_what_to_do(image_tree, options, message):
    with pytest.raises(ValueError, match=message):
        ImageFolderDataModule(str(image_tree), **options)


# ------------------------------------------------------------------------------------------- in a run


@torch.no_grad()
def test_a_ten_crop_batch_is_scored_by_the_averaged_softmax():
    torch.manual_seed(0)
    model = ResNet(num_classes=3, depth=18, width_mult=0.125).eval()
    images = torch.randn(2, 10, 3, 16, 16)
    by_image = torch.stack([torch.softmax(model(crops), 1).mean(0) for crops in images]).log()
    torch.testing.assert_close(model.evaluation_logits(images), by_image, atol=1e-6, rtol=0)


def test_test_crops_10_tests_with_ten_crops_and_shows_their_centre(image_tree, tmp_path):
    data = ImageFolderDataModule(str(image_tree), image_size=16, batch_size=4, num_workers=0, test_crops=10)
    model = ResNet(num_classes=3, depth=18, width_mult=0.125)
    trainer = pl.Trainer(max_steps=1, limit_val_batches=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[TrainingPictures(samples=2, curves=False)],
                         default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(model, data)
    assert next(iter(data.test_dataloader()))["image"].shape[1:] == (10, 3, 16, 16)
    metrics = trainer.test(model, data, verbose=False)[0]
    assert 0 <= metrics["test/acc_top1"] <= 1 and np.isfinite(metrics["test/loss"])
    assert (tmp_path / "pictures" / "test_samples.png").is_file()  # each image shown by its centre crop


def test_dense_multi_scale_test_of_vgg_keeps_validation_and_prediction_single(image_tree, tmp_path, caplog):
    pl.seed_everything(0)
    data = ImageFolderDataModule(str(image_tree), preset="small", image_size=32, hflip=False, batch_size=4,
                                 num_workers=0, test_crops="dense", test_scales=[224, 256])  # fmt: skip
    model = VGG(num_classes=3, depth=11, width_mult=0.125, representation_size=32, batch_norm=True)
    trainer = pl.Trainer(max_steps=1, limit_val_batches=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[TrainingPictures(samples=2, curves=False)],
                         default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(model, data)
    assert next(iter(data.val_dataloader()))["image"].shape[1:] == (3, 32, 32)
    assert data.datasets["predict"][0]["image"].shape == (3, 32, 32)
    batch = next(iter(data.test_dataloader()))
    assert (
        len(batch["image"]) == 4
        and [tuple(v.shape) for v in batch["image"][0]] == [(3, 32, 32)] * 2 + [(3, 37, 37)] * 2
    )
    with caplog.at_level(logging.INFO, logger="lit_models"):
        metrics = trainer.test(model, data, verbose=False)[0]
    assert 0 <= metrics["test/acc_top1"] <= 1 and np.isfinite(metrics["test/loss"])
    wrong = round(9 * (1 - metrics["test/acc_top1"]))  # of the 9 test images; 6 for this seed
    assert wrong > 0 and len(model.test_mistakes) == min(wrong, model.mistakes_shown)
    probabilities = [mistake.probability for mistake in model.test_mistakes]
    assert probabilities == sorted(probabilities, reverse=True)
    assert {tuple(mistake.image.shape) for mistake in model.test_mistakes} == {(3, 32, 32)}  # the first view each
    pictures = tmp_path / "pictures"
    assert (pictures / "test_confusion_matrix.png").is_file() and (pictures / "test_mistakes.png").is_file()
    assert "most confused classes in test (true -> predicted: count):\n  " in caplog.text


def test_the_most_confident_mistakes_and_the_most_confused_pairs_are_kept():
    model = ResNet(num_classes=3, depth=18, width_mult=0.125, small_input=True)
    images = torch.randn(5, 3, 8, 8)
    logits = torch.tensor([[4.0, 0, 0], [0, 1, 0], [0, 3, 0], [0, 0, 2], [5, 0, 0]]).log_softmax(1)
    labels = torch.tensor([0, 2, 0, 1, 1])  # right, then wrong with increasing confidence: 1, 3, 2
    model.mistakes_shown = 2
    model.keep_mistakes(images, logits, labels)
    assert [(m.predicted, m.truth) for m in model.test_mistakes] == [(0, 1), (1, 0)]
    assert model.test_mistakes[0].image.shape == (3, 8, 8) and model.test_mistakes[0].image.dtype == torch.uint8
    matrix = torch.tensor([[5, 2, 0], [7, 1, 2], [0, 0, 3]])
    assert most_confused(matrix, ["cat", "dog", "owl"]) == ["dog -> cat: 7", "cat -> dog: 2", "dog -> owl: 2"]
    assert most_confused(torch.eye(3, dtype=torch.long), ["cat", "dog", "owl"]) == []
