"""A run stopped mid-epoch and resumed from its checkpoint ends exactly where the unstopped run ends: the same
weights, the same metrics, for every family: the training order and position, each sample's augmentation, the
model's random numbers (dropout), the learning-rate schedule and a language model's carried state all continue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from families import TEXT
from pytorch_lightning.callbacks import ModelCheckpoint

from lit_models import (
    FCN,
    LSTM,
    DetectionDataModule,
    ImageFolderDataModule,
    ResNet,
    SegmentationDataModule,
    TextDataModule,
)
from lit_models.detection import FasterRCNN, FastRCNN, YOLOv1
from lit_models.optim import WarmupCosineLR

DETECTION = {"backbone": "resnet18", "width_mult": 0.125, "representation_size": 16}


def optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def schedule(optim: torch.optim.Optimizer) -> WarmupCosineLR:
    return WarmupCosineLR(optim, T_max=4, warmup_epochs=1)  # warm-up, then cosine, by epoch: both cross the stop


TRAINING = {"optimizer": optimizer, "lr_scheduler": schedule}


def classification(root: Path, workers: int) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    data = ImageFolderDataModule(str(root), image_size=16, batch_size=8, num_workers=workers)
    return ResNet(num_classes=3, depth=18, small_input=True, width_mult=0.125, **TRAINING), data


def segmentation(root: Path, workers: int) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    data = SegmentationDataModule(str(root), crop_size=32, base_size=40, batch_size=2, num_workers=workers)
    net = {"variant": "32s", "width_mult": 0.125, "representation_size": 16, "batch_norm": True}
    return FCN(num_classes=data.num_classes, **net, **TRAINING), data


def fast_rcnn(root: Path, workers: int) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    data = DetectionDataModule(str(root), batch_size=2, num_workers=workers, proposals="fast", proposal_width=None,
                               max_proposals=50)  # fmt: skip
    # External proposals: boxes of our own in the cache, instead of a selective search in spawned processes.
    rng = np.random.default_rng(0)
    for image in sorted((root / "JPEGImages").glob("*.jpg")):
        corners = rng.uniform(0, 40, (50, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(8, 24, (50, 2))], axis=1).astype(np.float32)
        data.proposal_cache.file(image).parent.mkdir(parents=True, exist_ok=True)
        np.save(data.proposal_cache.file(image), boxes)
    return FastRCNN(data.num_classes, min_size=64, rois_per_image=16, **DETECTION, **TRAINING), data


def faster_rcnn(root: Path, workers: int) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    data = DetectionDataModule(str(root), batch_size=2, num_workers=workers)
    sizes = {"min_size": 64, "max_size": 64, "anchor_sizes": (16, 32)}
    return FasterRCNN(data.num_classes, **sizes, **DETECTION, **TRAINING), data


def yolo(root: Path, workers: int) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    data = DetectionDataModule(str(root), image_size=64, batch_size=2, num_workers=workers)
    net = {"image_size": 64, "grid_size": 4, "width_mult": 0.125, "backbone": "resnet18"}
    return YOLOv1(num_classes=data.num_classes, **net, **TRAINING), data


def language_model(root: Path, workers: int) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    (root / "book.txt").write_text(TEXT, encoding="utf-8")
    data = TextDataModule(str(root / "book.txt"), seq_len=16, batch_size=8, eval_batch_size=2,
                          splits=(0.8, 0.1), num_workers=workers)  # fmt: skip
    return LSTM(num_classes=data.num_classes, hidden_size=8, embedding_dim=4, dropout=0.5, **TRAINING), data


# family: (builder, the fixture its data reads, steps: the stop falls mid-epoch, the run crosses epochs)
FAMILIES: dict[str, tuple[Callable, str, int]] = {
    "classification": (classification, "image_tree", 8),
    "segmentation": (segmentation, "shapes_tree", 6),
    "fast_rcnn": (fast_rcnn, "shapes_tree", 6),
    "faster_rcnn": (faster_rcnn, "shapes_tree", 6),
    "yolo": (yolo, "shapes_tree", 6),
    "language_model": (language_model, "tmp_path", 8),
}
CASES = [(family, 0) for family in FAMILIES] + [("classification", 2)]


def fit(family: str, workers: int, request: pytest.FixtureRequest, folder: Path, resume: Path | None = None):
    """``steps`` optimizer steps from seed 0, saving a checkpoint at half of them; from ``resume`` if given."""
    make, root, steps = FAMILIES[family]
    pl.seed_everything(0, workers=True, verbose=False)
    model, data = make(request.getfixturevalue(root), workers)
    midway = ModelCheckpoint(dirpath=folder, filename="{step}", every_n_train_steps=steps // 2, save_top_k=-1)
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, limit_val_batches=1, num_sanity_val_steps=0,
                         deterministic=True, logger=False, callbacks=[midway], enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    trainer.fit(model, data, ckpt_path=resume)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    return model, trainer, metrics


@pytest.mark.parametrize(("family", "workers"), CASES, ids=[f"{f}-{w}workers" for f, w in CASES])
def test_a_run_resumed_mid_epoch_ends_as_the_unstopped_run(family, workers, request, tmp_path, one_thread):
    straight, trainer, straight_metrics = fit(family, workers, request, tmp_path / "straight")
    steps = FAMILIES[family][2]
    stop = tmp_path / "straight" / f"step={steps // 2}.ckpt"
    saved = torch.load(stop, map_location="cpu", weights_only=True)
    progress = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert not progress["is_last_batch"], "the stop should fall mid-epoch"
    resumed, again, resumed_metrics = fit(family, workers, request, tmp_path / "resumed", resume=stop)
    assert again.global_step == trainer.global_step == steps
    for (name, ours), theirs in zip(resumed.state_dict().items(), straight.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), f"{name} differs by {(ours.float() - theirs.float()).abs().max()}"
    assert resumed_metrics == straight_metrics
