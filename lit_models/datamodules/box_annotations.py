"""Box annotations of the PASCAL VOC layout (XML) and of COCO (JSON), parsed into checked, 0-based xyxy targets.

Every problem is a DataError that names its file: malformed XML or JSON, an unknown class, a degenerate box, a
missing image. A box that overshoots the image is clipped to it (with a warning past ``CLIP_TOLERANCE``).
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lit_models.datamodules.files import DataError, readable, report
from lit_models.datamodules.voc_layout import read_voc_list

log = logging.getLogger(__name__)

# A box may overshoot the image by this many pixels without a warning (COCO's float boxes often end at
# width + 0.01); it is clipped either way.
CLIP_TOLERANCE = 1.0


class Targets(dict):
    """One image's annotation: ``boxes`` (N x 4 float32 xyxy), ``labels`` (int64), ``difficult``, ``iscrowd``
    (bool) as numpy arrays, and ``size`` = (H, W) the annotation declares."""


# A sample: (image file, its annotation or None for prediction, image id used as name).
Sample = tuple[str, Targets | None, str]


def make_targets(
    source: str | Path,
    size: tuple[int, int],
    boxes: list[list[float]],
    labels: list[int],
    difficult: list[bool],
    iscrowd: list[bool],
    described: list[str],
) -> Targets:
    """Check boxes against the image: a degenerate box is a DataError, a box outside the image is clipped.

    ``described`` names each box as its file writes it, for messages.
    """
    height, width = size
    array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    for index, (x1, y1, x2, y2) in enumerate(array):
        if x2 <= x1 or y2 <= y1:
            raise DataError(
                f"{source}: {described[index]} is degenerate (0-based xyxy {[float(v) for v in (x1, y1, x2, y2)]}, "
                "x2 <= x1 or y2 <= y1). Fix or delete the box."
            )
    clipped = array.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    overshoot = np.abs(clipped - array).max(axis=1) if len(array) else np.zeros(0)
    for index in np.flatnonzero(overshoot > 0):
        if clipped[index, 2] <= clipped[index, 0] or clipped[index, 3] <= clipped[index, 1]:
            raise DataError(
                f"{source}: {described[index]} lies entirely outside the {width}x{height} image. Fix or delete the box."
            )
    outside = [described[index] for index in np.flatnonzero(overshoot > CLIP_TOLERANCE)]
    if outside:
        log.warning(
            "%s: %s extend(s) beyond the %dx%d image; clipped to the image.", source, ", ".join(outside), width, height
        )
    return Targets(
        boxes=clipped,
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
        iscrowd=np.asarray(iscrowd, dtype=bool),
        size=(height, width),
    )


def header_size(path: Path) -> tuple[int, int]:
    """(H, W) from the image header (no decoding), for annotations that do not state the size."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read image {path}: {error}. Replace or delete the file.") from error


# --------------------------------------------------------------------------------------------------------- VOC


def parse_voc_xml(xml_path: Path, image_path: Path, class_names: list[str]) -> Targets:
    """A VOC annotation: 1-based inclusive pixel boxes -> 0-based xyxy (xmin - 1, ymin - 1, xmax, ymax)."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        raise DataError(f"cannot parse VOC annotation {xml_path}: {error}. Fix or replace the file.") from error
    except OSError as error:
        raise DataError(f"cannot read VOC annotation {xml_path}: {error}.") from error

    def number(node: ET.Element | None, tag: str, what: str) -> float:
        text = node.findtext(tag) if node is not None else None
        try:
            return float(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DataError(f"{xml_path}: {what} has no numeric <{tag}> (found {text!r}).") from None

    size_node = root.find("size")
    declared = (0, 0)
    if size_node is not None and size_node.findtext("width") and size_node.findtext("height"):
        declared = (int(number(size_node, "height", "<size>")), int(number(size_node, "width", "<size>")))
    size = declared if min(declared) > 0 else header_size(image_path)

    boxes, labels, difficult, described = [], [], [], []
    for index, obj in enumerate(root.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        if name not in class_names[1:]:
            raise DataError(
                f"{xml_path}: object {index} is a {name!r}, not one of the classes {class_names[1:]}. Give every "
                "class in data.class_names (or root/class_names.txt, background first), or fix the name."
            )
        what = f"object {index} ({name!r})"
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{xml_path}: {what} has no <bndbox>.")
        raw = [number(box, tag, what) for tag in ("xmin", "ymin", "xmax", "ymax")]
        boxes.append([raw[0] - 1, raw[1] - 1, raw[2], raw[3]])
        labels.append(class_names.index(name))
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
        described.append(f"{what} box (xmin, ymin, xmax, ymax) = ({', '.join(f'{v:g}' for v in raw)})")
    return make_targets(xml_path, size, boxes, labels, difficult, [False] * len(boxes), described)


def voc_split(root: Path, split: str, class_names: list[str], with_targets: bool = True) -> list[Sample] | None:
    """The images named in ImageSets/Main/<split>.txt with their parsed XML; None without the list. An image
    whose annotation has a problem is reported (``files.report``): while ``check()`` lists problems, it is left
    out."""
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    entries = read_voc_list(root, listing, "Annotations", ".xml", with_targets)
    if entries is None:
        return None

    def sample(entry: tuple[str, str | None, str]) -> Sample:
        image, xml, image_id = entry
        return image, parse_voc_xml(Path(xml), Path(image), class_names) if xml else None, image_id

    return readable(entries, sample)


# -------------------------------------------------------------------------------------------------------- COCO


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"cannot parse COCO annotation file {path}: {error}. Fix or replace the file.") from error
    except OSError as error:
        raise DataError(f"cannot read COCO annotation file {path}: {error}.") from error
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f'{path} is not a COCO annotation file: it has no "images" list.')
    return data


def coco_categories(data: dict[str, Any], path: Path) -> list[tuple[int, str]]:
    """(category id, name) sorted by id: label k (1-based) is the k-th of these."""
    try:
        categories = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f'{path}: "categories" must be a list of {{"id", "name"}} entries ({error}).') from None
    if not categories:
        raise DataError(f"{path} lists no categories.")
    return categories


# Where the common exports put a split's COCO file, tried in this order ({split}: the split's name): the shapes
# export, COCO's own (instances_train2017.json: a year after the split), a plain annotations folder, Roboflow's
# (<split>/_annotations.coco.json beside the images), and a file per split.
COCO_ANNOTATION_PATTERNS = (
    "annotations_{split}.json",
    "annotations/instances_{split}.json",
    "annotations/instances_{split}[0-9]*.json",
    "annotations/{split}.json",
    "{split}/_annotations.coco.json",
    "{split}/annotations.json",
    "{split}.json",
)
# Roboflow calls the validation split "valid"; other exports write it out.
SPLIT_ALIASES = {"val": ("val", "valid", "validation")}


def split_aliases(split: str) -> tuple[str, ...]:
    return SPLIT_ALIASES.get(split, (split,))


def coco_annotation_candidates(root: Path, split: str) -> list[str]:
    """The files ``find_coco_annotations`` looks for, as messages name them (``<year>`` for COCO's year)."""
    return [
        str(root / pattern.format(split=name)).replace("[0-9]*", "<year>")
        for name in split_aliases(split)
        for pattern in COCO_ANNOTATION_PATTERNS
    ]


def find_coco_annotations(root: Path, split: str) -> Path | None:
    """The first of ``COCO_ANNOTATION_PATTERNS`` that exists for this split (or its aliases); None if none does."""
    for name in split_aliases(split):
        for pattern in COCO_ANNOTATION_PATTERNS:
            found = sorted(p for p in root.glob(pattern.format(split=name)) if p.is_file())
            if len(found) > 1:
                raise DataError(
                    f"{found[0].parent} holds several {split} annotation files ({', '.join(p.name for p in found)}): "
                    f"name one with --data.annotations '{{{split}: {found[-1]}}}'."
                )
            if found:
                return found[0]
    return None


def missing_coco_annotations(root: Path, split: str) -> str:
    """What to say when a split has no COCO file: every path tried, and the argument that names one."""
    tried = "\n  ".join(coco_annotation_candidates(root, split))
    return (
        f"no COCO annotation file for the {split} split under {root}; tried:\n  {tried}\n"
        f"Name the files with --data.annotations '{{train: path/to/train.json, val: path/to/val.json}}' "
        "(and their image folders with --data.images if they are not beside them)."
    )


def find_coco_images(root: Path, split: str, annotation: Path, file_names: list[str]) -> Path:
    """The first folder holding the split's first image: root, the annotation file's folder (Roboflow), then
    <split>/, images/<split>/, <split>/images/, <split><year>/ (COCO's), images/, JPEGImages/ (the shapes export)."""
    candidates = [root, annotation.parent]
    suffix = annotation.stem.removeprefix(f"instances_{split}")  # "2017" for instances_train2017.json
    if annotation.stem.startswith("instances_") and suffix:
        candidates.append(root / f"{split}{suffix}")
    for name in split_aliases(split):
        candidates += [root / name, root / "images" / name, root / name / "images", root / f"{name}2017"]
    candidates += [root / "images", root / "JPEGImages"]
    if not file_names:
        return root
    for folder in candidates:
        if (folder / file_names[0]).is_file():
            return folder
    raise DataError(
        f"cannot find the images of {annotation}: none of {', '.join(str(c) for c in dict.fromkeys(candidates))} "
        f"holds its first image {file_names[0]!r}. Give the folder with --data.images '{{{split}: folder}}'."
    )


def coco_split(
    path: Path,
    data: dict[str, Any],
    image_dir: Path,
    label_of: dict[int, int],
    with_targets: bool = True,
) -> list[Sample]:
    """One sample per image of a COCO file; [x, y, w, h] -> xyxy, category ids -> contiguous labels. An image with
    a problem (missing file, unknown category, degenerate box) is reported (``files.report``): while ``check()``
    lists problems, it is left out."""
    if with_targets and not isinstance(data.get("annotations"), list):
        raise DataError(f'{path} has no "annotations" list: it can be predicted on, not trained or evaluated on.')
    per_image: dict[Any, list[dict]] = {}
    for annotation in (data.get("annotations") or []) if with_targets else []:
        per_image.setdefault(annotation.get("image_id"), []).append(annotation)

    def sample(entry: Any) -> Sample:
        try:
            image_id, file_name = entry["id"], entry["file_name"]
        except (KeyError, TypeError):
            raise DataError(f'{path}: image entry {entry!r} lacks "id" or "file_name".') from None
        image = image_dir / file_name
        if not image.is_file():
            raise DataError(
                f"{path} names image {file_name!r} (id {image_id}), but {image} does not exist. "
                "Restore the file or remove its entry."
            )
        if not with_targets:
            return str(image), None, str(image_id)
        declared = (int(entry.get("height") or 0), int(entry.get("width") or 0))
        size = declared if min(declared) > 0 else header_size(image)
        boxes, labels, difficult, iscrowd, described = [], [], [], [], []
        for annotation in per_image.get(image_id, []):
            category = annotation.get("category_id")
            if category not in label_of:
                raise DataError(
                    f"{path}: annotation {annotation.get('id')} of image {file_name!r} has category_id "
                    f"{category!r}, not one of the categories {sorted(label_of)}."
                )
            bbox = annotation.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise DataError(f'{path}: annotation {annotation.get("id")} has no [x, y, w, h] "bbox".')
            x, y, w, h = (float(v) for v in bbox)
            boxes.append([x, y, x + w, y + h])
            labels.append(label_of[category])
            # Not COCO's own flag: VOC's, which `lit-models data convert` writes into COCO files.
            difficult.append(bool(annotation.get("difficult", 0)))
            iscrowd.append(bool(annotation.get("iscrowd", 0)))
            described.append(f"annotation {annotation.get('id')} bbox [x, y, w, h] = {bbox}")
        targets = make_targets(f"{path} (image {file_name})", size, boxes, labels, difficult, iscrowd, described)
        return str(image), targets, str(image_id)

    if not data["images"]:
        report(DataError(f"{path} lists no images."))
    return readable(data["images"], sample)
