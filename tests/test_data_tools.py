"""``lit-models data convert | show | stats``: conversions read back exactly (boxes, class order, sizes, flags,
empty images, boxes on the border), what the DataModules read, bad input named; samples drawn; data counted."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from lit_models.commands import main
from lit_models.datamodules.box_annotations import Targets
from lit_models.datamodules.detection import DetectionDataModule
from lit_models.datamodules.files import DataError
from lit_models.datamodules.voc_layout import voc_palette
from lit_models.datatools.boxes import AnnotatedImage, BoxSet
from lit_models.datatools.coco import read_coco, write_coco
from lit_models.datatools.show import draw
from lit_models.datatools.voc import read_voc, write_voc
from lit_models.datatools.yolo import FLAGS_FILE, read_yolo, write_yolo
from lit_models.drawing import image_tensor

SPLITS = ["train", "val", "test"]
# Not in the alphabetical order: a conversion keeps the class order (label k stays class k).
REORDERED = ["background", "triangle", "circle", "square"]


def convert(source: Path, to: str, output: Path, *extra: str) -> str:
    """``lit-models data convert SOURCE --to TO --output OUTPUT [EXTRA]``; what it prints."""
    arguments = ["data", "convert", str(source), "--to", to, "--output", str(output), *extra]
    return run_cli(*arguments, cwd=output.parent).stdout


def assert_same(first: BoxSet, second: BoxSet) -> None:
    """The same classes in order, splits, image files and sizes, and bit-identical boxes, labels and flags."""
    assert second.class_names == first.class_names
    assert list(second.splits) == list(first.splits)
    for split, images in first.splits.items():
        assert [image.file for image in second.splits[split]] == [image.file for image in images]
        for one, other in zip(images, second.splits[split], strict=True):
            assert tuple(other.targets["size"]) == tuple(one.targets["size"])
            for key in ("boxes", "labels", "difficult", "iscrowd"):
                assert other.targets[key].dtype == one.targets[key].dtype
                np.testing.assert_array_equal(other.targets[key], one.targets[key], err_msg=f"{split} {one.file} {key}")


@pytest.fixture(scope="module")
def voc_source(shapes_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shapes scenes with a difficult box, a box on all four borders, an image without objects, and the
    classes in a non-alphabetical order."""
    root = tmp_path_factory.mktemp("voc-source") / "VOC"
    shutil.copytree(shapes_tree, root)
    (root / "class_names.txt").write_text("\n".join(REORDERED) + "\n")
    first = root / "Annotations" / "000001.xml"
    first.write_text(first.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    border = ET.parse(root / "Annotations" / "000002.xml")
    whole = ET.fromstring("<object><name>circle</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
                          "<xmax>64</xmax><ymax>64</ymax></bndbox></object>")  # fmt: skip
    border.getroot().append(whole)
    border.write(root / "Annotations" / "000002.xml")
    empty = ET.parse(root / "Annotations" / "000005.xml")
    for node in empty.getroot().findall("object"):
        empty.getroot().remove(node)
    empty.write(root / "Annotations" / "000005.xml")
    return root


@pytest.fixture(scope="module")
def coco_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COCO export with float boxes (two decimals, as COCO's own), crowd boxes, category ids 3 and 7, PNG images
    of odd sizes, boxes on the borders and an image without objects."""
    root = tmp_path_factory.mktemp("coco-source")
    rng = np.random.default_rng(0)
    image_id = annotation_id = 0
    for split, count in (("train", 5), ("val", 2)):
        images, annotations = [], []
        (root / "images" / split).mkdir(parents=True)
        for _ in range(count):
            image_id += 1
            width, height = (int(side) for side in rng.integers(37, 90, 2))
            Image.new("RGB", (width, height), (40, 90, 10)).save(root / "images" / split / f"p{image_id}.png")
            images.append({"id": image_id, "file_name": f"p{image_id}.png", "width": width, "height": height})
            boxes = [] if image_id == 2 else [[0, 0, width, height]]  # the whole image, on every border
            for _ in range(0 if image_id == 2 else 6):
                x, y = rng.uniform(0, width - 3), rng.uniform(0, height - 3)
                boxes.append([x, y, rng.uniform(1, width - x), rng.uniform(1, height - y)])
            for index, box in enumerate(boxes):
                annotation_id += 1
                annotations.append({"id": annotation_id, "image_id": image_id, "category_id": [3, 7][index % 2],
                                    "bbox": [round(float(v), 2) for v in box], "iscrowd": int(index == 3)})  # fmt: skip
        categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
        coco = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").parent.mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


def test_voc_to_coco_to_voc_is_exact_and_what_the_datamodules_read(voc_source, tmp_path):
    source = read_voc(voc_source, SPLITS, True, None)
    assert source.count() == 26 and source.count("difficult") == 1 and source.class_names == REORDERED
    printed = convert(voc_source, "coco", tmp_path / "coco")
    assert "10 images (train 4, val 3, test 3), 26 boxes (1 difficult), 3 classes, from voc to coco" in printed
    coco = read_coco(tmp_path / "coco", SPLITS, True)
    assert_same(source, coco)
    convert(tmp_path / "coco", "voc", tmp_path / "voc")
    assert_same(source, read_voc(tmp_path / "voc", SPLITS, True, None))
    # The DetectionDataModule reads the converted folders as the source, difficult flags included.
    for root in (tmp_path / "coco", tmp_path / "voc"):
        data = DetectionDataModule(root=str(root), num_workers=0)
        data.setup("fit")
        assert data.class_names == REORDERED
        for (_, read, _), image in zip(data.datasets["train"].samples, source.splits["train"], strict=True):
            np.testing.assert_array_equal(read["boxes"], image.targets["boxes"])
            np.testing.assert_array_equal(read["difficult"], image.targets["difficult"])
    written = ET.parse(tmp_path / "voc" / "Annotations" / "000002.xml").getroot().findall("object")[-1]
    assert [written.findtext(f"bndbox/{tag}") for tag in ("xmin", "ymin", "xmax", "ymax")] == ["1", "1", "64", "64"]
    assert ET.parse(tmp_path / "voc" / "Annotations" / "000005.xml").getroot().findall("object") == []


def test_voc_to_yolo_to_voc_is_exact_with_the_flags_beside_the_labels(voc_source, tmp_path):
    source = read_voc(voc_source, SPLITS, True, None)
    printed = convert(voc_source, "yolo", tmp_path / "yolo")
    assert "note: 1 difficult box(es) written as ordinary labels" in printed
    description = (tmp_path / "yolo" / "data.yaml").read_text()
    assert "names:\n  0: triangle\n  1: circle\n  2: square\n" in description and "train: images/train" in description
    assert (tmp_path / "yolo" / "labels" / "val" / "000005.txt").read_text() == ""
    assert json.loads((tmp_path / "yolo" / FLAGS_FILE).read_text())["splits"] == {
        "train": {"000001.jpg": {"difficult": [0]}}
    }
    assert_same(source, read_yolo(tmp_path / "yolo", SPLITS, True))
    (tmp_path / "yolo" / "labels" / "val" / "000005.txt").unlink()  # no label file: no objects, as Ultralytics reads
    (tmp_path / "yolo" / "data.yaml").unlink()  # the older layout: classes.txt beside images/<split>/
    (tmp_path / "yolo" / "classes.txt").write_text("triangle\ncircle\nsquare\n")
    assert_same(source, read_yolo(tmp_path / "yolo", SPLITS, True))
    convert(tmp_path / "yolo", "voc", tmp_path / "voc")
    assert_same(source, read_voc(tmp_path / "voc", SPLITS, True, None))


def test_coco_to_yolo_to_coco_is_exact_for_float_and_crowd_boxes(coco_source, tmp_path):
    source = read_coco(coco_source, SPLITS, False)
    assert source.count() == 42 and source.count("iscrowd") == 6 and source.class_names == ["background", "cat", "dog"]
    convert(coco_source, "yolo", tmp_path / "yolo")
    convert(tmp_path / "yolo", "coco", tmp_path / "coco")
    assert_same(source, read_coco(tmp_path / "coco", SPLITS, False))
    # Each number is the shortest that reads back: COCO's two decimals stay two decimals.
    original = json.loads((coco_source / "annotations" / "instances_val.json").read_text())["annotations"]
    again = json.loads((tmp_path / "coco" / "annotations" / "instances_val.json").read_text())["annotations"]
    assert [a["bbox"][:2] for a in again] == [a["bbox"][:2] for a in original]
    assert [a["iscrowd"] for a in again] == [a["iscrowd"] for a in original]
    # One COCO file, as one split, its images found beside its annotations/ folder.
    one = coco_source / "annotations" / "instances_val.json"
    convert(one, "yolo", tmp_path / "one", "--splits", "val")
    assert_same(BoxSet(source.class_names, {"val": source.splits["val"]}), read_yolo(tmp_path / "one", SPLITS, False))
    # VOC holds JPEGs only: the PNGs are re-encoded, and the command says so.
    printed = convert(one, "voc", tmp_path / "voc", "--splits", "val")
    assert "note: 2 image(s) that were not JPEGs re-encoded as JPEG (quality 95)" in printed
    assert "note: 2 crowd box(es) written as difficult" in printed


@pytest.mark.parametrize("form", ["voc", "coco", "yolo"])
def test_arbitrary_float32_boxes_read_back_bit_for_bit(form, tmp_path):
    """Any float32 edges, on the borders too, in images of any size: the shortest decimal that reads back, else
    the exact one."""
    rng = np.random.default_rng(0)
    images = []
    for index in range(3):
        width, height = (int(side) for side in rng.integers(20, 3000, 2))
        Image.new("RGB", (width, height)).save(tmp_path / f"{index}.jpg")
        low = rng.uniform(0, [width - 1, height - 1], (60, 2))
        high = low + rng.uniform(0.01, 1, (60, 2)) * ([width, height] - low)
        boxes = np.concatenate([low, high], axis=1).astype(np.float32)
        boxes[:2] = [[0, 0, width, height], [width - 1, height - 1, width, height]]
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        # VOC has no crowd flag (a crowd box comes back difficult).
        flags = {"difficult": rng.random(len(boxes)) < 0.1, "iscrowd": rng.random(len(boxes)) < 0.1 * (form != "voc")}
        targets = Targets(boxes=boxes, labels=rng.integers(1, 3, len(boxes)), size=(height, width), **flags)
        images.append(AnnotatedImage(f"{index}.jpg", tmp_path / f"{index}.jpg", targets))
    boxes = BoxSet(["background", "a", "b"], {"train": images})
    written = tmp_path / form
    written.mkdir()
    {"voc": write_voc, "coco": write_coco, "yolo": write_yolo}[form](boxes, written)
    readers = {
        "voc": lambda: read_voc(written, ["train"], True, None),
        "coco": lambda: read_coco(written, ["train"], True),
        "yolo": lambda: read_yolo(written, ["train"], True),
    }
    assert_same(boxes, readers[form]())


def test_palette_to_index_to_palette_keeps_every_value(shapes_tree, tmp_path):
    masks = shapes_tree / "SegmentationClass"
    convert(masks, "index", tmp_path / "index")
    convert(tmp_path / "index", "palette", tmp_path / "palette")
    files = sorted(path.name for path in masks.glob("*.png"))
    assert files == sorted(path.name for path in (tmp_path / "palette").glob("*.png")) and len(files) == 10
    for name in files:
        first, index, back = (Image.open(folder / name) for folder in (masks, tmp_path / "index", tmp_path / "palette"))
        assert (first.mode, index.mode, back.mode) == ("P", "L", "P")
        np.testing.assert_array_equal(np.array(index), np.array(first))
        np.testing.assert_array_equal(np.array(back), np.array(first))
        assert back.getpalette() == voc_palette()


def error_of(*argv: str, capsys: pytest.CaptureFixture) -> str:
    """The last line a failing command prints, after checking it ends with status 2."""
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    assert stop.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_bad_input_is_named_and_nothing_is_half_written(voc_source, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "mine.txt").write_text("keep")
    message = error_of("data", "convert", str(voc_source), "--to", "coco", "--output", str(output), capsys=capsys)
    assert "is not empty" in message and "--overwrite" in message and (output / "mine.txt").exists()
    message = error_of("data", "convert", str(voc_source), "--to", "coco", "--output", str(voc_source / "out"),
                       capsys=capsys)  # fmt: skip
    assert "overlap" in message
    # A YOLO label line that is not a box: its file and line, and no output left behind.
    yolo = tmp_path / "yolo"
    convert(voc_source, "yolo", yolo)
    (yolo / "labels" / "train" / "000002.txt").write_text("0 0.5 0.5 0.2\n")
    message = error_of("data", "convert", str(yolo), "--to", "voc", "--output", str(tmp_path / "voc"), capsys=capsys)
    assert f"{yolo / 'labels' / 'train' / '000002.txt'} line 1 is '0 0.5 0.5 0.2'" in message
    assert not (tmp_path / "voc").exists() and not (tmp_path / ".voc.partial").exists()
    # An unknown class: the same message as the DetectionDataModule's.
    (voc_source / "class_names.txt").write_text("background\ncircle\nsquare\n")
    try:
        with pytest.raises(DataError) as read_error:
            DetectionDataModule(root=str(voc_source), num_workers=0).setup("fit")
        message = error_of("data", "convert", str(voc_source), "--to", "yolo", "--output", str(tmp_path / "y2"),
                           capsys=capsys)  # fmt: skip
        assert message == f"error: {read_error.value}"
    finally:
        (voc_source / "class_names.txt").write_text("\n".join(REORDERED) + "\n")
    assert "none of the detection formats" in error_of(
        "data", "convert", str(tmp_path / "out"), "--to", "voc", "--output", str(tmp_path / "v3"), capsys=capsys
    )
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.new("RGB", (4, 4)).save(rgb / "colours.png")
    message = error_of("data", "convert", str(rgb), "--to", "index", "--output", str(tmp_path / "i"), capsys=capsys)
    assert f"mask {rgb / 'colours.png'} is a mode-RGB image" in message


def test_the_data_command_lists_the_new_verbs(capsys):
    main(["data", "--help"])
    listed = capsys.readouterr().out
    assert all(f"  {verb}" in listed for verb in ("convert", "show", "stats"))
    for verb, option in (("convert", "--to"), ("show", "--count"), ("stats", "--plots")):
        with pytest.raises(SystemExit) as stop:
            main(["data", verb, "--help"])
        assert stop.value.code == 0 and option in capsys.readouterr().out


def test_show_draws_every_kind_of_annotation(shapes_tree, image_tree, tmp_path):
    recipes = (("detection/faster_rcnn_shapes", shapes_tree, 3), ("segmentation/fcn32s_shapes", shapes_tree, 2),
               ("quickstart", image_tree, 5))  # fmt: skip
    for recipe, root, count in recipes:
        output = tmp_path / recipe.replace("/", "_")
        printed = run_cli("data", "show", recipe, "--data.root", str(root), "--output", str(output), "--count",
                          str(count), "--split", "val", cwd=tmp_path).stdout  # fmt: skip
        drawn = sorted(output.glob("0*.png"))
        assert len(drawn) == count and (output / "samples.png").is_file() and f"{count} of the" in printed
        with Image.open(drawn[0]) as picture:  # each image at its own pixels (segmentation: image | overlay)
            side = 24 if recipe == "quickstart" else 64
            assert picture.size == ((2 * side + 4) if "fcn" in recipe else side, side)


def test_show_marks_difficult_boxes_on_the_image_itself(voc_source):
    first = read_voc(voc_source, ["train"], True, None).splits["train"][0]
    sample, name = draw((str(first.source), first.targets, "000001"), "detection", REORDERED)
    assert name == "000001" and sample.caption == "000001\n4 objects (1 difficult)"
    original = image_tensor(str(first.source))
    changed = (sample.image != original).any(dim=0)
    x1, y1, x2, y2 = (int(v) for v in first.targets["boxes"][0])  # the difficult box: outlined, one pixel wide
    assert changed[y1:y2, x1].all() and not changed[y1 + 2 : y2 - 2, x1 + 1].all()


def test_stats_counts_match_the_annotations(voc_source, image_tree, tmp_path, capsys):
    printed = run_cli("data", "stats", "detection/faster_rcnn_shapes", "--data.root", str(voc_source), "--plots",
                      str(tmp_path / "plots"), cwd=tmp_path).stdout  # fmt: skip
    source = read_voc(voc_source, SPLITS, True, None)
    for name in REORDERED[1:]:
        label = REORDERED.index(name)
        cells = [f"{sum(int((i.targets['labels'] == label).sum()) for i in source.splits[s]):,}" for s in SPLITS]
        row = next(line for line in printed.splitlines() if line.startswith(f"| {name} |"))
        assert [cell.split(" (")[0].strip() for cell in row.split("|")[2:-1]] == cells
    assert "train: 1 difficult boxes" in printed and "| objects per image | val | 0 |" in printed
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "box_aspects.png", "box_sides.png", "class_counts.png", "image_sizes.png", "objects_per_image.png"]  # fmt: skip
    printed = run_cli("data", "stats", "quickstart", "--data.root", str(image_tree), "--split", "test",
                      cwd=tmp_path).stdout  # fmt: skip
    assert "| circle | 3 |" in printed and "test image sizes (W x H), commonest: 24x24 (9)" in printed
    printed = run_cli("data", "stats", "segmentation/fcn32s_shapes", "--data.root", str(voc_source), "--split",
                      "train", cwd=tmp_path).stdout  # fmt: skip
    table = printed.split("% of pixels (images) |\n|---|---|\n")[1].split("\n| all |")[0].splitlines()
    shares = [float(line.split("|")[2].split()[0]) for line in table]
    assert len(shares) == 5 and abs(sum(shares) - 100) < 0.05  # background, three classes, void
    # Region proposals would be computed for every image first: refused, with what to add.
    message = error_of("data", "stats", "detection/rcnn_shapes", "--data.root", str(voc_source), capsys=capsys)
    assert message == "error: show and stats read no region proposals: add --data.proposals null to the command."
