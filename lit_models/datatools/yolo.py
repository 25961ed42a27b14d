"""YOLO's text labels as Ultralytics reads and writes them: images/<split>/<name>.jpg with labels/<split>/<name>.txt
(a line ``class cx cy w h`` per box, class 0-based, the rest fractions of the image's width and height), described
by data.yaml (``train``, ``val``, ``test`` image folders and the class ``names``) or by a classes.txt.

YOLO's labels carry no difficult or crowd flag: those boxes are written as ordinary labels and their flags kept in
``FLAGS_FILE`` beside data.yaml, which this reader applies again (and Ultralytics ignores)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import yaml

from lit_models.datamodules.box_annotations import Targets, header_size, make_targets, split_aliases
from lit_models.datamodules.files import DataError, list_images, readable
from lit_models.datamodules.output_folder import place_file
from lit_models.datatools.boxes import AnnotatedImage, BoxSet, unique_stems

log = logging.getLogger(__name__)

DATA_YAML = "data.yaml"
CLASSES_FILE = "classes.txt"
FLAGS_FILE = "lit_models_flags.json"
FLAGS = ("difficult", "iscrowd")


def is_yolo(root: Path) -> bool:
    return (root / DATA_YAML).is_file() or (root / CLASSES_FILE).is_file()


def label_file(image: Path) -> Path:
    """Ultralytics' rule: the image's path with its last images/ folder read as labels/, and .txt for the suffix."""
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(labels.join(str(image).rsplit(images, 1))).with_suffix(".txt")


def yolo_layout(root: Path) -> tuple[list[str], dict[str, Path]]:
    """The class names (label 0 first) and each split's image folder: from data.yaml, else from classes.txt and the
    folders images/<split>/ or <split>/images/ ("valid" for val, as Roboflow writes)."""
    if (root / DATA_YAML).is_file():
        return data_yaml_layout(root / DATA_YAML)
    classes = root / CLASSES_FILE
    names = [line.strip() for line in classes.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{classes} names no class; write one class name per line, class 0 first.")
    folders = {}
    for split in ("train", "val", "test"):
        found = [root / form.format(name) for name in split_aliases(split) for form in ("images/{}", "{}/images")]
        folder = next((folder for folder in found if folder.is_dir()), None)
        if folder is not None:
            folders[split] = folder
    return names, folders


def data_yaml_layout(description: Path) -> tuple[list[str], dict[str, Path]]:
    """data.yaml's ``names`` (a list, or a mapping 0: name, ...) and its split folders, resolved as Ultralytics
    resolves them: under ``path`` (default: the file's folder), a ``../`` that leads nowhere dropped (Roboflow)."""
    try:
        data = yaml.safe_load(description.read_text())
    except (yaml.YAMLError, OSError) as error:
        raise DataError(f"cannot read {description}: {error}. Fix or replace the file.") from error
    if not isinstance(data, dict) or not isinstance(data.get("names"), (list, dict)):
        raise DataError(f"{description} has no class `names` (a list, or a mapping 0: name, 1: name, ...).")
    names = data["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{description}: the keys of `names` must be 0..{len(names) - 1}, got {sorted(names)}.")
        names = [names[index] for index in range(len(names))]
    if data.get("nc") is not None and data["nc"] != len(names):
        raise DataError(f"{description} says nc: {data['nc']} but names {len(names)} classes; make them agree.")
    base = description.parent / data["path"] if data.get("path") else description.parent
    folders = {}
    for split in ("train", "val", "test"):
        value = data.get(split)
        if value is None:
            continue
        if not isinstance(value, str):
            raise DataError(f"{description}: {split} is {value!r}; convert reads one image folder per split.")
        folder = base / value
        if not folder.exists() and value.startswith("../"):
            folder = base / value[3:]
        if not folder.is_dir():
            raise DataError(f"{description}: the {split} images {folder} are not a folder; convert reads one image "
                            "folder per split (not a list file).")  # fmt: skip
        folders[split] = folder
    return [str(name) for name in names], folders


def read_yolo(root: Path, splits: list[str], required: bool) -> BoxSet:
    """The splits of a YOLO folder; each image's size comes from its header, to turn fractions into pixels. An
    image without a label file has no objects (as Ultralytics reads it)."""
    names, folders = yolo_layout(root)
    boxes = BoxSet(["background", *names])
    flags = read_flags(root)
    for split in splits:
        folder = folders.get(split)
        if folder is None:
            if required:
                raise DataError(f"{root} has no {split} split (in {DATA_YAML}, or an images/{split}/ folder).")
            continue
        images = list_images(folder)
        unlabelled = [image for image in images if not label_file(Path(image)).is_file()]
        if unlabelled:
            log.info("%s: %d image(s) without a label file, read as having no objects (first: %s)",
                     split, len(unlabelled), label_file(Path(unlabelled[0])))  # fmt: skip

        def read(image: str, folder: Path = folder, split: str = split) -> AnnotatedImage:
            file = str(Path(image).relative_to(folder))
            targets = read_labels(label_file(Path(image)), Path(image), len(names))
            for flag, indices in flags.get(split, {}).get(file, {}).items():
                if any(index >= len(targets["labels"]) for index in indices):
                    raise DataError(f"{root / FLAGS_FILE} flags {flag} box(es) {indices} of {split}/{file}, which "
                                    f"has {len(targets['labels'])}; the labels changed after it was written: delete "
                                    "it or the flags of that image.")  # fmt: skip
                targets[flag][indices] = True
            return AnnotatedImage(file, Path(image), targets)

        boxes.splits[split] = readable(images, read)
    return boxes


def read_labels(path: Path, image: Path, num_names: int) -> Targets:
    """One image's boxes in pixels; a line that is not ``class cx cy w h`` is a DataError naming it."""
    height, width = header_size(image)
    boxes, labels, described = [], [], []
    lines = path.read_text().splitlines() if path.is_file() else []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            label, (cx, cy, w, h) = int(fields[0]), map(float, fields[1:])  # ValueError unless five numbers
        except ValueError:
            raise DataError(f"{path} line {number} is {line.strip()!r}: a box is `class cx cy w h` (a class index "
                            "and four fractions); segmentation polygons are not converted.") from None  # fmt: skip
        if not 0 <= label < num_names:
            raise DataError(f"{path} line {number} has class {label}, not one of the {num_names} classes 0.."
                            f"{num_names - 1}. Fix the line, or the class names.")  # fmt: skip
        # In doubles, then float32: a writer's (x1 + x2) / 2W and (x2 - x1) / W come back to x1 and x2 exactly.
        boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
        labels.append(label + 1)
        described.append(f"line {number} ({line.strip()})")
    return make_targets(path, (height, width), boxes, labels, [False] * len(boxes), [False] * len(boxes), described)


def read_flags(root: Path) -> dict[str, dict[str, dict[str, list[int]]]]:
    """``FLAGS_FILE`` as {split: {image file: {flag: box indices}}}, checked; {} without the file."""
    path = root / FLAGS_FILE
    if not path.is_file():
        return {}
    try:
        flags = json.loads(path.read_text())["splits"]
        for marked in (marked for images in flags.values() for marked in images.values()):
            indices = [index for listed in marked.values() for index in listed]
            if set(marked) - set(FLAGS) or not all(isinstance(index, int) and index >= 0 for index in indices):
                raise ValueError(marked)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{path} is not a flags file ({{\"splits\": {{split: {{image: {{difficult: [box index, "
                        f"...]}}}}}}}}): {error}. Fix or delete it.") from None  # fmt: skip
    return flags


def write_yolo(boxes: BoxSet, folder: Path) -> list[str]:
    """Write ``boxes`` as images/<split>/, labels/<split>/ and data.yaml (and ``FLAGS_FILE`` where boxes are
    flagged); each number is Python's shortest repr of the fraction, which reads back exactly."""
    flags: dict[str, dict[str, dict[str, list[int]]]] = {}
    for split, images in boxes.splits.items():
        unique_stems(images, f"the {split} split")
        for image in images:
            place_file(image.source, folder / "images" / split / image.file)
            label = folder / "labels" / split / Path(image.file).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(label_lines(image))
            marked = {flag: np.flatnonzero(image.targets[flag]).tolist() for flag in FLAGS}
            if any(marked.values()):
                flags.setdefault(split, {})[image.file] = {flag: indices for flag, indices in marked.items() if indices}
    names = boxes.class_names[1:]
    description = {**{split: f"images/{split}" for split in boxes.splits}, "nc": len(names),
                   "names": dict(enumerate(names))}  # fmt: skip
    header = "# Ultralytics YOLO dataset: image folders relative to this file, class names by index.\n"
    (folder / DATA_YAML).write_text(header + yaml.safe_dump(description, sort_keys=False, allow_unicode=True))
    if not flags:
        return []
    (folder / FLAGS_FILE).write_text(json.dumps({"splits": flags}, indent=1) + "\n")
    counts = " and ".join(f"{boxes.count(flag)} {flag}" for flag in FLAGS if boxes.count(flag))
    return [f"{counts} box(es) written as ordinary labels (YOLO's labels have no such flags); their flags are kept in "
            f"{FLAGS_FILE}, which `lit-models data convert` reads back and Ultralytics ignores."]  # fmt: skip


def label_lines(image: AnnotatedImage) -> str:
    height, width = (float(side) for side in image.targets["size"])
    lines = []
    for (x1, y1, x2, y2), label in zip(image.targets["boxes"].tolist(), image.targets["labels"], strict=True):
        fractions = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
        lines.append(" ".join([str(int(label) - 1), *map(repr, fractions)]) + "\n")
    return "".join(lines)
