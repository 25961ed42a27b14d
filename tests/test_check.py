"""lit-models check RECIPE: every file of a user's folder decoded before a run, every problem listed."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_image_tree
from PIL import Image

from lit_models.datamodules.detection import DetectionDataModule
from lit_models.datamodules.files import DataError
from lit_models.datamodules.image_folder import ImageFolderDataModule
from lit_models.datamodules.segmentation import SegmentationDataModule
from lit_models.datamodules.sources.shapes import export_shapes


def test_check_lists_every_unreadable_image_and_the_command_fails(tmp_path):
    root = make_image_tree(tmp_path / "photos", {"train": 3, "test": 2})
    broken = [root / "train" / "circle" / "001.png", root / "test" / "square" / "000.png"]
    for path in broken:
        path.write_bytes(b"not an image")

    problems = ImageFolderDataModule(root=str(root), preset="small", image_size=32, num_workers=0).check()
    assert [problem.split(" ", 4)[:4] for problem in problems] == [
        ["train:", "cannot", "decode", "image"], ["test:", "cannot", "decode", "image"]
    ]  # fmt: skip
    assert all(str(path) in problem for path, problem in zip(broken, problems, strict=True))

    command = [sys.executable, "-m", "lit_models", "check", "classification/resnet18_digits"]
    options = ["--data.root", str(root), "--data.num_workers", "0"]
    result = subprocess.run([*command, *options], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "2 problem(s):" in result.stdout and str(broken[1]) in result.stdout
    assert "samples read (train " in result.stdout and "every file decoded" not in result.stdout

    for path in broken:
        path.unlink()
    result = subprocess.run([*command, *options], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "no problems found"


def test_check_lists_structural_problems_with_the_corrupt_files_where_fit_stops_at_the_first(tmp_path):
    root = make_image_tree(tmp_path / "photos", {"train": 3, "val": 2, "test": 2})
    empty = [root / "train" / "square", root / "val" / "circle"]
    for folder in empty:
        for path in folder.iterdir():
            path.unlink()
    corrupt = root / "test" / "stripes" / "001.png"
    corrupt.write_bytes(b"not an image")
    data = ImageFolderDataModule(root=str(root), preset="small", image_size=16, num_workers=0)
    problems = data.check()
    assert len(problems) == 3
    assert problems[0].startswith(f"class folder {empty[0]} holds no images")
    assert problems[1].startswith(f"class folder {empty[1]} holds no images")
    assert problems[2].startswith(f"test: cannot decode image {corrupt}")
    assert len(data.datasets["train"]) == 6 and len(data.datasets["test"]) == 6  # the rest is still read
    with pytest.raises(DataError, match=re.escape(f"class folder {empty[0]} holds no images")):
        ImageFolderDataModule(root=str(root), num_workers=0).setup("fit")

    (root / "test" / "triangle").mkdir()  # a class the training split does not have
    problems = ImageFolderDataModule(root=str(root), num_workers=0).check()
    assert len(problems) == 4 and re.match(rf"{re.escape(str(root / 'test'))} has different .*extra \['triangle'\]",
                                           problems[2])  # fmt: skip


def test_check_lists_missing_masks_and_bad_annotations_each_by_its_file(tmp_path):
    pairs = tmp_path / "pairs"
    for split, count in (("train", 3), ("val", 2)):
        for index in range(count):
            (pairs / split / "images").mkdir(parents=True, exist_ok=True)
            (pairs / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(pairs / split / "images" / f"{index}.png")
            Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(pairs / split / "masks" / f"{index}.png")
    (pairs / "class_names.txt").write_text("bg\nthing\n")
    missing = [pairs / "train" / "masks" / "1.png", pairs / "val" / "masks" / "0.png"]
    for mask in missing:
        mask.unlink()
    problems = SegmentationDataModule(root=str(pairs), num_workers=0).check()
    assert [problem.split(": ")[0].split(" has no mask")[0] for problem in problems] == [
        f"image {pairs / 'train' / 'images' / '1.png'}", f"image {pairs / 'val' / 'images' / '0.png'}"
    ]  # fmt: skip

    voc = export_shapes(tmp_path / "VOC", num_train=4, num_val=2, size=32)
    unparsable, degenerate = voc / "Annotations" / "000001.xml", voc / "Annotations" / "000003.xml"
    unparsable.write_text("<annotation><object>")
    degenerate.write_text(degenerate.read_text().replace("<xmax>", "<xmax>-", 1))
    (voc / "JPEGImages" / "000006.jpg").unlink()
    corrupt = voc / "JPEGImages" / "000005.jpg"
    corrupt.write_bytes(b"not a jpeg")
    problems = DetectionDataModule(root=str(voc), num_workers=0).check()
    assert len(problems) == 4
    assert problems[0].startswith(f"cannot parse VOC annotation {unparsable}")
    assert problems[1].startswith(f"{degenerate}: object 1")
    assert "names '000006', but" in problems[2] and problems[3].startswith(f"val: cannot decode image {corrupt}")
    with pytest.raises(DataError, match=re.escape(f"cannot parse VOC annotation {unparsable}")):
        DetectionDataModule(root=str(voc), num_workers=0).setup("fit")
