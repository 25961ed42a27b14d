"""ImageNet-style folders: root/train/<class>/*, root/val/<class>/*, optional root/test/<class>/*."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lit_models.datamodules.base import (
    FileDataModule,
    FileDataset,
    check_fractions,
    collate_metadata,
    default_cache_dir,
)
from lit_models.datamodules.files import (
    DataError,
    list_class_folders,
    list_labelled_images,
    list_predict_images,
    load_rgb,
    report,
)
from lit_models.datamodules.protocols import ProtocolViews, TestCrops, check_test_protocol
from lit_models.datamodules.sources import mnist5k
from lit_models.datamodules.spec import DataSpec
from lit_models.datamodules.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preset,
    check_augmentation,
    classification_transform,
    evaluation_resize,
)


class ImageFileDataset(FileDataset):
    """(path, label) pairs decoded on access into {"image", "label"} samples (errors carried, see FileDataset)."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable, skip_corrupt: bool = False) -> None:
        super().__init__(samples, skip_corrupt)
        self.transform = transform

    def load(self, sample: tuple[str, int]) -> dict[str, Any]:
        path, label = sample
        return {"image": self.transform(load_rgb(path)), "label": label}


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images and labels; a batch holding an undecodable file keeps only the messages. Dense test views (each
    sample a list of images of its own sizes) stay a list, one entry per sample."""
    batch = collate_metadata(samples)
    if not batch["errors"]:
        images = [s["image"] for s in samples]
        batch["image"] = images if isinstance(images[0], list) else torch.stack(images)
        batch["label"] = torch.tensor([s["label"] for s in samples])
    return batch


class ImageFolderDataModule(FileDataModule):
    """Image classification from an ImageNet-style folder tree, or the embedded MNIST digits.

    ``num_classes`` and ``class_names`` come from the names of ``root/train``'s sub-folders (sorted), read in
    ``__init__``; no image is opened until ``setup``. Batches are dicts: ``image`` N x 3 x S x S, ``label`` N,
    ``path`` (the files, for predictions). A multi-crop test gives ``image`` N x V x 3 x S x S (V views per image), a
    dense one a list of N lists of views 3 x H x W (``test_crops``).
    """

    def __init__(
        self,
        root: str | None = None,
        preset: Preset = "imagenet",
        image_size: int = 224,
        hflip: bool = True,
        lighting: float | None = None,
        rotation: float = 0.0,
        scale_jitter: float = 0.0,
        shorter_side: tuple[int, int] | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        skip_corrupt: bool = False,
        predict_dir: str | None = None,
        cache_dir: str | None = None,
        test_crops: TestCrops = 1,
        test_scales: list[int] | None = None,
    ) -> None:
        """Configure the data.

        Args:
            root: Folder with train/<class>/*, val/<class>/* and optionally test/<class>/*. None uses the embedded
                5,000 MNIST digits (exported once to ``cache_dir``/mnist5k as PNGs).
            preset: Training augmentation (docs/classification.md, "Augmentation presets"): "imagenet"
                (random-resized crop + flip), "small" (resize, padded random crop + flip; 32x32-class images), or a
                paper's: "alexnet" (shorter side 256, random crop, flip, PCA lighting), "vgg" (scale jittering,
                shorter side in [256, 512]), "resnet" (shorter side in [256, 480], PCA lighting), "googlenet"
                (random-resized crop, Howard's photometric distortions, PCA lighting). Sizes are for a 224 crop and
                scale with image_size. Evaluation resizes to image_size with "small", else to image_size x 256/224
                and takes the centre crop.
            image_size: Side of the square network input.
            hflip: Random horizontal flips in training (turn off for digits and text).
            lighting: Standard deviation of AlexNet's PCA lighting noise in training; None: the preset's (0.1 for
                alexnet, vgg, resnet and googlenet, else 0); 0 turns it off.
            rotation: Random rotation in training, up to this many degrees either way (any preset).
            scale_jitter: Random rescaling in training by up to this fraction (0.1: 0.9-1.1; any preset).
            shorter_side: "alexnet", "vgg", "resnet": the range [low, high] of the shorter side S the training image
                is resized to before the random crop, in the papers' pixels for a 224 crop; None: the preset's
                ([256, 256], [256, 512], [256, 480]). [256, 256] or [384, 384] are VGG's fixed scales.
            mean: Per-channel normalisation mean (ImageNet's by default).
            std: Per-channel normalisation standard deviation.
            batch_size: Training batch size per device.
            eval_batch_size: Validation/test/predict batch size per device (default: batch_size).
            num_workers: DataLoader worker processes per device.
            val_fraction: Share of each class held out of train for validation when root/val is missing.
            split_seed: Seed of that held-out split (the same on every rank and every run).
            skip_corrupt: Replace undecodable images with the next readable one and log them, instead of stopping.
            predict_dir: Folder of images (any depth) for ``predict``; default: the test split, else val.
            cache_dir: Where embedded data is exported (default $LIT_MODELS_CACHE or ~/.cache/lit_models).
            test_crops: The views ``test`` scores each image by, their softmax class posteriors averaged
                (docs/classification.md, "Test protocols"): 1 (the centre crop), 10 (the four corners, the centre
                and their mirror images: AlexNet's and ResNet's ten crops), 144 (GoogLeNet's 144 crops over 4
                scales) or "dense" (the whole image and its mirror image through the fully convolutional net: VGG's
                dense evaluation, ResNet's fully convolutional test). Validation stays single-crop.
            test_scales: The shorter sides Q the test image is resized to, one set of views each, in the papers'
                pixels for a 224 crop (scaled to image_size), at least 224: [256, 384, 512] is VGG's multi-scale
                test, [224, 256, 384, 480, 640] ResNet's. None: 256; with 1 crop, the preset's own evaluation
                (validation's); 144 crops take GoogLeNet's [256, 288, 320, 352] and no other.
        """
        super().__init__()
        self.save_hyperparameters()
        check_fractions(val_fraction)
        check_augmentation(preset, shorter_side, lighting)
        check_test_protocol(test_crops, test_scales)
        self.embedded = root is None
        if self.embedded:
            self.root = Path(cache_dir) if cache_dir else default_cache_dir()
            self.root = self.root / "mnist5k"
            self.class_names = list(mnist5k.CLASS_NAMES)
        else:
            self.root = Path(root).expanduser()
            if not self.root.is_dir():
                raise DataError(
                    f"data root {self.root} does not exist or is not a folder. Pass --data.root a folder with "
                    "train/<class>/* images (val/ and test/ optional), or leave it out for the embedded digits."
                )
            self.class_names = list_class_folders(self.root / "train")
        self.num_classes = len(self.class_names)
        self.collate_fn = collate_samples

    def prepare_data(self) -> None:
        if self.embedded and not self.predict_only:
            mnist5k.export_mnist5k(self.root)

    @property
    def spec(self) -> DataSpec:
        hp = self.hparams
        return self.image_spec("classification", hp.image_size, evaluation_resize(hp.preset))

    def transform(self, train: bool) -> Callable:
        """The training transform, or the evaluation one (``spec.preprocess()``)."""
        if not train:
            return self.spec.preprocess()
        hp = self.hparams
        return classification_transform(
            hp.preset,
            hp.image_size,
            train,
            hp.hflip,
            hp.lighting,
            hp.rotation,
            hp.scale_jitter,
            tuple(hp.mean),
            tuple(hp.std),
            tuple(hp.shorter_side) if hp.shorter_side else None,
        )

    def test_transform(self) -> Callable:
        """The views of the test protocol (``test_crops`` at ``test_scales``); the evaluation transform for the
        single centre crop at the preset's own scale."""
        hp = self.hparams
        if hp.test_crops == 1 and hp.test_scales is None:
            return self.transform(train=False)
        return ProtocolViews(hp.test_crops, hp.test_scales, hp.image_size, hp.mean, hp.std)

    def setup(self, stage: str) -> None:
        if self.datasets:
            return
        skip = self.hparams.skip_corrupt
        if stage == "predict" and self.hparams.predict_dir:  # only the images asked for: no split is read
            _, files = list_predict_images(self.hparams.predict_dir)
            self.datasets["predict"] = ImageFileDataset([(f, -1) for f in files], self.transform(train=False), skip)
            return
        if self.embedded and not (self.root / mnist5k.COMPLETE_MARKER).exists():
            raise DataError(
                f"the embedded digits are not exported to {self.root} yet: call prepare_data() before setup() "
                "(a Trainer does this itself)."
            )
        train = list_labelled_images(self.root / "train", self.class_names)
        if (self.root / "val").is_dir():
            val = list_labelled_images(self.root / "val", self.class_names)
        else:
            train, val = self.split_off_validation(train)
        self.datasets["train"] = ImageFileDataset(train, self.transform(train=True), skip)
        self.datasets["val"] = ImageFileDataset(val, self.transform(train=False), skip)
        test = list_labelled_images(self.root / "test", self.class_names) if (self.root / "test").is_dir() else None
        if test is not None:
            self.datasets["test"] = ImageFileDataset(test, self.test_transform(), skip)
        predict_dir = self.hparams.predict_dir
        if predict_dir:
            _, files = list_predict_images(predict_dir)
            self.datasets["predict"] = ImageFileDataset([(f, -1) for f in files], self.transform(train=False), skip)
        else:  # one evaluation view per image, whatever the test protocol
            self.datasets["predict"] = ImageFileDataset(val if test is None else test, self.transform(False), skip)

    def images_dataset(self, images: list) -> ImageFileDataset:
        """A predict dataset of PIL images held in memory, with the evaluation transform."""
        return ImageFileDataset([(image, -1) for image in images], self.transform(train=False))

    def split_off_validation(self, samples: list[tuple[str, int]]) -> tuple[list, list]:
        """Hold out val_fraction of every class (at least one image), seeded, identically on every rank."""
        rng = np.random.default_rng(self.hparams.split_seed)
        labels = np.array([label for _, label in samples])
        held_out = []
        for label in range(self.num_classes):
            members = np.flatnonzero(labels == label)
            if len(members) < 2:
                report(
                    DataError(
                        f"class {self.class_names[label]!r} has {len(members)} training image(s); a validation "
                        f"split needs at least 2. Add images or provide {self.root / 'val'}."
                    )
                )
                continue
            count = max(1, round(len(members) * self.hparams.val_fraction))
            held_out.extend(rng.choice(members, size=count, replace=False).tolist())
        held_out_set = set(held_out)
        train = [s for i, s in enumerate(samples) if i not in held_out_set]
        val = [samples[i] for i in sorted(held_out_set)]
        return train, val
