"""Semantic segmentation data: the PASCAL VOC layout, plain image/mask folder pairs, or the embedded shapes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors

from lit_models.datamodules.base import (
    AnnotatedImagesDataModule,
    FileDataset,
    check_fractions,
    collate_metadata,
    default_cache_dir,
)
from lit_models.datamodules.files import IMAGE_EXTENSIONS, DataError, decode_rgb, list_images, readable, report
from lit_models.datamodules.shards import read_shards
from lit_models.datamodules.sources import shapes
from lit_models.datamodules.spec import DataSpec
from lit_models.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, segmentation_transform
from lit_models.datamodules.voc_layout import VOC_CLASS_NAMES, read_class_names, read_voc_list

IGNORE_INDEX = 255  # VOC's "void": object borders and unlabelled pixels, excluded from loss and metrics
Layout = Literal["auto", "voc", "folders"]
# A sample: (image file, mask file or None for prediction, name used for output files).
Sample = tuple[str, str | None, str]


def load_mask(path: str, num_classes: int) -> np.ndarray:
    """H x W uint8 class indices from a palette (P), grayscale (L) or binary (1) PNG, checked against the classes."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            values = np.array(image, dtype=np.uint8) if mode in ("P", "L", "1") else None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot decode mask {path}: {error}. Replace or delete the file.") from error
    if values is None:
        raise DataError(
            f"mask {path} is a mode-{mode} image, not class indices. Masks must be palette PNGs (mode P, as VOC's "
            "SegmentationClass) or grayscale PNGs (mode L) whose pixel values are class indices, 255 for void; "
            "convert colour-coded masks to indices first."
        )
    bad = np.unique(values[(values >= num_classes) & (values != IGNORE_INDEX)])
    if bad.size:
        raise DataError(
            f"mask {path} holds values {bad[:8].tolist()} outside 0..{num_classes - 1} and {IGNORE_INDEX} (void); "
            f"the data has {num_classes} classes. Fix the mask, or give data.class_names with every class."
        )
    return values


class SegmentationDataset(FileDataset):
    """(image, mask, name) samples decoded on access into {"image", "mask", "name"} (no mask to predict)."""

    def __init__(self, samples: list[Sample], transform: Callable, num_classes: int, skip_corrupt: bool) -> None:
        super().__init__(samples, skip_corrupt)
        self.transform = transform
        self.num_classes = num_classes

    def load(self, sample: Sample) -> dict[str, Any]:
        image_path, mask_path, name = sample
        image = tv_tensors.Image(decode_rgb(image_path))
        item: dict[str, Any] = {"name": name}
        if mask_path is None:
            item["image"] = self.transform(image)
            return item
        mask = load_mask(mask_path, self.num_classes)
        height, width = image.shape[-2:]
        if mask.shape != (height, width):
            raise DataError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} pixels but its image {image_path} is "
                f"{width}x{height}; a mask must label every pixel of its image."
            )
        item["image"], mask = self.transform(image, tv_tensors.Mask(torch.from_numpy(mask)))
        item["mask"] = mask.as_subclass(torch.Tensor).long()
        return item


def pad_to(tensor: torch.Tensor, height: int, width: int, value: float) -> torch.Tensor:
    """Pad the last two dimensions at the bottom and right."""
    return F.pad(tensor, (0, width - tensor.shape[-1], 0, height - tensor.shape[-2]), value=value)


def collate_segmentation(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (padded with 0, the normalised mean) and masks (padded with void) to the batch's largest size.

    Training crops all have one size, so padding only happens for full-size evaluation batches; ``size`` keeps
    each image's own height and width so predictions are cropped back.
    """
    batch = collate_metadata(samples)
    if batch["errors"]:
        return batch
    height = max(s["image"].shape[-2] for s in samples)
    width = max(s["image"].shape[-1] for s in samples)
    batch["image"] = torch.stack([pad_to(s["image"], height, width, 0.0) for s in samples])
    if "mask" in samples[0]:
        batch["mask"] = torch.stack([pad_to(s["mask"], height, width, IGNORE_INDEX) for s in samples])
    batch["size"] = [tuple(s["image"].shape[-2:]) for s in samples]
    batch["name"] = [s["name"] for s in samples]
    return batch


def detect_layout(root: Path) -> Literal["voc", "folders"]:
    if (root / "ImageSets" / "Segmentation").is_dir():
        return "voc"
    if (root / "train" / "images").is_dir():
        return "folders"
    hint = ""
    nested = sorted(p.parent for p in root.glob("*/ImageSets/Segmentation")) + sorted(
        p.parent for p in root.glob("*/*/ImageSets/Segmentation")
    )
    if nested:
        hint = f" (a VOC tree is at {nested[0].parent}: pass that folder as data.root)"
    raise DataError(
        f"{root} is neither a VOC layout (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/train.txt) "
        f"nor image/mask folder pairs (train/images/, train/masks/, val/...){hint}."
    )


def voc_split(root: Path, split: str, with_masks: bool) -> list[Sample] | None:
    """The samples named in ImageSets/Segmentation/<split>.txt, each file checked to exist; None without a list."""
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    return read_voc_list(root, listing, "SegmentationClass", ".png", with_masks)


def folder_split(root: Path, split: str, with_masks: bool) -> list[Sample] | None:
    """root/<split>/images/* paired with root/<split>/masks/<same relative path>.png; None without the folder. An
    image without its mask is reported (``files.report``): while ``check()`` lists problems, it is left out."""
    images_dir = root / split / "images"
    if not images_dir.is_dir():
        return None
    images = list_images(images_dir)
    if not images:
        report(DataError(f"{images_dir} holds no image files ({', '.join(IMAGE_EXTENSIONS)})."))

    def sample(image: str) -> Sample:
        name = str(Path(image).relative_to(images_dir).with_suffix(""))
        mask = root / split / "masks" / f"{name}.png"
        if with_masks and not mask.is_file():
            raise DataError(f"image {image} has no mask: {mask} does not exist. Add the mask or remove the image.")
        return image, str(mask) if with_masks else None, name

    return readable(images, sample)


class SegmentationDataModule(AnnotatedImagesDataModule):
    """Images with per-pixel class masks (255 = void), from a VOC-layout folder, folder pairs or the shapes.

    ``num_classes`` and ``class_names`` are known after ``__init__``. Batches are dicts: ``image`` N x 3 x H x W,
    ``mask`` N x H x W (int64, 255 where void or padding), ``size`` (each image's own H, W), ``name`` and
    ``path``. Training takes random rescaled crops; evaluation takes whole images (batches padded).
    """

    def __init__(
        self,
        root: str | None = None,
        layout: Layout = "auto",
        class_names: list[str] | None = None,
        crop_size: int | None = 320,
        base_size: int | None = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        hflip: bool = True,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        batch_size: int = 8,
        eval_batch_size: int | None = 1,
        num_workers: int = 2,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        skip_corrupt: bool = False,
        predict_dir: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        """Configure the data.

        Args:
            root: A PASCAL VOC folder (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/{train,val,test}.txt,
                e.g. VOCdevkit/VOC2012) or folder pairs (<split>/images/*, <split>/masks/<same name>.png for
                split train, val, test). None uses the embedded shapes scenes (generated once into ``cache_dir``).
            layout: "voc", "folders", or "auto" (recognise either).
            class_names: Class names, index 0 first (default: root/class_names.txt, else VOC's 21 classes for a
                VOC layout).
            crop_size: Side of the random training crop; images smaller than it are padded (void in the mask).
                None trains on whole images (use batch_size 1, as the FCN paper).
            base_size: Training rescale: each image is resized so its longer side is base_size x s, s drawn from
                scale_range (torchvision's ScaleJitter). None: no rescaling.
            scale_range: Range of that random scale s.
            hflip: Random horizontal flips in training.
            mean: Per-channel normalisation mean (ImageNet's by default).
            std: Per-channel normalisation standard deviation.
            batch_size: Training batch size per device.
            eval_batch_size: Validation/test/predict batch size per device (images of a batch are padded to one
                size; default 1).
            num_workers: DataLoader worker processes per device.
            val_fraction: Share of train held out for validation when the data has no val split.
            split_seed: Seed of that held-out split.
            skip_corrupt: Replace unreadable samples with the next readable one and log them, instead of stopping.
            predict_dir: Folder of images (any depth) for ``predict``; default: the test split, else val.
            cache_dir: Where the embedded shapes are generated (default $LIT_MODELS_CACHE or ~/.cache/lit_models).
        """
        super().__init__()
        self.save_hyperparameters()
        check_fractions(val_fraction, scale_range)
        self.embedded = root is None
        if self.embedded:
            self.root = (Path(cache_dir) if cache_dir else default_cache_dir()) / "shapes"
            self.layout = "voc"
            self.class_names = list(class_names or shapes.CLASS_NAMES)
        else:
            self.root = Path(root).expanduser()
            if not self.root.is_dir():
                raise DataError(
                    f"data root {self.root} does not exist or is not a folder. Pass --data.root a VOC folder "
                    "(JPEGImages/, SegmentationClass/, ImageSets/Segmentation/) or image/mask folder pairs "
                    "(<split>/images/, <split>/masks/), or leave it out for the embedded shapes."
                )
            self.shards = read_shards(self.root, "segmentation", class_names)
            if self.shards is not None:  # prepared shards: no layout to recognise, their class names
                self.layout, self.class_names = layout, self.shards.class_names
            else:
                self.layout = detect_layout(self.root) if layout == "auto" else layout
                default = VOC_CLASS_NAMES if self.layout == "voc" else None
                self.class_names = read_class_names(self.root, class_names, default)
        if len(self.class_names) > IGNORE_INDEX:
            raise DataError(f"{len(self.class_names)} classes: mask values 0..254 hold at most 255 classes.")
        self.num_classes = len(self.class_names)
        self.collate_fn = collate_segmentation

    @property
    def spec(self) -> DataSpec:
        # Evaluation reads whole images; the training crop is the typical input (for export and summaries).
        return self.image_spec("segmentation", self.hparams.crop_size, "keep")

    def transform(self, train: bool) -> Callable:
        """The joint training transform of image and mask, or the evaluation one (``spec.preprocess()``)."""
        if not train:
            return self.spec.preprocess()
        hp = self.hparams
        return segmentation_transform(
            hp.crop_size, hp.base_size, tuple(hp.scale_range), hp.hflip, tuple(hp.mean), tuple(hp.std)
        )

    def split_location(self, split: str) -> Path:
        if self.layout == "voc":
            return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        return self.root / split / "images"

    def list_split(self, split: str, annotated: bool = True) -> list[Sample] | None:
        if self.layout == "voc":
            return voc_split(self.root, split, annotated)
        return folder_split(self.root, split, annotated)

    def dataset(self, samples: list[Sample], train: bool = False) -> SegmentationDataset:
        return SegmentationDataset(samples, self.transform(train), self.num_classes, self.hparams.skip_corrupt)
