"""The procedural shapes source: deterministic VOC/COCO export whose masks, boxes and files agree."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_models.datamodules.sources.shapes import CLASS_NAMES, COMPLETE_MARKER, export_shapes, generate_scene
from lit_models.datamodules.voc_layout import voc_palette

REPO = Path(__file__).resolve().parents[1]


def files_of(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    return export_shapes(tmp_path_factory.mktemp("shapes") / "voc", num_train=6, num_val=3, size=64, seed=0)


def test_same_seed_same_bytes_other_seed_differs(tmp_path, exported):
    again = export_shapes(tmp_path / "again", num_train=6, num_val=3, size=64, seed=0)
    other = export_shapes(tmp_path / "other", num_train=6, num_val=3, size=64, seed=1)
    first, second, third = files_of(exported), files_of(again), files_of(other)
    assert first == second
    assert {suffix for name in first for suffix in [Path(name).suffix]} >= {".jpg", ".png", ".xml", ".json", ".txt"}
    assert first.keys() == third.keys()
    assert first["JPEGImages/000001.jpg"] != third["JPEGImages/000001.jpg"]
    assert first["SegmentationClass/000001.png"] != third["SegmentationClass/000001.png"]


def test_voc_palette_matches_voc():
    palette = voc_palette()
    assert len(palette) == 256 * 3
    entries = [tuple(palette[3 * i : 3 * i + 3]) for i in range(256)]
    assert entries[:4] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert entries[15] == (192, 128, 128)  # VOC "person"
    assert entries[255] == (224, 224, 192)


def test_mask_png_is_palette_with_class_indices(exported):
    for path in sorted((exported / "SegmentationClass").glob("*.png")):
        with Image.open(path) as label:
            assert label.mode == "P"
            assert label.getpalette()[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
            values = set(np.unique(np.asarray(label)).tolist())
        assert values <= {0, 1, 2, 3}
        assert values - {0}, f"{path.name} holds no object"
        with Image.open(exported / "JPEGImages" / f"{path.stem}.jpg") as image:
            assert image.mode == "RGB" and image.size == label.size == (64, 64)


@pytest.mark.parametrize("seed", range(40))
def test_masks_and_visible_boxes_agree(seed):
    image, mask, objects = generate_scene(np.random.default_rng(seed), size=96)
    assert image.size == (96, 96) and mask.shape == (96, 96) and mask.dtype == np.uint8
    assert 1 <= len(objects) <= 4
    for label in range(1, len(CLASS_NAMES)):
        covered = np.zeros_like(mask, dtype=bool)
        for obj in objects:
            if obj["label"] == label:
                xmin, ymin, xmax, ymax = obj["box"]
                covered[ymin:ymax, xmin:xmax] = True
        assert not np.any((mask == label) & ~covered), f"class {label} pixels outside its boxes"
    for obj in objects:
        label, (xmin, ymin, xmax, ymax) = obj["label"], obj["box"]
        assert 0 <= xmin < xmax <= 96 and 0 <= ymin < ymax <= 96
        inside = mask[ymin:ymax, xmin:xmax] == label
        # Tight: every edge row/column of the (exclusive-max) box holds a pixel of the object's class.
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        assert obj["area"] >= 20 and inside.sum() >= obj["area"]


def test_voc_xml_and_coco_describe_the_same_boxes(exported):
    coco_boxes = {}
    for split in ("train", "val"):
        coco = json.loads((exported / f"annotations_{split}.json").read_text())
        assert coco["categories"] == [{"id": i, "name": n} for i, n in enumerate(CLASS_NAMES) if i > 0]
        names = {image["id"]: Path(image["file_name"]).stem for image in coco["images"]}
        for ann in coco["annotations"]:
            assert ann["iscrowd"] == 0 and ann["area"] > 0
            coco_boxes.setdefault(names[ann["image_id"]], []).append((CLASS_NAMES[ann["category_id"]], ann["bbox"]))
    ids = [json.loads((exported / f"annotations_{s}.json").read_text())["annotations"] for s in ("train", "val")]
    all_ids = [ann["id"] for anns in ids for ann in anns]
    assert len(all_ids) == len(set(all_ids))

    for path in sorted((exported / "Annotations").glob("*.xml")):
        tree = ET.parse(path).getroot()
        assert tree.findtext("filename") == f"{path.stem}.jpg"
        assert [tree.findtext(f"size/{tag}") for tag in ("width", "height", "depth")] == ["64", "64", "3"]
        voc = []
        for node in tree.iter("object"):
            xmin, ymin, xmax, ymax = (int(node.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax"))
            # 1-based inclusive -> 0-based x, y, w, h
            voc.append((node.findtext("name"), [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]))
        assert voc == coco_boxes[path.stem]
        # Also against the mask: the VOC box's 1-based inclusive edges hold pixels of its class.
        mask = np.asarray(Image.open(exported / "SegmentationClass" / f"{path.stem}.png"))
        for name, (x, y, w, h) in voc:
            inside = mask[y : y + h, x : x + w] == CLASS_NAMES.index(name)
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_split_files_list_exactly_the_written_ids(exported):
    written = sorted(path.stem for path in (exported / "JPEGImages").glob("*.jpg"))
    assert written == [f"{n:06d}" for n in range(1, 10)]
    for folder in ("Segmentation", "Main"):
        train = (exported / "ImageSets" / folder / "train.txt").read_text().split()
        val = (exported / "ImageSets" / folder / "val.txt").read_text().split()
        assert len(train) == 6 and len(val) == 3
        assert sorted(train + val) == written
    for kind, suffix in (("SegmentationClass", "png"), ("Annotations", "xml")):
        assert sorted(path.stem for path in (exported / kind).glob(f"*.{suffix}")) == written


def test_refuses_a_foreign_folder_and_leaves_it(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="nothing in it was changed"):
        export_shapes(foreign, num_train=1, num_val=1, size=32)
    assert files_of(foreign) == {"notes.txt": b"mine"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["foreign"]  # no staging folder left behind


def test_second_export_returns_without_rewriting(tmp_path):
    root = export_shapes(tmp_path / "voc", num_train=2, num_val=1, size=32)
    marker = root / COMPLETE_MARKER
    before, content = marker.stat().st_mtime_ns, files_of(root)
    assert export_shapes(root, num_train=50, num_val=50, size=32) == root
    assert marker.stat().st_mtime_ns == before and files_of(root) == content


def test_empty_existing_folder_is_accepted(tmp_path):
    (tmp_path / "voc").mkdir()
    root = export_shapes(tmp_path / "voc", num_train=1, num_val=1, size=32)
    assert (root / COMPLETE_MARKER).exists()


def test_command_line(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "lit_models.datamodules.sources.shapes", str(out), "--train", "3", "--val", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (out / COMPLETE_MARKER).exists()
    assert (out / "ImageSets" / "Segmentation" / "train.txt").read_text().split() == ["000001", "000002", "000003"]
    assert (out / "ImageSets" / "Main" / "val.txt").read_text().split() == ["000004", "000005"]
    with Image.open(out / "JPEGImages" / "000005.jpg") as image:
        assert image.size == (128, 128)
