"""DetectionDataModule finds COCO annotations in the layouts that common exports write, and names every path it
tried (and --data.annotations) when it finds none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lit_models.datamodules.detection import DetectionDataModule
from lit_models.datamodules.files import DataError

CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]

# Layout name -> {split: (annotation file, image folder)}, relative to the root.
LAYOUTS = {
    "coco2017": {"train": ("annotations/instances_train2017.json", "train2017"),
                 "val": ("annotations/instances_val2017.json", "val2017")},
    "coco2014": {"train": ("annotations/instances_train2014.json", "train2014"),
                 "val": ("annotations/instances_val2014.json", "val2014")},
    "instances": {"train": ("annotations/instances_train.json", "images/train"),
                  "val": ("annotations/instances_val.json", "images/val")},
    "annotations_folder": {"train": ("annotations/train.json", "images/train"),
                           "val": ("annotations/val.json", "images/val")},
    "roboflow": {"train": ("train/_annotations.coco.json", "train"),
                 "val": ("valid/_annotations.coco.json", "valid")},
    "split_folders": {"train": ("train/annotations.json", "train/images"),
                      "val": ("val/annotations.json", "val/images")},
    "split_files": {"train": ("train.json", "train"), "val": ("validation.json", "validation")},
    "shapes_export": {"train": ("annotations_train.json", "JPEGImages"),
                      "val": ("annotations_val.json", "JPEGImages")},
}  # fmt: skip


def write_split(root: Path, annotation: str, images: str, count: int, first_id: int) -> None:
    """``count`` 16 x 12 images, each with one box of the first category."""
    (root / images).mkdir(parents=True, exist_ok=True)
    ids = range(first_id, first_id + count)
    entries = [{"id": i, "file_name": f"{i}.png", "width": 16, "height": 12} for i in ids]
    for entry in entries:
        Image.new("RGB", (16, 12), (90, 0, 0)).save(root / images / entry["file_name"])
    boxes = [{"id": e["id"], "image_id": e["id"], "category_id": 3, "bbox": [2, 3, 6, 5]} for e in entries]
    (root / annotation).parent.mkdir(parents=True, exist_ok=True)
    (root / annotation).write_text(json.dumps({"images": entries, "annotations": boxes, "categories": CATEGORIES}))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_export_layout_is_found_with_its_images(layout, tmp_path):
    root = tmp_path / layout
    for (annotation, images), count, first_id in zip(LAYOUTS[layout].values(), (3, 2), (1, 100), strict=True):
        write_split(root, annotation, images, count, first_id)
    dm = DetectionDataModule(root=str(root), num_workers=0, batch_size=2)
    assert dm.format == "coco" and dm.class_names == ["background", "cat", "dog"]
    dm.setup("fit")
    train, val = dm.datasets["train"].samples, dm.datasets["val"].samples
    assert [name for _, _, name in train] == ["1", "2", "3"]
    assert [name for _, _, name in val] == ["100", "101"]  # its own split, not held out of train
    assert Path(val[0][0]) == root / LAYOUTS[layout]["val"][1] / "100.png"
    assert dm.datasets["train"][0]["target"]["labels"].tolist() == [1]


def test_without_annotations_every_tried_path_and_the_argument_are_named(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError) as raised:
        DetectionDataModule(root=str(tmp_path))
    message = str(raised.value)
    tried = ["annotations_train.json", "annotations/instances_train.json",
             "annotations/instances_train<year>.json", "annotations/train.json", "train/_annotations.coco.json",
             "train/annotations.json", "train.json"]  # fmt: skip
    for path in tried:
        assert f"\n  {tmp_path / path}\n" in message
    assert "--data.annotations '{train: path/to/train.json, val: path/to/val.json}'" in message
    assert "neither a VOC layout" in message  # format "auto" looked for VOC first


def test_explicit_annotation_files_for_any_layout(tmp_path):
    write_split(tmp_path, "labels/mine-train.json", "pictures", 3, 1)
    write_split(tmp_path, "labels/mine-val.json", "pictures", 2, 100)
    dm = DetectionDataModule(
        root=str(tmp_path),
        annotations={"train": str(tmp_path / "labels/mine-train.json"), "val": str(tmp_path / "labels/mine-val.json")},
        images={"train": str(tmp_path / "pictures"), "val": str(tmp_path / "pictures")},
        num_workers=0,
    )
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 3 and len(dm.datasets["val"]) == 2
    with pytest.raises(DataError, match="this data has no test split: data.annotations names no test file."):
        dm.test_dataloader()


def test_two_years_of_one_split_ask_which(tmp_path):
    write_split(tmp_path, "annotations/instances_train2014.json", "train2014", 1, 1)
    write_split(tmp_path, "annotations/instances_train2017.json", "train2017", 1, 1)
    with pytest.raises(DataError, match=r"several train annotation files .* --data.annotations"):
        DetectionDataModule(root=str(tmp_path))
