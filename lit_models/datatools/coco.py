"""COCO JSON read (by the package's own reader, in every layout DetectionDataModule finds) and written:
annotations/instances_<split>.json with [x, y, w, h] boxes, the images in images/<split>/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lit_models.datamodules.box_annotations import (
    coco_categories,
    coco_split,
    find_coco_annotations,
    find_coco_images,
    missing_coco_annotations,
    read_json,
)
from lit_models.datamodules.files import DataError
from lit_models.datamodules.output_folder import place_file
from lit_models.datatools.boxes import AnnotatedImage, BoxSet, shortest


def is_coco(root: Path) -> bool:
    return any(find_coco_annotations(root, split) is not None for split in ("train", "val", "test"))


def read_coco(
    root: Path, splits: list[str], required: bool, file: Path | None = None, images: Path | None = None
) -> BoxSet:
    """The splits of a COCO export that it has (or the one split in ``file``, its images in ``images``), each file
    read as DetectionDataModule reads it; the categories in id order are labels 1..K, and every split must have the
    same ones."""
    boxes: BoxSet | None = None
    first: Path | None = None
    for split in splits:
        path = file or find_coco_annotations(root, split)
        if path is None:
            if required:
                raise DataError(missing_coco_annotations(root, split))
            continue
        data = read_json(path)
        categories = coco_categories(data, path)
        names = ["background", *(name for _, name in categories)]
        if boxes is None:
            boxes, first = BoxSet(names), path
        elif names != boxes.class_names:
            raise DataError(f"{path} has the categories {names[1:]} but {first} has {boxes.class_names[1:]}; every "
                            "split must have the same categories in the same id order.")  # fmt: skip
        label_of = {category: label for label, (category, _) in enumerate(categories, 1)}
        file_names = [str(entry.get("file_name")) for entry in data["images"] if isinstance(entry, dict)]
        folder = images or find_coco_images(root, split, path, file_names)
        boxes.splits[split] = [AnnotatedImage(str(Path(image).relative_to(folder)), Path(image), targets)
                               for image, targets, _ in coco_split(path, data, folder, label_of)]  # fmt: skip
    if boxes is None:
        raise DataError(missing_coco_annotations(root, "train"))
    return boxes


def write_coco(boxes: BoxSet, folder: Path) -> list[str]:
    """Write ``boxes`` as annotations/instances_<split>.json and images/<split>/. Image and annotation ids count
    from 1 across the splits, category k is label k; a difficult box carries ``"difficult": 1`` (COCO has no such
    flag; DetectionDataModule reads this one)."""
    image_id = annotation_id = 0
    for split, images in boxes.splits.items():
        entries, annotations = [], []
        for image in images:
            image_id += 1
            place_file(image.source, folder / "images" / split / image.file)
            height, width = image.targets["size"]
            entries.append({"id": image_id, "file_name": image.file, "width": int(width), "height": int(height)})
            fields = (image.targets[key] for key in ("boxes", "labels", "difficult", "iscrowd"))
            for box, label, difficult, crowd in zip(*fields, strict=True):
                annotation_id += 1
                annotations.append(annotation(annotation_id, image_id, box, label, difficult, crowd))
        categories = [{"id": label, "name": name} for label, name in enumerate(boxes.class_names) if label]
        coco = {"images": entries, "annotations": annotations, "categories": categories}
        path = folder / "annotations" / f"instances_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(coco, indent=1) + "\n")
    return []


def annotation(annotation_id: int, image_id: int, box: np.ndarray, label: int, difficult: bool, crowd: bool) -> dict:
    """One box as [x, y, w, h], each number the shortest that the COCO reader (x + w) turns back into the box."""
    x1, y1, x2, y2 = (np.float32(edge) for edge in box)
    x = shortest(float(x1), lambda v: np.float32(v) == x1)
    y = shortest(float(y1), lambda v: np.float32(v) == y1)
    w = shortest(float(x2) - x, lambda v: np.float32(x + v) == x2)
    h = shortest(float(y2) - y, lambda v: np.float32(y + v) == y2)
    entry: dict[str, Any] = {"id": annotation_id, "image_id": image_id, "category_id": int(label),
                             "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(crowd)}  # fmt: skip
    if difficult:
        entry["difficult"] = 1
    return entry
