"""Image presets shared by the image DataModules (torchvision transforms v2)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Preset = Literal["imagenet", "small", "alexnet", "vgg", "resnet", "googlenet"]
AutoAugment = Literal["none", "randaugment", "trivialaugment", "autoaugment"]

# What each preset does in training, with the paper section that specifies it (error messages and docs list these).
# Sizes are the papers', for a 224 crop: they scale with image_size (S in [256, 512] becomes [256, 512] / 224 x
# image_size), so the same preset serves 28-px digits and 224-px photographs.
PRESETS: dict[str, str] = {
    "imagenet": "random-resized crop (8-100 % of the area, aspect 3/4-4/3) + flip: torchvision's reference recipe",
    "small": "resize to image_size, pad by 1/8 and random crop + flip (He et al. 2016 §4.2, CIFAR-10)",
    "alexnet": "shorter side 256, central 256 square, random 224 crop + flip, PCA lighting 0.1 "
    "(Krizhevsky et al. 2012 §2, §4.1)",
    "vgg": "scale jittering: shorter side S uniform in [256, 512], random 224 crop + flip, PCA lighting 0.1 "
    "(Simonyan & Zisserman 2015 §3.1)",
    "resnet": "scale augmentation: shorter side uniform in [256, 480], random 224 crop + flip, PCA lighting 0.1 "
    "(He et al. 2016 §3.4)",
    "googlenet": "random-resized crop (8-100 % of the area, aspect 3/4-4/3) + flip, Howard's photometric distortions "
    "(brightness, contrast, saturation x U(0.5, 1.5) in random order), PCA lighting 0.1 (Szegedy et al. 2015 §6)",
}
# The training shorter side S of the presets that rescale before a random crop, in the papers' pixels (224 crop).
SHORTER_SIDE: dict[str, tuple[int, int]] = {"alexnet": (256, 256), "vgg": (256, 512), "resnet": (256, 480)}
# AlexNet's PCA lighting noise (alphastd 0.1), reused by VGG ("random RGB colour shift"), ResNet ("the standard colour
# augmentation of [AlexNet]") and Howard 2013 (after his colour manipulations).
LIGHTING: dict[str, float] = {"alexnet": 0.1, "vgg": 0.1, "resnet": 0.1, "googlenet": 0.1}
# Howard 2013 §2.1: PIL's brightness, contrast and colour enhancements, each by a factor uniform in [0.5, 1.5], in a
# random order: torchvision's ColorJitter draws and orders its factors the same way.
PHOTOMETRIC: dict[str, float] = {"googlenet": 0.5}

# Principal components of ImageNet's RGB pixel values (in [0, 1]), as used for AlexNet's lighting noise; the columns
# of IMAGENET_EIGVEC are the eigenvectors, the first (grey) has the largest eigenvalue.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


class PCALighting(v2.Transform):
    """AlexNet's "fancy PCA" colour augmentation (Krizhevsky et al. 2012, §4.1).

    Adds ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, std) drawn once per image: the intensity
    and colour of the illumination change along the principal components of natural images' colours, the
    object's identity does not. Input: a 3 x H x W float image in [0, 1] (after ``ToDtype(float32, scale=True)``);
    values are not clipped, as in the paper. Other inputs of a sample (labels, masks, boxes) pass through.

    Args:
        std: Standard deviation of alpha (the paper's 0.1).
        eigval: Eigenvalues of the RGB covariance (ImageNet's by default).
        eigvec: Eigenvectors, one per column, in the order of ``eigval``.
    """

    _transformed_types = (tv_tensors.Image, F.is_pure_tensor)

    def __init__(
        self,
        std: float = 0.1,
        eigval: tuple[float, float, float] = IMAGENET_EIGVAL,
        eigvec: tuple[tuple[float, float, float], ...] = IMAGENET_EIGVEC,
    ) -> None:
        super().__init__()
        if std < 0:
            raise ValueError(f"PCA lighting std must be >= 0 (0.1 in the paper), got {std}")
        self.std = std
        self.register_buffer("eigval", torch.tensor(eigval, dtype=torch.float32))
        self.register_buffer("eigvec", torch.tensor(eigvec, dtype=torch.float32))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        alpha = torch.randn(3) * self.std
        return {"shift": self.eigvec @ (alpha * self.eigval)}  # 3: one RGB offset for the whole image

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not inpt.is_floating_point() or inpt.shape[-3] != 3:
            raise TypeError(
                f"PCA lighting needs a 3-channel float image in [0, 1], got {inpt.dtype} of shape "
                f"{tuple(inpt.shape)}: put it after v2.ToDtype(torch.float32, scale=True)"
            )
        shifted = inpt + params["shift"].to(inpt).view(3, 1, 1)
        return tv_tensors.wrap(shifted, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else shifted


class CentralSquare(v2.Transform):
    """The central min(H, W) square of an image (AlexNet §2: "cropped out the central 256x256 patch")."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"size": [min(v2.query_size(flat_inputs))] * 2}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.center_crop, inpt, params["size"])


def check_augmentation(preset: str, shorter_side: tuple[int, int] | None = None, lighting: float | None = None) -> None:
    """Raise ``ValueError`` for an unknown preset, a ``shorter_side`` the preset cannot take, a negative lighting."""
    if lighting is not None and lighting < 0:
        raise ValueError(f"lighting is the std of PCA lighting noise: >= 0 (0.1 in AlexNet's §4.1), got {lighting}")
    if preset not in PRESETS:
        listing = "\n".join(f"  {name}: {what}" for name, what in PRESETS.items())
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of:\n{listing}")
    if shorter_side is None:
        return
    if preset not in SHORTER_SIDE:
        raise ValueError(
            f"shorter_side {list(shorter_side)} applies to the presets that rescale before a random crop "
            f"({', '.join(SHORTER_SIDE)}); preset {preset!r} does not: leave shorter_side out"
        )
    low, high = shorter_side
    if not 224 <= low <= high:
        raise ValueError(
            f"shorter_side {list(shorter_side)} must be [low, high] with 224 <= low <= high, in the papers' pixels "
            "for a 224 crop (VGG's jittering: [256, 512]; a fixed scale: [256, 256])"
        )


def auto_augment_transform(policy: AutoAugment) -> list[v2.Transform]:
    """The automatic augmentation policy of torchvision's reference recipes (``presets.py``), on uint8 images:
    RandAugment (Cubuk et al. 2020; 2 operations of magnitude 9 of 31), TrivialAugmentWide (Müller & Hutter 2021),
    AutoAugment's ImageNet policy (Cubuk et al. 2019); "none": no transform."""
    interpolation = v2.InterpolationMode.BILINEAR  # torchvision's reference default
    policies = {
        "none": [],
        "randaugment": [v2.RandAugment(interpolation=interpolation, magnitude=9)],
        "trivialaugment": [v2.TrivialAugmentWide(interpolation=interpolation)],
        "autoaugment": [v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=interpolation)],
    }
    if policy not in policies:
        raise ValueError(f"auto_augment must be one of {', '.join(policies)}, got {policy!r}")
    return policies[policy]


def check_probability(name: str, value: float) -> None:
    """Raise ``ValueError`` for a probability outside [0, 1], naming the argument."""
    if not 0 <= value <= 1:
        raise ValueError(f"{name} is a probability: in [0, 1] (torchvision's recipes use 0.1), got {value}")


def evaluation_resize(preset: str) -> str:
    """The preset's evaluation resize rule (``DataSpec.resize``): "resize" for "small", else the 256 -> 224
    centre crop."""
    check_augmentation(preset)
    return "resize" if preset == "small" else "center_crop"


def scaled(side: int, image_size: int) -> int:
    """A side of the papers' 224-pixel crops, at this image_size."""
    return round(side * image_size / 224)


def training_transform(
    preset: Preset,
    image_size: int,
    hflip: bool = True,
    lighting: float | None = None,
    rotation: float = 0.0,
    scale_jitter: float = 0.0,
    shorter_side: tuple[int, int] | None = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    auto_augment: AutoAugment = "none",
    random_erasing: float = 0.0,
) -> v2.Compose:
    """PIL image -> normalised float tensor 3 x image_size x image_size, augmented by ``preset`` (``PRESETS``), then
    as torchvision's reference ``presets.py`` orders its options: ``auto_augment`` on the uint8 image after the
    geometry, ``random_erasing`` on the normalised one.

    Args:
        preset: The training augmentation, a key of ``PRESETS``.
        image_size: Side of the square crop; the papers' sizes (for a 224 crop) are scaled by image_size / 224.
        hflip: Random horizontal flips (turn off for digits and text).
        lighting: PCA lighting std; None takes the preset's (0.1 for alexnet, vgg, resnet, googlenet; else off).
        rotation: Random rotation up to this many degrees either way (any preset).
        scale_jitter: Random rescaling by up to this fraction around the crop's centre (any preset).
        shorter_side: alexnet, vgg, resnet: the shorter side S before the random crop, [low, high] in the papers'
            pixels (uniform in the range: scale jittering); None takes the preset's (``SHORTER_SIDE``).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        auto_augment: "randaugment", "trivialaugment", "autoaugment" (``auto_augment_transform``) or "none".
        random_erasing: Probability of erasing a random rectangle (Zhong et al. 2020, torchvision's RandomErasing).
    """
    check_augmentation(preset, shorter_side, lighting)
    check_probability("random_erasing", random_erasing)
    policy = auto_augment_transform(auto_augment)
    if preset in ("imagenet", "googlenet"):
        geometry = [v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True)]
    elif preset == "small":
        geometry = [v2.Resize((image_size, image_size), antialias=True)]
        geometry.append(v2.RandomCrop(image_size, padding=max(1, image_size // 8)))
    else:
        low, high = (scaled(side, image_size) for side in shorter_side or SHORTER_SIDE[preset])
        # AlexNet crops the image to its central square first: its crops never reach the longer side's ends.
        geometry = [CentralSquare()] if preset == "alexnet" else []
        geometry += [v2.RandomResize(low, high + 1, antialias=True), v2.RandomCrop(image_size)]  # S in [low, high]
    if rotation or scale_jitter:
        geometry.append(v2.RandomAffine(rotation, scale=(1 - scale_jitter, 1 + scale_jitter)))
    if hflip:
        geometry.append(v2.RandomHorizontalFlip())
    photometric: list[v2.Transform] = []
    if preset in PHOTOMETRIC:
        strength = PHOTOMETRIC[preset]
        photometric.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    lighting = LIGHTING.get(preset, 0.0) if lighting is None else lighting
    if lighting > 0:
        photometric.append(PCALighting(lighting))
    erasing = [v2.RandomErasing(random_erasing)] if random_erasing > 0 else []
    return v2.Compose(
        [
            v2.ToImage(),
            *geometry,
            *policy,
            v2.ToDtype(torch.float32, scale=True),
            *photometric,
            v2.Normalize(mean, std),
            *erasing,
        ]
    )


def without_normalisation(transform: v2.Compose) -> v2.Compose:
    """``transform`` without its last two steps where they are ``ToDtype(float32, scale=True)`` and ``Normalize``, so
    its images stay uint8 and :func:`normalise_batch` does those two steps on the batch, on the device; else
    ``transform`` itself (a photometric step or random erasing works on each float image before or after Normalize).

    A uint8 batch is a quarter of the float one's bytes through the workers' shared memory and to the GPU, and the
    GPU normalises it in a fraction of a millisecond (timm's ``PrefetchLoader``, FFCV and DALI do the same).
    """
    steps = transform.transforms
    ends_in_normalisation = (
        len(steps) >= 2
        and isinstance(steps[-2], v2.ToDtype)
        and steps[-2].dtype == torch.float32
        and steps[-2].scale
        and isinstance(steps[-1], v2.Normalize)
    )
    return v2.Compose(steps[:-2]) if ends_in_normalisation else transform


def normalise_batch(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """N x C x H x W uint8 -> the normalised float32 images, where they are: the two steps
    :func:`without_normalisation` leaves out, (x / 255 - mean) / std, as one multiply-add from the uint8 images
    (equal to those steps to float rounding; a third of their time on the CPU)."""
    shape = (1, -1, 1, 1)
    scale = torch.tensor(std, device=images.device).mul(255).reciprocal().view(shape)
    shift = torch.tensor(mean, device=images.device).div(torch.tensor(std, device=images.device)).neg().view(shape)
    return torch.addcmul(shift, images, scale)


def batch_mixing(num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> v2.Transform | None:
    """MixUp (Zhang et al. 2018) and/or CutMix (Yun et al. 2019) of a training batch, one of the two chosen at
    random for each batch where both are on, as torchvision's reference ``train.py`` does; None where both alphas
    are 0. Called on (images N x 3 x H x W, labels N), it returns the mixed images and soft labels N x num_classes
    (each row sums to 1)."""
    for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if alpha < 0:
            raise ValueError(f"{name} is a Beta distribution's alpha: > 0 to mix, 0 for none; got {alpha}")
    mixes = [v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []
    mixes += [v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else []
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


def classification_transform(
    preset: Preset,
    image_size: int,
    train: bool,
    hflip: bool = True,
    lighting: float | None = None,
    rotation: float = 0.0,
    scale_jitter: float = 0.0,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    shorter_side: tuple[int, int] | None = None,
) -> v2.Compose:
    """The training transform of ``preset`` (``training_transform``, which documents the arguments), or the
    evaluation one: the preset's resize rule (``evaluation_resize``), the same for every preset but "small". The
    papers' multi-crop and dense test protocols are :mod:`lit_models.datamodules.protocols`.
    """
    if train:
        return training_transform(preset, image_size, hflip, lighting, rotation, scale_jitter, shorter_side, mean, std)
    return evaluation_transform(evaluation_resize(preset), image_size, mean, std)


def evaluation_transform(
    resize: str,
    image_size: int | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    resize_size: int | None = None,
) -> v2.Compose:
    """PIL image or C x H x W uint8 -> the normalised float image an evaluation batch holds (one crop).

    ``resize``: "center_crop" (shorter side to ``resize_size``, by default image_size x 256/224, then the central
    square: the single-crop protocol of torchvision's published numbers), "resize" (to image_size x image_size),
    "keep" (own size).
    """
    if resize not in ("center_crop", "resize", "keep"):
        raise ValueError(f"resize must be 'center_crop', 'resize' or 'keep', got {resize!r}")
    geometry: list[v2.Transform] = []
    if resize == "center_crop":
        geometry = [v2.Resize(resize_size or round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]
    elif resize == "resize" and image_size:
        geometry = [v2.Resize((image_size, image_size), antialias=True)]
    normalise = [v2.Normalize(mean, std)] if mean is not None and std is not None else []
    return v2.Compose([v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), *normalise])


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
