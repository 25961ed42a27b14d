"""Listing image files and decoding them with errors that name the file."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F

# What PIL decodes and ImageNet-style trees contain; anything else in a class folder is ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
# JPEGs are decoded by torchvision (libjpeg-turbo, about twice PIL's speed with its conversion), recognised by their
# first bytes as PIL recognises a file, not by its extension. Other formats stay with PIL: torchvision 0.29's PNG
# decoder can crash the process on damaged data instead of raising, which would kill a DataLoader worker unnamed.
JPEG_SIGNATURE = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
# Where a DataModule decodes JPEGs: in its DataLoader workers, or on the trainer's GPU with nvJPEG.
DecodeDevice = Literal["cpu", "cuda"]
# torchvision's decode errors start with the C++ function and source line that raised them ("decode_jpeg,
# /.../decode_jpeg.cpp:171, Image is incomplete or truncated"); the message for the user is what follows.
SOURCE_LOCATION = re.compile(r"^[^,]+, \S+:\d+, ")


class DataError(ValueError):
    """A problem with the user's data: the message names the file or folder and says what to do."""


# The structural problems ``check()`` is listing; None while a run sets up its data, which stops at the first one.
_listed_problems: ContextVar[list[str] | None] = ContextVar("listed_problems", default=None)
Item = TypeVar("Item")
Result = TypeVar("Result")


@contextmanager
def listing_problems() -> Iterator[list[str]]:
    """Inside, :func:`report` adds each structural problem (an empty class folder, a missing mask, an unparsable
    annotation file) to the list it yields and the listing goes on past it, so ``check()`` finds every one."""
    problems: list[str] = []
    token = _listed_problems.set(problems)
    try:
        yield problems
    finally:
        _listed_problems.reset(token)


def report(error: DataError) -> None:
    """Raise ``error`` (a run stops at the first structural problem), or, inside :func:`listing_problems`, list it
    and return so the caller leaves the bad item out and goes on."""
    problems = _listed_problems.get()
    if problems is None:
        raise error
    problems.append(str(error))


def readable(items: Iterable[Item], read: Callable[[Item], Result]) -> list[Result]:
    """``read(item)`` of every item; an item whose read raises DataError is reported (:func:`report`) and left out."""
    results = []
    for item in items:
        try:
            results.append(read(item))
        except DataError as error:
            report(error)
    return results


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class sub-folders of one split (ImageNet's synset folders)."""
    if not split_dir.is_dir():
        raise DataError(
            f"{split_dir} is not a folder. An image-folder root needs train/<class>/* "
            "(and optionally val/<class>/*, test/<class>/*)."
        )
    names = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and entry.name[0] != ".")
    if not names:
        raise DataError(f"{split_dir} has no class folders; put each class's images in {split_dir}/<class>/.")
    return names


def list_labelled_images(split_dir: Path, class_names: list[str]) -> list[tuple[str, int]]:
    """(path, class index) for every image under split_dir/<class>/, recursively, in sorted order.

    Problems are reported (:func:`report`): while ``check()`` lists them, the images of the class folders that are
    there and hold images are still listed.
    """
    try:
        found = list_class_folders(split_dir)
    except DataError as error:
        report(error)
        return []
    if found != class_names:
        missing = sorted(set(class_names) - set(found))
        extra = sorted(set(found) - set(class_names))
        report(
            DataError(
                f"{split_dir} has different class folders from the training split: missing {missing}, "
                f"extra {extra}. Every split must hold the same class folders."
            )
        )
    samples = []
    for index, name in enumerate(class_names):
        files = list_images(split_dir / name) if name in found else []
        if name in found and not files:
            report(
                DataError(
                    f"class folder {split_dir / name} holds no images (extensions: {', '.join(IMAGE_EXTENSIONS)}). "
                    "Add images or remove the folder."
                )
            )
        samples.extend((path, index) for path in files)
    return samples


def list_images(folder: Path) -> list[str]:
    """Every image file under folder (any depth), sorted so every DDP rank sees the same order."""
    paths = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        paths.extend(os.path.join(parent, name) for name in names if is_image_file(name))
    return sorted(paths)


def load_rgb(path: str | Image.Image) -> Image.Image:
    """A PIL image in RGB (for drawing, and :func:`decode_rgb`'s formats that torchvision lacks): decoded fully, so
    truncation is caught here, not later, grayscale/CMYK/palette converted; an image already in memory
    (``lit_models.load(...).predict(picture)``) is only converted."""
    if isinstance(path, Image.Image):
        return path.convert("RGB")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise decode_error(path, error) from error


def decode_error(path: str, error: Exception) -> DataError:
    """The error for a file that cannot be decoded: its name, the decoder's reason, what to do."""
    reason = SOURCE_LOCATION.sub("", str(error))
    return DataError(f"cannot decode image {path}: {reason}. Replace or delete the file.")


def read_bytes(path: str) -> torch.Tensor:
    """The file's encoded bytes as a 1-D uint8 tensor (what torchvision's decoders, nvJPEG's too, take)."""
    try:
        return torch.from_numpy(np.fromfile(path, dtype=np.uint8))
    except OSError as error:
        raise decode_error(path, error) from error


def is_jpeg(data: torch.Tensor) -> bool:
    return bytes(data[:3].tolist()) == JPEG_SIGNATURE


def decode_rgb(path: str | Image.Image | torch.Tensor) -> torch.Tensor:
    """The image as a 3 x H x W uint8 RGB tensor, decoded fully (a truncated file is an error here, not later).

    JPEGs are decoded by torchvision (libjpeg-turbo: about twice PIL's speed with its conversion), other formats
    by PIL (:func:`load_rgb`; see :data:`JPEG_SIGNATURE`). Either way the pixels are those of PIL's
    ``convert("RGB")``: grayscale, CMYK and palette images expanded, an alpha channel dropped, a GIF's first frame,
    and no EXIF orientation applied (neither path ever rotated an image). An image already in memory
    (``lit_models.load(...).predict(picture)``) is only converted; one decoded already (a prepared shard's record,
    3 x H x W uint8 RGB) is returned as it is.
    """
    if isinstance(path, torch.Tensor):
        return path
    if isinstance(path, Image.Image):
        return F.pil_to_tensor(path.convert("RGB"))
    return decode_data(read_bytes(path), path)


def decode_data(data: torch.Tensor, path: str) -> torch.Tensor:
    """:func:`decode_rgb` of the file's bytes, already read (``path`` names it in errors and for PIL)."""
    if not is_jpeg(data):
        return F.pil_to_tensor(load_rgb(path))
    check_jpeg_size(data, path)
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise decode_error(path, error) from error


# JPEG markers that start a frame header (SOF0-SOF15 but DHT, JPG and DAC), which holds the image's size.
FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
START_OF_SCAN = 0xDA


def jpeg_size(data: torch.Tensor) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, read from its segment headers without decoding; None where the
    header is missing or cut short (the decoder then names the file)."""
    view = memoryview(data.numpy())
    position = 2  # after the start-of-image marker
    while position + 9 <= len(view):
        if view[position] != 0xFF:
            return None
        marker = view[position + 1]
        if marker == 0xFF:  # fill bytes before a marker
            position += 1
            continue
        if marker in FRAME_MARKERS:
            height = view[position + 5] << 8 | view[position + 6]
            return view[position + 7] << 8 | view[position + 8], height
        if marker == START_OF_SCAN:
            return None
        position += 2 + (view[position + 2] << 8 | view[position + 3])
    return None


def check_jpeg_size(data: torch.Tensor, name: str) -> None:
    """Refuse a JPEG that declares more pixels than PIL would decode (twice ``Image.MAX_IMAGE_PIXELS``, PIL's
    decompression-bomb limit): torchvision's decoder has no such limit and would try to allocate them all."""
    size = jpeg_size(data)
    limit = Image.MAX_IMAGE_PIXELS
    if size is not None and limit is not None and size[0] * size[1] > 2 * limit:
        reason = (
            f"it declares {size[0]} x {size[1]} pixels, more than twice PIL's limit of {limit} "
            "(PIL.Image.MAX_IMAGE_PIXELS: raise it if the image is genuine)"
        )
        raise decode_error(name, ValueError(reason))


def read_encoded(path: str | Image.Image | torch.Tensor) -> torch.Tensor:
    """What a worker hands on to be decoded on the GPU (``decode_device="cuda"``): a JPEG's bytes (1-D uint8), or
    the image decoded here (3 x H x W uint8, :func:`decode_rgb`) where nvJPEG cannot take it: another format, an
    image in memory or decoded already (a prepared shard's record), or a JPEG that does not end with its end-of-image
    marker (a truncated download), which the CPU decoder turns into the error that names the file."""
    if isinstance(path, (Image.Image, torch.Tensor)):
        return decode_rgb(path)
    data = read_bytes(path)
    if is_jpeg(data) and bytes(data[-2:].tolist()) == JPEG_END:
        return data
    return decode_data(data, path)


def decode_on_device(items: list[torch.Tensor], paths: list[str], device: torch.device) -> list[torch.Tensor]:
    """3 x H x W uint8 RGB images on ``device`` from what :func:`read_encoded` gave: the JPEGs decoded together
    (torchvision's ``decode_jpeg``: nvJPEG on a GPU, libjpeg-turbo on the CPU), the images decoded already moved
    there. nvJPEG refuses some files libjpeg-turbo reads (CMYK, unusual chroma subsampling, some corruption): one
    refusal fails the batched call, so each JPEG is then decoded alone, a refused one on the CPU, where a file that
    cannot be decoded at all raises the DataError that names it."""
    jpegs = [index for index, item in enumerate(items) if item.ndim == 1]
    images = {index: item.to(device, non_blocking=True) for index, item in enumerate(items) if item.ndim == 3}
    if jpegs:
        try:
            decoded = decode_jpeg([items[index] for index in jpegs], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = [decode_jpeg_alone(items[index], paths[index], device) for index in jpegs]
        images.update(zip(jpegs, decoded, strict=True))
    return [images[index] for index in range(len(items))]


def decode_jpeg_alone(data: torch.Tensor, path: str, device: torch.device) -> torch.Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return decode_data(data, path).to(device)


def check_decode_device(device: str) -> None:
    """Raise ``ValueError`` for a decode device other than "cpu" and "cuda", and for "cuda" without a GPU."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"decode_device must be 'cpu' (in the DataLoader workers) or 'cuda' (nvJPEG), got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "decode_device 'cuda' decodes JPEGs on the GPU with nvJPEG, but torch finds no CUDA device here "
            "(torch.cuda.is_available() is False): leave decode_device at 'cpu'."
        )


def list_predict_images(inputs: str | os.PathLike | list[str]) -> tuple[Path, list[str]]:
    """The images to predict on, and the folder their output names are relative to; errors name the input.

    ``inputs``: a folder (every image under it, any depth), an image file, a glob pattern (``photos/*.jpg``), or a
    list of these (a comma-separated string from the command line).
    """
    specs = inputs if isinstance(inputs, list) else str(inputs).split(",")
    files: list[str] = []
    for spec in (str(item).strip() for item in specs):
        path = Path(spec).expanduser()
        if path.is_dir():
            found = list_images(path)
            problem = f"holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
        elif path.is_file():
            found = [str(path)] if is_image_file(path.name) else []
            problem = f"is not an image file ({', '.join(IMAGE_EXTENSIONS)})"
        else:
            found = sorted(str(match) for match in glob.glob(str(path), recursive=True) if is_image_file(match))
            problem = "does not exist (and matches no image files as a pattern)"
        if not found:
            raise DataError(f"predict_dir {path} {problem}.")
        files.extend(str(Path(found_file).resolve()) for found_file in found)
    files = list(dict.fromkeys(files))
    folder = Path(specs[0]).expanduser().resolve() if len(specs) == 1 and Path(specs[0]).expanduser().is_dir() else None
    return folder or Path(os.path.commonpath([str(Path(f).parent) for f in files])), files
