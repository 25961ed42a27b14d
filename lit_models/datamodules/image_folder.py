"""ImageNet-style folders: root/train/<class>/*, root/val/<class>/*, optional root/test/<class>/*."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from lit_models.datamodules.base import (
    FileDataModule,
    FileDataset,
    check_fractions,
    collate_metadata,
    default_cache_dir,
)
from lit_models.datamodules.files import (
    DataError,
    DecodeDevice,
    check_decode_device,
    decode_on_device,
    decode_rgb,
    list_class_folders,
    list_labelled_images,
    list_predict_images,
    read_encoded,
    report,
)
from lit_models.datamodules.protocols import ProtocolViews, TestCrops, check_test_protocol
from lit_models.datamodules.resumable import seeded
from lit_models.datamodules.shards import read_shards
from lit_models.datamodules.sources import mnist5k
from lit_models.datamodules.spec import DataSpec
from lit_models.datamodules.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AutoAugment,
    Preset,
    auto_augment_transform,
    batch_mixing,
    check_augmentation,
    check_probability,
    evaluation_resize,
    normalise_batch,
    training_transform,
    without_normalisation,
)
from lit_models.errors import UsageError


class ImageFileDataset(FileDataset):
    """(path, label) pairs decoded on access into {"image", "label"} samples (errors carried, see FileDataset).

    With ``decode_device="cuda"`` a sample is {"encoded", "label"} instead (``files.read_encoded``: a JPEG's bytes,
    or an image nvJPEG cannot take decoded here), which ``ImageFolderDataModule`` decodes on the GPU and transforms
    there with this dataset's ``transform``.
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        transform: Callable,
        skip_corrupt: bool = False,
        decode_device: DecodeDevice = "cpu",
    ) -> None:
        super().__init__(samples, skip_corrupt)
        self.transform = transform
        self.decode_device = decode_device

    def load(self, sample: tuple[str, int]) -> dict[str, Any]:
        path, label = sample
        if self.decode_device == "cuda":
            return {"encoded": read_encoded(path), "label": label}
        return {"image": self.transform(decode_rgb(path)), "label": label}


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images and labels; a batch holding an undecodable file keeps only the messages. Dense test views (each
    sample a list of images of its own sizes) stay a list, one entry per sample."""
    batch = collate_metadata(samples)
    if not batch["errors"]:
        if "encoded" in samples[0]:  # decode_device "cuda": images of every size, decoded after collation
            batch["encoded"] = [s["encoded"] for s in samples]
            batch["seeds"] = [s.get("seed") for s in samples]  # training samples' own (resumable.SeededSamples)
        else:
            batch["image"] = stack_images([s["image"] for s in samples])
        batch["label"] = torch.tensor([s["label"] for s in samples])
    return batch


def stack_images(images: list) -> torch.Tensor | list:
    """N x ... from N transformed images; dense test views (a list of views of their own sizes each) stay a list."""
    # default_collate stacks a worker's batch straight into shared memory: no copy on its way to the trainer.
    return images if isinstance(images[0], list) else default_collate(images)


def decode_batch(batch: dict[str, Any], transform: Callable, device: torch.device) -> dict[str, Any]:
    """A batch of ``encoded`` images (``decode_device="cuda"``) decoded on ``device`` and each transformed there:
    the batch the workers make with decode_device "cpu"."""
    images = decode_on_device(batch.pop("encoded"), batch["path"], device)
    transformed = []
    for image, seed in zip(images, batch.pop("seeds"), strict=True):
        # A training image draws from its sample's own seed, as the worker's transform would have.
        with contextlib.nullcontext() if seed is None else seeded(seed):
            transformed.append(transform(image))
    batch["image"] = stack_images(transformed)
    return batch


def check_eval_sizes(preset: str, image_size: int, eval_image_size: int | None, eval_resize_size: int | None) -> None:
    """Raise ``ValueError`` for evaluation sizes that cannot serve: not positive, a resize smaller than the crop, or
    a resize under a preset that resizes to the square."""
    for name, side in (("image_size", image_size), ("eval_image_size", eval_image_size)):
        if side is not None and side < 1:
            raise ValueError(f"{name} must be a positive number of pixels, got {side}")
    if eval_resize_size is None:
        return
    if evaluation_resize(preset) != "center_crop":
        raise ValueError(
            f"eval_resize_size {eval_resize_size} needs an evaluation by central crop; preset {preset!r} resizes "
            "evaluation images to the square: leave eval_resize_size out (eval_image_size sets that square)"
        )
    crop = eval_image_size or image_size
    if eval_resize_size < crop:
        raise ValueError(
            f"eval_resize_size {eval_resize_size} is smaller than the evaluation crop {crop}: the shorter side must "
            "be at least the crop (torchvision's V2 weights: 232 for 224)"
        )


class ImageFolderDataModule(FileDataModule):
    """Image classification from an ImageNet-style folder tree, or the embedded MNIST digits.

    ``num_classes`` and ``class_names`` come from the names of ``root/train``'s sub-folders (sorted), read in
    ``__init__``; no image is opened until ``setup``. Batches are dicts: ``image`` N x 3 x S x S, ``label`` N,
    ``path`` (the files, for predictions). A multi-crop test gives ``image`` N x V x 3 x S x S (V views per image), a
    dense one a list of N lists of views 3 x H x W (``test_crops``).

    Training batches leave the loader as uint8 images where the training transform ends in plain normalisation (no
    photometric step, no random erasing: ``transforms.without_normalisation``), and ``on_after_batch_transfer``
    normalises them on the trainer's device: a loop of your own that reads ``train_dataloader()`` calls
    ``data.on_after_batch_transfer(batch, 0)`` for the float images the model takes.
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
        auto_augment: AutoAugment = "none",
        random_erasing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        eval_image_size: int | None = None,
        eval_resize_size: int | None = None,
        decode_device: DecodeDevice = "cpu",
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
            auto_augment: Automatic augmentation in training, on the image after the preset's geometry (torchvision's
                ``--auto-augment``): "randaugment" (2 operations of magnitude 9), "trivialaugment"
                (TrivialAugmentWide), "autoaugment" (the ImageNet policy) or "none".
            random_erasing: Probability of erasing a random rectangle of a normalised training image (torchvision's
                ``--random-erase``; its recent recipes use 0.1).
            mixup_alpha: MixUp of training batches with a mixing weight drawn from Beta(alpha, alpha) (torchvision's
                ``--mixup-alpha``; 0.2 in its recent recipes); 0: none. Labels become class probabilities.
            cutmix_alpha: CutMix of training batches, Beta(alpha, alpha) (``--cutmix-alpha``; 1.0 in torchvision's
                recipes); 0: none. With both alphas set, each batch gets one of the two at random.
            eval_image_size: Side of the square evaluation input (validation, test, prediction, export) where it
                differs from the training crop ``image_size``: train small, test large (Touvron et al. 2019, FixRes;
                torchvision's ResNet-50 V2 weights train at 176 and test at 224). None: image_size.
            eval_resize_size: The shorter side an evaluation image is resized to before its central crop (232 for
                torchvision's 224 V2 weights); None: the eval side x 256/224. Not for the "small" preset, which
                resizes to the square.
            decode_device: Where JPEGs are decoded: "cpu" (libjpeg-turbo, in the DataLoader workers) or "cuda"
                (nvJPEG on the trainer's GPU: the workers only read the files, the transforms run on the GPU;
                docs/data.md, "Speed"). Other formats are decoded in the workers either way.
        """
        super().__init__()
        self.save_hyperparameters()
        check_fractions(val_fraction)
        check_augmentation(preset, shorter_side, lighting)
        check_test_protocol(test_crops, test_scales)
        auto_augment_transform(auto_augment)  # an unknown policy fails here, before any work
        check_probability("random_erasing", random_erasing)
        check_eval_sizes(preset, image_size, eval_image_size, eval_resize_size)
        check_decode_device(decode_device)
        self.decode_device = decode_device
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
            self.shards = read_shards(self.root, "classification")
            self.class_names = self.shards.class_names if self.shards else list_class_folders(self.root / "train")
        self.num_classes = len(self.class_names)
        self.collate_fn = collate_samples
        self.batch_mix = batch_mixing(self.num_classes, mixup_alpha, cutmix_alpha)

    def prepare_data(self) -> None:
        if self.embedded and not self.predict_only:
            mnist5k.export_mnist5k(self.root)

    @property
    def spec(self) -> DataSpec:
        """The evaluation input (``eval_image_size``, else the training crop) and its resize rule."""
        hp = self.hparams
        spec = self.image_spec("classification", hp.eval_image_size or hp.image_size, evaluation_resize(hp.preset))
        return dataclasses.replace(spec, resize_size=hp.eval_resize_size)

    def transform(self, train: bool) -> Callable:
        """The training transform as the workers run it (its normalisation left to the device where it can be,
        ``on_after_batch_transfer``), or the evaluation one (``spec.preprocess()``)."""
        if not train:
            return self.spec.preprocess()
        hp = self.hparams
        augmentation = training_transform(
            hp.preset,
            hp.image_size,
            hflip=hp.hflip,
            lighting=hp.lighting,
            rotation=hp.rotation,
            scale_jitter=hp.scale_jitter,
            shorter_side=tuple(hp.shorter_side) if hp.shorter_side else None,
            mean=tuple(hp.mean),
            std=tuple(hp.std),
            auto_augment=hp.auto_augment,
            random_erasing=hp.random_erasing,
        )
        return without_normalisation(augmentation)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the device, after the decode errors were raised: uint8 training images normalised
        (``transforms.normalise_batch``, the steps the workers left out), then MixUp / CutMix (``mixup_alpha``,
        ``cutmix_alpha``) of training batches, ``label`` becoming N x num_classes class probabilities."""
        images = batch.get("image")
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
            batch["image"] = normalise_batch(images, self.hparams.mean, self.hparams.std)
        if self.batch_mix is not None and self.trainer is not None and self.trainer.training:
            batch["image"], batch["label"] = self.batch_mix(batch["image"], batch["label"])
        return batch

    def test_transform(self) -> Callable:
        """The views of the test protocol (``test_crops`` at ``test_scales``); the evaluation transform for the
        single centre crop at the preset's own scale."""
        hp = self.hparams
        if hp.test_crops == 1 and hp.test_scales is None:
            return self.transform(train=False)
        return ProtocolViews(hp.test_crops, hp.test_scales, self.spec.image_size, hp.mean, hp.std)

    def setup(self, stage: str) -> None:
        if self.datasets:
            return
        skip = self.hparams.skip_corrupt
        if stage == "predict" and self.hparams.predict_dir:  # only the images asked for: no split is read
            _, files = list_predict_images(self.hparams.predict_dir)
            self.datasets["predict"] = self.dataset([(f, -1) for f in files], self.transform(train=False))
            return
        if self.shards is not None:  # prepared shards: each split decoded as its files are, with its transform
            self.datasets = self.shards.datasets(lambda split: ImageFileDataset([], self.split_transform(split), skip))
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
        self.datasets["train"] = self.dataset(train, self.transform(train=True))
        self.datasets["val"] = self.dataset(val, self.transform(train=False))
        test = list_labelled_images(self.root / "test", self.class_names) if (self.root / "test").is_dir() else None
        if test is not None:
            self.datasets["test"] = self.dataset(test, self.test_transform())
        predict_dir = self.hparams.predict_dir
        if predict_dir:
            _, files = list_predict_images(predict_dir)
            self.datasets["predict"] = self.dataset([(f, -1) for f in files], self.transform(train=False))
        else:  # one evaluation view per image, whatever the test protocol
            self.datasets["predict"] = self.dataset(val if test is None else test, self.transform(False))

    def split_transform(self, split: str) -> Callable:
        """The transform of a split: training's, the test protocol's, or the evaluation one (val, predict)."""
        return self.test_transform() if split == "test" else self.transform(train=split == "train")

    def dataset(self, samples: list[tuple[str, int]], transform: Callable) -> ImageFileDataset:
        """A split's dataset of files, decoded where ``decode_device`` says."""
        return ImageFileDataset(samples, transform, self.hparams.skip_corrupt, self.decode_device)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Decode errors raised (``FileDataModule``); with ``decode_device="cuda"``, the JPEGs decoded on the
        trainer's GPU, here in the main process before the transfer as nvJPEG reads its input from host memory, and
        the split's transform applied there."""
        batch = super().on_before_batch_transfer(batch, dataloader_idx)
        if "encoded" not in batch:
            return batch
        device = self.trainer.strategy.root_device
        if device.type != "cuda":
            raise UsageError(
                f"data.decode_device 'cuda' decodes on the trainer's GPU, but this trainer runs on {device}: train "
                "on a GPU (--trainer.accelerator gpu), or leave decode_device at 'cpu'."
            )
        return decode_batch(batch, self.read_split().transform, device)

    def read_split(self) -> ImageFileDataset:
        """The dataset the trainer is reading: train, test, predict, else (validation, sanity check) val."""
        stage = self.trainer.state.stage.value  # "train", "sanity_check", "validate", "test" or "predict"
        return self.datasets[stage if stage in ("train", "test", "predict") else "val"]

    def check(self) -> list[str]:
        """``FileDataModule.check``, every file decoded on the CPU whatever ``decode_device``: a run on the GPU hands
        the files nvJPEG refuses to the CPU decoder, so what it cannot read is what the CPU cannot."""
        device, self.decode_device = self.decode_device, "cpu"
        try:
            return super().check()
        finally:  # the datasets stay set up (``lit-models check`` counts them), decoding as a run asks again
            self.decode_device = device
            for dataset in self.datasets.values():
                if isinstance(dataset, ImageFileDataset):
                    dataset.decode_device = device

    @classmethod
    def prediction_arguments(cls, inputs: Any) -> dict[str, Any]:
        """``FileDataModule``'s, decoding on the CPU: a checkpoint of a run that decoded on the GPU predicts on a
        machine without one."""
        return {**super().prediction_arguments(inputs), "decode_device": "cpu"}

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
