"""Segmentation masks between palette PNGs (mode P with VOC's colour map, as VOC's SegmentationClass) and
class-index PNGs (mode L): the pixel values, class indices and 255 for void, stay what they are."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from PIL import Image

from lit_models.datamodules.files import DataError
from lit_models.datamodules.segmentation import IGNORE_INDEX, load_mask
from lit_models.datamodules.voc_layout import voc_palette

MaskForm = Literal["index", "palette"]


def convert_masks(source: Path, folder: Path, to: MaskForm) -> int:
    """Every PNG under ``source`` (any depth) written under ``folder`` at the same relative path in the form ``to``;
    returns their number. A mask that is not class indices (an RGB colour picture) is a DataError naming it."""
    masks = sorted(path for path in source.rglob("*") if path.suffix.lower() == ".png" and path.is_file())
    if not masks:
        raise DataError(f"{source} holds no PNG masks (at any depth); give the folder of the masks, such as a VOC "
                        "folder's SegmentationClass.")  # fmt: skip
    palette = voc_palette()
    for path in masks:
        # Every value 0..254 and 255 (void) is accepted: a conversion carries the values, whatever the classes.
        mask = Image.fromarray(load_mask(str(path), IGNORE_INDEX))  # H x W uint8: mode L
        if to == "palette":
            mask.putpalette(palette)  # mode P, the same values
        destination = folder / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        mask.save(destination)
    return len(masks)
