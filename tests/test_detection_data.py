"""DetectionDataModule: VOC and COCO read as torchvision reads them, aligned box transforms, and data errors."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CocoDetection, VOCDetection
from torchvision.transforms import v2

from lit_models.datamodules.detection import DetectionDataModule, collate_detection
from lit_models.datamodules.files import DataError
from lit_models.datamodules.sources import shapes
from lit_models.datamodules.sources.shapes import CLASS_NAMES, export_shapes, generate_scene
from lit_models.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def voc_tree(tmp_path: Path) -> Path:
    """A tiny shapes export where torchvision expects VOC: tmp_path/VOCdevkit/VOC2012 (64 px, ids 000001-6)."""
    return export_shapes(tmp_path / "VOCdevkit" / "VOC2012", num_train=4, num_val=2, size=64)


def make(root: Path, **kwargs) -> DetectionDataModule:
    """No augmentation, no worker processes unless a test asks."""
    return DetectionDataModule(root=str(root), **{"hflip": False, "num_workers": 0, **kwargs})


def first_batch(dm: DetectionDataModule, split: str = "val") -> dict:
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "predict": dm.predict_dataloader}[split]()
    return dm.on_before_batch_transfer(next(iter(loader)), 0)


def voc_xml(objects: list[tuple[str, tuple, int]], width: int = 64, height: int = 64) -> str:
    """VOC annotation text; objects are (name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)."""
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>\n"


def coco_tree(root: Path, annotations: list[dict], categories: list[dict], count: int = 3) -> Path:
    """COCO's own layout: root/train2017/<n>.png (16x12 px) and root/annotations/instances_{train,val}2017.json."""
    for split in ("train", "val"):
        (root / f"{split}2017").mkdir(parents=True)
        images = [{"id": 100 + n, "file_name": f"{n}.png", "width": 16, "height": 12} for n in range(count)]
        for n, entry in enumerate(images):
            Image.new("RGB", (16, 12), (40 * n, 0, 0)).save(root / f"{split}2017" / entry["file_name"])
        coco = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(coco))
    return root


def test_voc_reads_what_torchvision_and_the_generator_read(tmp_path):
    root = voc_tree(tmp_path)
    dm = make(root)
    assert dm.format == "voc" and dm.class_names == CLASS_NAMES and dm.num_classes == 4
    dm.setup("fit")
    samples = dm.datasets["train"].samples
    reference = VOCDetection(root=str(tmp_path), year="2012", image_set="train")
    assert [name for _, _, name in samples] == ["000001", "000002", "000003", "000004"] and len(reference) == 4
    for number, ((_, targets, _), (_, theirs)) in enumerate(zip(samples, reference, strict=True), 1):
        objects = theirs["annotation"]["object"]
        assert [CLASS_NAMES[label] for label in targets["labels"]] == [obj["name"] for obj in objects]
        voc_boxes = [[float(obj["bndbox"][k]) for k in ("xmin", "ymin", "xmax", "ymax")] for obj in objects]
        np.testing.assert_array_equal(targets["boxes"], np.array(voc_boxes) - [1, 1, 0, 0])
        # ... and the boxes the scene was drawn with (0-based, max exclusive: torchvision's xyxy exactly).
        _, _, drawn = generate_scene(np.random.default_rng([0, number]), 64)
        np.testing.assert_array_equal(targets["boxes"], [obj["box"] for obj in drawn])
        assert targets["labels"].tolist() == [obj["label"] for obj in drawn] and not targets["difficult"].any()
    item = dm.datasets["val"][0]
    assert item["image"].shape == (3, 64, 64) and item["target"]["image_id"] == item["name"] == "000005"
    np.testing.assert_array_equal(item["target"]["boxes"].numpy(), dm.datasets["val"].samples[0][1]["boxes"])
    assert item["target"]["labels"].dtype == torch.int64 and item["target"]["orig_size"] == (64, 64)


def test_coco_reads_the_json_boxes_and_agrees_with_the_voc_read(tmp_path):
    root = voc_tree(tmp_path)
    dm = make(root, format="coco")
    assert dm.format == "coco" and dm.class_names == CLASS_NAMES
    dm.setup("fit")
    coco = json.loads((root / "annotations_train.json").read_text())
    samples = dm.datasets["train"].samples
    assert [(Path(image).name, name) for image, _, name in samples] == [
        (entry["file_name"], str(entry["id"])) for entry in coco["images"]
    ]
    for _, targets, image_id in samples:
        listed = [a for a in coco["annotations"] if str(a["image_id"]) == image_id]
        x, y, w, h = np.array([a["bbox"] for a in listed], dtype=np.float32).T
        np.testing.assert_array_equal(targets["boxes"], np.stack([x, y, x + w, y + h], axis=1))
        assert targets["labels"].tolist() == [a["category_id"] for a in listed]  # ids 1..3 already contiguous
    voc = make(root)
    voc.setup("fit")
    for (_, ours, _), (_, theirs, _) in zip(samples, voc.datasets["train"].samples, strict=True):
        np.testing.assert_array_equal(ours["boxes"], theirs["boxes"])
        np.testing.assert_array_equal(ours["labels"], theirs["labels"])


def test_coco_reads_what_torchvision_reads(tmp_path):
    pytest.importorskip("pycocotools")  # torchvision's CocoDetection needs it
    root = voc_tree(tmp_path)
    dm = make(root, format="coco")
    dm.setup("fit")
    reference = CocoDetection(str(root / "JPEGImages"), str(root / "annotations_train.json"))
    samples = dm.datasets["train"].samples
    assert [name for _, _, name in samples] == [str(i) for i in reference.ids]
    for (_, targets, _), (_, listed) in zip(samples, reference, strict=True):
        x, y, w, h = np.array([a["bbox"] for a in listed], dtype=np.float32).T
        np.testing.assert_array_equal(targets["boxes"], np.stack([x, y, x + w, y + h], axis=1))
        label_of = {category: label for label, category in enumerate(sorted(reference.coco.cats), 1)}
        assert targets["labels"].tolist() == [label_of[a["category_id"]] for a in listed]


def test_coco_category_ids_map_to_contiguous_labels(tmp_path):
    categories = [{"id": 42, "name": "kite"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    annotations = [
        {"id": 1, "image_id": 100, "category_id": 42, "bbox": [1, 2, 3, 4], "iscrowd": 0},
        {"id": 2, "image_id": 100, "category_id": 3, "bbox": [0, 0, 16, 12], "iscrowd": 1},
        {"id": 3, "image_id": 101, "category_id": 7, "bbox": [2.5, 1, 4, 5], "iscrowd": 0},
    ]  # image 102 has no annotation
    dm = make(coco_tree(tmp_path / "coco", annotations, categories))
    assert dm.format == "coco" and dm.class_names == ["background", "cat", "dog", "kite"] and dm.num_classes == 4
    dm.setup("fit")
    by_id = {name: targets for _, targets, name in dm.datasets["train"].samples}
    assert by_id["100"]["labels"].tolist() == [3, 1] and by_id["100"]["iscrowd"].tolist() == [False, True]
    np.testing.assert_array_equal(by_id["100"]["boxes"], [[1, 2, 4, 6], [0, 0, 16, 12]])
    assert by_id["101"]["labels"].tolist() == [2]
    np.testing.assert_array_equal(by_id["101"]["boxes"], [[2.5, 1, 6.5, 6]])
    empty = dm.datasets["val"][2]["target"]
    assert empty["image_id"] == "102" and empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert dm.datasets["val"][0]["target"]["iscrowd"].tolist() == [False, True]
    with pytest.raises(DataError, match="data.class_names has 2 names"):
        make(tmp_path / "coco", class_names=["background", "cat"])


def test_training_flip_and_resize_keep_boxes_aligned(tmp_path):
    root = voc_tree(tmp_path)
    dm = make(root, hflip=True)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.dataset(dm.datasets["train"].samples)
    flip = next(t for t in train.transform.transforms if isinstance(t, v2.RandomHorizontalFlip))
    flip.p = 1.0
    flipped, plain = train[0], val[0]
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    x1, y1, x2, y2 = plain["target"]["boxes"].unbind(1)
    assert torch.equal(flipped["target"]["boxes"], torch.stack([64 - x2, y1, 64 - x1, y2], dim=1))
    assert torch.equal(flipped["target"]["labels"], plain["target"]["labels"])

    resized = make(root, image_size=32)  # evaluation resize: everything halves
    resized.setup("fit")
    small = resized.datasets["train"].samples[0]
    item = resized.dataset([small])[0]
    assert item["image"].shape == (3, 32, 32) and item["target"]["orig_size"] == (64, 64)
    assert torch.allclose(item["target"]["boxes"], plain["target"]["boxes"] / 2)
    zoomed = make(root, scale_range=(0.5, 0.5), hflip=False)  # training zoom about the centre, same canvas
    zoomed.setup("fit")
    item = zoomed.datasets["train"][0]
    assert item["image"].shape == (3, 64, 64)
    assert torch.allclose(item["target"]["boxes"], (plain["target"]["boxes"] - 32) / 2 + 32, atol=1)


def test_training_drops_boxes_shrunk_below_a_pixel_with_their_flags(tmp_path):
    root = voc_tree(tmp_path)
    (root / "Annotations" / "000001.xml").write_text(
        voc_xml([("circle", (1, 1, 40, 40), 0), ("square", (50, 50, 51, 51), 1)])
    )
    dm = make(root, image_size=16)
    dm.setup("fit")
    target = dm.datasets["train"][0]["target"]  # the 2 px square becomes half a pixel
    assert target["labels"].tolist() == [1] and target["difficult"].tolist() == [False] and len(target["iscrowd"]) == 1
    assert len(dm.dataset(dm.datasets["train"].samples)[0]["target"]["boxes"]) == 2  # evaluation keeps it


def test_difficult_flag_is_kept(tmp_path):
    root = voc_tree(tmp_path)
    (root / "Annotations" / "000002.xml").write_text(
        voc_xml([("circle", (1, 1, 10, 10), 1), ("triangle", (5, 5, 30, 20), 0)])
    )
    dm = make(root)
    dm.setup("fit")
    target = dm.datasets["train"][1]["target"]
    assert target["difficult"].tolist() == [True, False] and target["labels"].tolist() == [1, 3]
    assert target["boxes"].tolist() == [[0, 0, 10, 10], [4, 4, 30, 20]]


def test_batches_stack_same_size_images_and_list_targets(tmp_path):
    dm = make(voc_tree(tmp_path), batch_size=2)
    dm.setup("fit")
    batch = first_batch(dm)
    assert batch["image"].shape == (2, 3, 64, 64) and batch["name"] == ["000005", "000006"]
    assert [t["image_id"] for t in batch["target"]] == batch["name"] and batch["errors"] == []
    assert batch["target"][1]["boxes"].shape[1] == 4
    # The image is normalised: undoing it gives back the JPEG's pixels.
    pixels = np.asarray(Image.open(dm.datasets["val"].samples[0][0]), dtype=np.float32) / 255
    torch.testing.assert_close(batch["image"][0] * STD + MEAN, torch.from_numpy(pixels).permute(2, 0, 1))
    other = {"image": torch.zeros(3, 8, 10), "target": {}, "name": "b", "path": "b", "error": "", "skipped": [],
             "orig_size": (8, 10)}  # fmt: skip
    mixed = collate_detection([dm.datasets["val"][0], other])
    assert isinstance(mixed["image"], list) and [tuple(i.shape) for i in mixed["image"]] == [(3, 64, 64), (3, 8, 10)]
    assert mixed["orig_size"] == [(64, 64), (8, 10)]  # the file's size, to map predictions back to its pixels
    predict = first_batch(dm, "predict")  # no test split: val's images, no targets
    assert "target" not in predict and predict["name"] == ["000005", "000006"]
    assert predict["orig_size"] == [(64, 64), (64, 64)]
    loose = tmp_path / "loose" / "deep"
    loose.mkdir(parents=True)
    Image.new("RGB", (10, 12)).save(loose / "x.png")
    other = make(dm.root, predict_dir=str(tmp_path / "loose"))
    other.setup("predict")
    assert first_batch(other, "predict")["name"] == ["deep/x"]


def test_malformed_xml_and_json_name_the_file(tmp_path):
    root = voc_tree(tmp_path)
    xml = root / "Annotations" / "000003.xml"
    xml.write_text("<annotation><object><name>circle</name>")
    with pytest.raises(DataError, match=re.escape(f"cannot parse VOC annotation {xml}")):
        make(root).setup("fit")
    annotation = root / "annotations_val.json"
    annotation.write_text('{"images": [')
    with pytest.raises(DataError, match=re.escape(f"cannot parse COCO annotation file {annotation}")):
        make(root, format="coco").setup("fit")


def test_unknown_class_name_names_the_file_the_name_and_the_classes(tmp_path):
    root = voc_tree(tmp_path)
    xml = root / "Annotations" / "000002.xml"
    xml.write_text(voc_xml([("hexagon", (1, 1, 10, 10), 0)]))
    with pytest.raises(DataError, match=re.escape(f"{xml}: object 1 is a 'hexagon', not one of the classes")) as error:
        make(root).setup("fit")
    assert "['circle', 'square', 'triangle']" in str(error.value)


def test_degenerate_box_names_the_file_and_the_box(tmp_path):
    root = voc_tree(tmp_path)
    xml = root / "Annotations" / "000004.xml"
    xml.write_text(voc_xml([("square", (1, 1, 10, 10), 0), ("circle", (20, 5, 18, 9), 0)]))
    with pytest.raises(
        DataError, match=re.escape(f"{xml}: object 2 ('circle') box (xmin, ymin, xmax, ymax) = (20, 5, 18, 9)")
    ):
        make(root).setup("fit")
    annotation = root / "annotations_train.json"
    coco = json.loads(annotation.read_text())
    coco["annotations"][0]["bbox"] = [3, 4, 0, 5]
    annotation.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"annotation 1 bbox \[x, y, w, h\] = \[3, 4, 0, 5\] is degenerate"):
        make(root, format="coco").setup("fit")


def test_box_outside_the_image_is_clipped_with_a_warning(tmp_path, caplog):
    root = voc_tree(tmp_path)
    xml = root / "Annotations" / "000001.xml"
    xml.write_text(voc_xml([("triangle", (50, 1, 80, 64), 0), ("square", (1, 1, 9, 9), 0)]))
    dm = make(root)
    with caplog.at_level(logging.WARNING, logger="lit_models.datamodules.detection"):
        dm.setup("fit")
    assert str(xml) in caplog.text and "object 1 ('triangle')" in caplog.text and "clipped" in caplog.text
    np.testing.assert_array_equal(dm.datasets["train"].samples[0][1]["boxes"], [[49, 0, 64, 64], [0, 0, 9, 9]])
    xml.write_text(voc_xml([("triangle", (70, 1, 80, 64), 0)]))
    with pytest.raises(DataError, match=re.escape(f"{xml}: object 1 ('triangle')") + ".* entirely outside"):
        make(root).setup("fit")


def test_missing_image_fails_at_setup_naming_the_source_and_the_file(tmp_path):
    root = voc_tree(tmp_path)
    (root / "JPEGImages" / "000006.jpg").unlink()
    listing, missing = root / "ImageSets" / "Main" / "val.txt", root / "JPEGImages" / "000006.jpg"
    with pytest.raises(DataError, match=re.escape(f"{listing} line 2 names '000006', but {missing} does not exist")):
        make(root).setup("fit")
    annotation = root / "annotations_val.json"
    with pytest.raises(DataError, match=re.escape(f"{annotation} names image '000006.jpg' (id 6), but {missing}")):
        make(root, format="coco").setup("fit")


def test_undecodable_image_is_raised_in_the_main_process(tmp_path):
    root = voc_tree(tmp_path)
    bad = root / "JPEGImages" / "000005.jpg"
    bad.write_bytes(b"not a jpeg")
    dm = make(root, batch_size=2)
    dm.setup("fit")
    with pytest.raises(DataError, match=re.escape(f"cannot decode image {bad}")):
        first_batch(dm)


def test_embedded_shapes_are_generated_by_prepare_data(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes, "DEFAULT_TRAIN", 4)
    monkeypatch.setattr(shapes, "DEFAULT_VAL", 2)
    monkeypatch.setattr(shapes, "DEFAULT_TEST", 2)
    dm = DetectionDataModule(cache_dir=str(tmp_path), num_workers=0, batch_size=2)
    assert dm.root == tmp_path / "shapes" and dm.class_names == CLASS_NAMES and dm.num_classes == 4
    with pytest.raises(DataError, match="call prepare_data"):
        dm.setup("fit")
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == 2 and len(dm.datasets["predict"]) == 2
    assert len(dm.test_dataloader().dataset) == 2
    batch = first_batch(dm, "train")
    assert batch["image"].shape == (2, 3, 128, 128) and len(batch["target"]) == 2
    assert all(set(t["labels"].tolist()) <= {1, 2, 3} and len(t["labels"]) >= 1 for t in batch["target"])


def test_splits_rename_the_lists_each_role_reads(tmp_path):
    root = voc_tree(tmp_path)
    lists = root / "ImageSets" / "Main"
    (lists / "trainval.txt").write_text((lists / "train.txt").read_text() + (lists / "val.txt").read_text())
    dm = make(root, splits={"train": "trainval", "val": None}, val_fraction=0.5)  # VOC 2007: val is in trainval
    dm.setup("fit")
    train = [name for *_, name in dm.datasets["train"].samples]
    val = [name for *_, name in dm.datasets["val"].samples]
    assert sorted(train + val) == [f"{i:06d}" for i in range(1, 7)] and len(val) == 3 and not set(train) & set(val)
    with pytest.raises(DataError, match="trainval2.txt does not exist"):
        make(root, splits={"train": "trainval2"}).setup("fit")
    with pytest.raises(ValueError, match="roles train, val and test"):
        make(root, splits={"training": "trainval"})
    with pytest.raises(ValueError, match="translate"):
        make(root, translate=1.5)
