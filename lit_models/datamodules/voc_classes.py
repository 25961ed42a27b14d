"""Class lists of the PASCAL VOC layout: VOC's own 21 classes, or a root/class_names.txt beside the data."""

from __future__ import annotations

from pathlib import Path

from lit_models.datamodules.files import DataError

VOC_CLASS_NAMES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
CLASS_NAMES_FILE = "class_names.txt"


def read_class_names(root: Path, given: list[str] | None, default: list[str] | None) -> list[str]:
    """Class names, index 0 first: given, else root/class_names.txt (one a line), else the layout's default."""
    if given:
        return [str(name) for name in given]
    listing = root / CLASS_NAMES_FILE
    if listing.is_file():
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if len(names) < 2:
            raise DataError(f"{listing} names {len(names)} class(es); list background and every class, one a line.")
        return names
    if default is not None:
        return list(default)
    raise DataError(
        f"{root} does not say its classes: give data.class_names (index 0 first), or write {listing} with one "
        "class name per line."
    )
