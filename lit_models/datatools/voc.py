"""PASCAL VOC's layout read (by the package's own reader) and written: Annotations/<id>.xml with VOC's 1-based
inclusive pixel boxes, JPEGImages/<id>.jpg, ImageSets/Main/<split>.txt and class_names.txt."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from lit_models.datamodules.box_annotations import voc_split
from lit_models.datamodules.files import JPEG_SIGNATURE, DataError, load_rgb
from lit_models.datamodules.output_folder import place_file
from lit_models.datamodules.voc_layout import CLASS_NAMES_FILE, VOC_CLASS_NAMES, read_class_names
from lit_models.datatools.boxes import AnnotatedImage, BoxSet, shortest, unique_stems

# Quality of an image re-encoded because VOC's layout holds JPEGs only (a PNG source, say).
JPEG_QUALITY = 95


def is_voc(root: Path) -> bool:
    return (root / "Annotations").is_dir() and (root / "ImageSets" / "Main").is_dir()


def read_voc(root: Path, splits: list[str], required: bool, class_names: list[str] | None) -> BoxSet:
    """The splits of a VOC folder that it lists (ImageSets/Main/<split>.txt), each XML read as DetectionDataModule
    reads it; a split in ``splits`` that has no list is an error when ``required``."""
    boxes = BoxSet(read_class_names(root, class_names, VOC_CLASS_NAMES))
    for split in splits:
        samples = voc_split(root, split, boxes.class_names)
        if samples is None and required:
            raise DataError(f"{root} has no {split} split: {root / 'ImageSets' / 'Main' / f'{split}.txt'} does not "
                            "exist. Name the lists it has with --splits.")  # fmt: skip
        if samples is not None:
            folder = root / "JPEGImages"
            boxes.splits[split] = [AnnotatedImage(str(Path(image).relative_to(folder)), Path(image), targets)
                                   for image, targets, _ in samples]  # fmt: skip
    return boxes


def write_voc(boxes: BoxSet, folder: Path) -> list[str]:
    """Write ``boxes`` as a VOC folder; return notes on what VOC cannot hold as it was (crowd boxes, non-JPEG
    images)."""
    crowd = reencoded = 0
    for split, images in boxes.splits.items():
        unique_stems(images, f"the {split} split")
        ids = []
        for image in images:
            image_id = str(Path(image.file).with_suffix(""))
            ids.append(image_id)
            destination = folder / "JPEGImages" / f"{image_id}.jpg"
            if not destination.exists():  # an image listed by two splits (train and trainval) is placed once
                reencoded += place_jpeg(image.source, destination)
            annotation = folder / "Annotations" / f"{image_id}.xml"
            annotation.parent.mkdir(parents=True, exist_ok=True)
            annotation.write_bytes(voc_xml(image_id, image, boxes.class_names))
            crowd += int(np.count_nonzero(image.targets["iscrowd"]))
        listing = folder / "ImageSets" / "Main" / f"{split}.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{image_id}\n" for image_id in ids))
    (folder / CLASS_NAMES_FILE).write_text("".join(f"{name}\n" for name in boxes.class_names))
    notes = []
    if crowd:
        notes.append(f"{crowd} crowd box(es) written as difficult: VOC has no crowd flag, and both are left out of "
                     "evaluation.")  # fmt: skip
    if reencoded:
        notes.append(f"{reencoded} image(s) that were not JPEGs re-encoded as JPEG (quality {JPEG_QUALITY}): VOC's "
                     "layout reads JPEGImages/<id>.jpg; convert to COCO or YOLO to keep them as they are.")  # fmt: skip
    return notes


def place_jpeg(source: Path, destination: Path) -> bool:
    """A JPEG placed as it is, any other image re-encoded; True when re-encoded."""
    with open(source, "rb") as file:
        is_jpeg = file.read(len(JPEG_SIGNATURE)) == JPEG_SIGNATURE
    if is_jpeg:
        place_file(source, destination)
        return False
    destination.parent.mkdir(parents=True, exist_ok=True)
    load_rgb(str(source)).save(destination, quality=JPEG_QUALITY)
    return True


def voc_xml(image_id: str, image: AnnotatedImage, class_names: list[str]) -> bytes:
    """VOC's annotation: 0-based edges back to 1-based inclusive pixels, (x1 + 1, y1 + 1, x2, y2), each number the
    shortest that the VOC reader turns back into the same box."""
    targets = image.targets
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(root, "size")
    height, width = targets["size"]
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    flags = targets["difficult"] | targets["iscrowd"]
    for box, label, difficult in zip(targets["boxes"], targets["labels"], flags, strict=True):
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = class_names[label]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = str(int(difficult))
        bndbox = ET.SubElement(node, "bndbox")
        for tag, edge, shift in zip(("xmin", "ymin", "xmax", "ymax"), box, (1, 1, 0, 0), strict=True):
            value = shortest(float(edge) + shift, lambda v, e=edge, s=shift: np.float32(v - s) == e)
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"
