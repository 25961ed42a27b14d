"""Image presets shared by the image DataModules (torchvision transforms v2)."""

from __future__ import annotations

from typing import Literal

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Preset = Literal["imagenet", "small"]

# Principal components of ImageNet's RGB pixel values (in [0, 1]), as used for AlexNet's lighting noise.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


class PCALighting(torch.nn.Module):
    """AlexNet's "fancy PCA" colour augmentation (Krizhevsky et al. 2012, §4.1).

    Adds ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, std) drawn once per image: the intensity
    and colour of the illumination change, the object's identity does not. Input: 3 x H x W floats in [0, 1].
    """

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std
        self.register_buffer("eigval", torch.tensor(IMAGENET_EIGVAL))
        self.register_buffer("eigvec", torch.tensor(IMAGENET_EIGVEC))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        shift = self.eigvec @ (alpha * self.eigval)  # 3
        return image + shift.view(3, 1, 1)


def classification_transform(
    preset: Preset,
    image_size: int,
    train: bool,
    hflip: bool = True,
    lighting: float = 0.0,
    rotation: float = 0.0,
    scale_jitter: float = 0.0,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    crops: int = 1,
) -> v2.Compose:
    """PIL image -> normalised float tensor 3 x image_size x image_size (crops x 3 x image_size x image_size with
    ``crops=10`` in evaluation: torchvision's TenCrop of the resized image, the four corners and the centre and
    their mirror images, AlexNet's and ResNet's test protocol).

    "imagenet": train = random-resized-crop (scale 0.08-1, Szegedy et al. 2015) + flip; eval = resize to
    image_size * 256/224 then centre-crop (the 256 -> 224 single-crop protocol of torchvision's published numbers).
    "small" (32x32-class images): train = resize, pad-4/32 random crop + flip (He et al. 2016 §4.2);
    eval = resize only; ``rotation`` (degrees) and ``scale_jitter`` add a random affine warp in training, the
    classic augmentation for handwriting. ``lighting`` > 0 adds AlexNet's PCA lighting noise with that standard
    deviation (any preset).
    """
    if preset not in ("imagenet", "small"):
        raise ValueError(f"preset must be 'imagenet' or 'small', got {preset!r}")
    if not train and crops == 1:
        return evaluation_transform("center_crop" if preset == "imagenet" else "resize", image_size, mean, std)
    if preset == "imagenet":
        if train:
            geometry = [v2.RandomResizedCrop(image_size, antialias=True)]
        else:
            geometry = [v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]
    else:
        geometry = [v2.Resize((image_size, image_size), antialias=True)]
        if train:
            geometry.append(v2.RandomCrop(image_size, padding=max(1, image_size // 8)))
            if rotation or scale_jitter:
                geometry.append(v2.RandomAffine(rotation, scale=(1 - scale_jitter, 1 + scale_jitter)))
    if train and hflip:
        geometry.append(v2.RandomHorizontalFlip())
    photometric = [PCALighting(lighting)] if train and lighting > 0 else []
    if crops not in (1, 10):
        raise ValueError(f"test crops must be 1 or 10, got {crops}")
    multi_crop = []
    if crops == 10 and not train:  # resize only, then the ten crops of it
        geometry = [geometry[0] if preset == "imagenet" else v2.Resize(round(image_size * 256 / 224), antialias=True)]
        multi_crop = [v2.TenCrop(image_size), StackCrops()]
    return v2.Compose(
        [v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), *photometric, v2.Normalize(mean, std),
         *multi_crop]
    )  # fmt: skip


def evaluation_transform(
    resize: str, image_size: int | None, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
) -> v2.Compose:
    """PIL image or C x H x W uint8 -> the normalised float image an evaluation batch holds (one crop).

    ``resize``: "center_crop" (shorter side to image_size x 256/224, then the central square: the single-crop
    protocol of torchvision's published numbers), "resize" (to image_size x image_size), "keep" (own size).
    """
    if resize not in ("center_crop", "resize", "keep"):
        raise ValueError(f"resize must be 'center_crop', 'resize' or 'keep', got {resize!r}")
    geometry: list[v2.Transform] = []
    if resize == "center_crop":
        geometry = [v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]
    elif resize == "resize" and image_size:
        geometry = [v2.Resize((image_size, image_size), antialias=True)]
    normalise = [v2.Normalize(mean, std)] if mean is not None and std is not None else []
    return v2.Compose([v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), *normalise])


class StackCrops(torch.nn.Module):
    """TenCrop's tuple of crops -> one tensor crops x 3 x H x W."""

    def forward(self, crops: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.stack([crop.as_subclass(torch.Tensor) for crop in crops])


def segmentation_transform(
    crop_size: int | None,
    base_size: int | None,
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> v2.Compose:
    """Joint training transform of (tv_tensors.Image uint8, tv_tensors.Mask) -> (normalised float image, mask).

    Geometry applies to both with the same random parameters; masks are always resized with nearest neighbour
    (torchvision's Mask kernels), so no pixel gets a class that is a blend of two: rescale so the longer side is
    base_size x s (s uniform in scale_range; torchvision's ScaleJitter), a random crop_size crop (padded with the
    mean colour and void where the image is smaller), horizontal flip. Evaluation takes the whole image
    (``evaluation_transform("keep", ...)``).
    """
    geometry: list[v2.Transform] = []
    if base_size:
        geometry.append(v2.ScaleJitter((base_size, base_size), scale_range, antialias=True))
    if crop_size:
        mean_pixel = tuple(round(255 * m) for m in mean)
        fill = {tv_tensors.Image: mean_pixel, tv_tensors.Mask: 255}
        geometry.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
    if hflip:
        geometry.append(v2.RandomHorizontalFlip())
    to_float = v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)
    return v2.Compose([*geometry, to_float, v2.Normalize(mean, std)])
