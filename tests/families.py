"""One tiny model and its data for each family, for tests that run every family through the same loop."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lit_models import (
    FCN,
    GRU,
    ArrayDataModule,
    DetectionDataModule,
    ImageFolderDataModule,
    ResNet,
    SegmentationDataModule,
    TextDataModule,
    YOLOv1,
)

TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want " * 8


def classifier(root: Path) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    data = ImageFolderDataModule(str(root), image_size=16, batch_size=8, num_workers=0)
    return ResNet(num_classes=3, depth=18, small_input=True, width_mult=0.125), data


def segmenter(root: Path) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    data = SegmentationDataModule(str(root), crop_size=32, base_size=40, batch_size=3, num_workers=0)
    net_args = {"variant": "32s", "width_mult": 0.125, "representation_size": 16, "batch_norm": True}
    return FCN(num_classes=data.num_classes, **net_args), data


def detector(root: Path) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    data = DetectionDataModule(str(root), image_size=64, batch_size=3, num_workers=0)
    model = YOLOv1(num_classes=data.num_classes, image_size=64, grid_size=4, width_mult=0.125, backbone="resnet18")
    return model, data


def language_model(root: Path) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    (root / "book.txt").write_text(TEXT, encoding="utf-8")
    data = TextDataModule(str(root / "book.txt"), seq_len=16, batch_size=2, splits=(0.8, 0.1))
    return GRU(num_classes=data.num_classes, hidden_size=8, embedding_dim=4), data


def sequence_classifier(root: Path) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    rng = np.random.default_rng(0)
    labels = np.arange(24) % 2
    x = rng.normal(labels[:, None, None] * 2.0 - 1.0, 0.5, (24, 9, 1)).astype(np.float32)
    np.savez(root / "signs.npz", x=x, y=labels)
    data = ArrayDataModule(str(root / "signs.npz"), batch_size=8)
    return GRU(num_classes=data.num_classes, hidden_size=8), data


FAMILIES = {  # the model and data of each, and the fixture its data reads (or writes its file into)
    "classification": (classifier, "image_tree"),
    "segmentation": (segmenter, "shapes_tree"),
    "detection": (detector, "shapes_tree"),
    "language_model": (language_model, "tmp_path"),
    "sequence_classification": (sequence_classifier, "tmp_path"),
}


def build(family: str, request: pytest.FixtureRequest) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    torch.manual_seed(0)
    make, root = FAMILIES[family]
    return make(request.getfixturevalue(root))


def fit_and_save(model: pl.LightningModule, data: pl.LightningDataModule, tmp_path: Path) -> Path:
    """Two training steps, then the checkpoint alone in a new folder (the run's folder deleted)."""
    trainer = pl.Trainer(max_steps=2, limit_val_batches=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path / "run"))  # fmt: skip
    trainer.fit(model, data)
    alone = tmp_path / "elsewhere" / "model.ckpt"
    alone.parent.mkdir()
    trainer.save_checkpoint(alone)
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
    return alone
