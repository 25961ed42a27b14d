"""Image presets shared by the image DataModules (torchvision transforms v2)."""

from __future__ import annotations

from typing import Literal

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Preset = Literal["imagenet", "small"]


def classification_transform(
    preset: Preset,
    image_size: int,
    train: bool,
    hflip: bool = True,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> v2.Compose:
    """PIL image -> normalised float tensor 3 x image_size x image_size.

    "imagenet": train = random-resized-crop (scale 0.08-1, Szegedy et al. 2015) + flip; eval = resize to
    image_size * 256/224 then centre-crop (the 256 -> 224 single-crop protocol of torchvision's published numbers).
    "small" (32x32-class images): train = resize, pad-4/32 random crop + flip (He et al. 2016 §4.2);
    eval = resize only.
    """
    if preset not in ("imagenet", "small"):
        raise ValueError(f"preset must be 'imagenet' or 'small', got {preset!r}")
    if preset == "imagenet":
        if train:
            geometry = [v2.RandomResizedCrop(image_size, antialias=True)]
        else:
            geometry = [v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]
    else:
        geometry = [v2.Resize((image_size, image_size), antialias=True)]
        if train:
            geometry.append(v2.RandomCrop(image_size, padding=max(1, image_size // 8)))
    if train and hflip:
        geometry.append(v2.RandomHorizontalFlip())
    return v2.Compose(
        [v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=mean, std=std)]
    )
