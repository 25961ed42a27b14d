"""The PASCAL VOC layout's shared pieces: its class lists (VOC's 21, or root/class_names.txt), its colour map
and split lists."""

from __future__ import annotations

from pathlib import Path

from lit_models.datamodules.files import DataError, readable, report

VOC_CLASS_NAMES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
CLASS_NAMES_FILE = "class_names.txt"


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map: 256 RGB entries, flattened as PIL's ``putpalette`` expects.

    VOC spreads the bits of each index over the three channels, most significant first, so neighbouring
    class indices get clearly different colours: 0 is black, 1 is (128, 0, 0), 255 (void) is (224, 224, 192).
    """
    palette = []
    for index in range(256):
        red = green = blue = 0
        bits = index
        for shift in range(7, -1, -1):
            red |= (bits & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette.extend((red, green, blue))
    return palette


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


def read_voc_list(
    root: Path, listing: Path, annotation_dir: str, annotation_suffix: str, annotated: bool
) -> list[tuple[str, str | None, str]] | None:
    """(JPEG, annotation file or None, id) for each id of a split list, every file checked; None without the list.

    Annotations are ``root/<annotation_dir>/<id><annotation_suffix>`` (SegmentationClass/.png, Annotations/.xml).
    Only the first column counts: class lists (aeroplane_train.txt) carry a second one. A line naming a missing
    file is reported (``files.report``): while ``check()`` lists problems, it is left out.
    """
    if not listing.is_file():
        return None
    numbered = enumerate(listing.read_text().splitlines(), 1)
    lines = [(number, line.split()[0]) for number, line in numbered if line.split()]
    if not lines:
        report(DataError(f"{listing} lists no images."))

    def entry(line: tuple[int, str]) -> tuple[str, str | None, str]:
        line_number, image_id = line
        image = root / "JPEGImages" / f"{image_id}.jpg"
        annotation = root / annotation_dir / f"{image_id}{annotation_suffix}"
        for path in (image, annotation) if annotated else (image,):
            if not path.is_file():
                raise DataError(
                    f"{listing} line {line_number} names {image_id!r}, but {path} does not exist. "
                    "Restore the file or remove the line."
                )
        return str(image), str(annotation) if annotated else None, image_id

    return readable(lines, entry)
