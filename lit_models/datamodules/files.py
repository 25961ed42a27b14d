"""Listing image files and decoding them with errors that name the file."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

# What PIL decodes and ImageNet-style trees contain; anything else in a class folder is ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")


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
    """Decode fully (so truncation is caught here, not later) and convert grayscale/CMYK/palette to RGB; an image
    already in memory (``lit_models.load(...).predict(picture)``) is only converted."""
    if isinstance(path, Image.Image):
        return path.convert("RGB")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot decode image {path}: {error}. Replace or delete the file.") from error


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
