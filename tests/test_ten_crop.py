"""Ten-crop test (torchvision's TenCrop, the protocol of AlexNet's and ResNet's tables) as a data option."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from lit_models import ImageFolderDataModule, ResNet
from lit_models.datamodules.transforms import classification_transform


def test_ten_crops_are_the_corners_the_centre_and_their_mirrors():
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    crops = classification_transform("imagenet", 16, train=False, crops=10)(picture)
    single = classification_transform("imagenet", 16, train=False)(picture)
    assert crops.shape == (10, 3, 16, 16)
    assert torch.equal(crops[4], single)  # the centre crop is the single-crop protocol's
    assert torch.equal(crops[9], single.flip(-1))  # and its mirror image


def test_a_ten_crop_batch_is_scored_by_the_averaged_softmax():
    torch.manual_seed(0)
    model = ResNet(num_classes=3, depth=18, width_mult=0.125).eval()
    images = torch.randn(2, 10, 3, 16, 16)
    with torch.no_grad():
        found = model.evaluation_logits(images)
        by_hand = torch.stack([torch.softmax(model(crops), 1).mean(0) for crops in images]).log()
    assert torch.allclose(found, by_hand, atol=1e-6)


def test_test_crops_10_tests_with_ten_crops_and_keeps_validation_single(image_tree, tmp_path, one_thread):
    data = ImageFolderDataModule(str(image_tree), image_size=16, batch_size=4, num_workers=0, test_crops=10)
    model = ResNet(num_classes=3, depth=18, width_mult=0.125)
    trainer = pl.Trainer(max_steps=1, limit_val_batches=1, logger=False, enable_progress_bar=False,
                         default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(model, data)
    assert next(iter(data.val_dataloader()))["image"].shape[1:] == (3, 16, 16)
    assert next(iter(data.test_dataloader()))["image"].shape[1:] == (10, 3, 16, 16)
    metrics = trainer.test(model, data, verbose=False)[0]
    assert 0 <= metrics["test/acc_top1"] <= 1 and np.isfinite(metrics["test/loss"])
    with pytest.raises(ValueError, match="test_crops must be 1 .* or 10"):
        ImageFolderDataModule(str(image_tree), test_crops=5)
