"""Box annotations held between formats: per split, each image's file and its ``Targets`` as the package's readers
give them (0-based continuous xyxy pixels, labels 1..K, difficult and iscrowd flags, the image size)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lit_models.datamodules.box_annotations import Targets
from lit_models.datamodules.files import DataError

# The splits a conversion carries unless --splits names others (VOC 2007's trainval is train and val together).
DEFAULT_SPLITS = ("train", "val", "test")


@dataclass
class AnnotatedImage:
    """One image: ``file`` its path relative to its split's image folder ("000001.jpg", "street/0042.png"),
    ``source`` where it is now, ``targets`` its boxes."""

    file: str
    source: Path
    targets: Targets


@dataclass
class BoxSet:
    """A detection set: class names with background first (label k is ``class_names[k]``) and each split's images."""

    class_names: list[str]
    splits: dict[str, list[AnnotatedImage]] = field(default_factory=dict)

    def count(self, flag: str | None = None) -> int:
        """Boxes in every split, or only those with ``flag`` ("difficult", "iscrowd")."""
        targets = [image.targets for images in self.splits.values() for image in images]
        return sum(int(np.count_nonzero(t[flag])) if flag else len(t["labels"]) for t in targets)

    def summary(self) -> str:
        images = sum(len(images) for images in self.splits.values())
        flags = ", ".join(f"{count} {flag}" for flag in ("difficult", "iscrowd") if (count := self.count(flag)))
        splits = ", ".join(f"{split} {len(images)}" for split, images in self.splits.items())
        return (f"{images} images ({splits}), {self.count()} boxes{f' ({flags})' if flags else ''}, "
                f"{len(self.class_names) - 1} classes")  # fmt: skip


def unique_stems(images: list[AnnotatedImage], where: str) -> None:
    """Formats that name an annotation after its image (VOC, YOLO) need one image per name without extension."""
    seen: dict[str, str] = {}
    for image in images:
        stem = str(Path(image.file).with_suffix(""))
        if stem in seen:
            raise DataError(f"{where}: images {seen[stem]!r} and {image.file!r} would share the annotation {stem!r}; "
                            "rename one of them.")  # fmt: skip
        seen[stem] = image.file


def shortest(exact: float, reads_back: Callable[[float], bool]) -> float:
    """The shortest decimal of the float32 nearest ``exact`` when a reader given it gets the same box back
    (``reads_back``), else ``exact`` itself, whose repr reads back exactly: files stay tidy ("473.07", not
    "473.070007324219") and every conversion is exact."""
    tidy = float(str(np.float32(exact)))
    value = tidy if reads_back(tidy) else exact
    return int(value) if value.is_integer() else value
