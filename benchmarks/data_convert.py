"""Round trips of `lit-models data convert` on the shapes scenes: what comes back, box for box; print a markdown table.

    python benchmarks/data_convert.py                    # 1,000 scenes (800 train, 100 val, 100 test)
    python benchmarks/data_convert.py --scenes 200 --keep /tmp/convert

Two sources, written under a temporary folder:

- VOC: the shapes scenes (integer pixel boxes) with one box in ten marked difficult and every tenth image's boxes
  removed (images without objects);
- COCO: the same scenes with every box edge moved by a random fraction of a pixel, rounded to two decimals as COCO's
  own boxes are, one box in ten marked crowd.

Each chain converts through the command's readers and writers (as `lit-models data convert` does, in this process)
and reads the end back with the package's reader; a box is identical when all four float32 edges, its label and its
flags are the same bits, in the same image, whose file and size are the same (VOC has no crowd flag: through VOC a
crowd box comes back difficult, so it is not identical). The masks (VOC's palette PNGs) go to
class indices and back; a pixel is identical when its value is. Seconds: each conversion (read, write) in turn.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lit_models.datamodules.output_folder import building
from lit_models.datamodules.sources.shapes import export_shapes
from lit_models.datatools.boxes import BoxSet
from lit_models.datatools.coco import read_coco, write_coco
from lit_models.datatools.masks import convert_masks
from lit_models.datatools.voc import read_voc, write_voc
from lit_models.datatools.yolo import read_yolo, write_yolo

SPLITS = ["train", "val", "test"]
FORMATS = {
    "voc": (lambda root: read_voc(root, SPLITS, False, None), write_voc),
    "coco": (lambda root: read_coco(root, SPLITS, False), write_coco),
    "yolo": (lambda root: read_yolo(root, SPLITS, False), write_yolo),
}
CHAINS = {"voc": [("coco", "voc"), ("yolo", "voc")], "coco": [("yolo", "coco"), ("voc", "coco")]}


def sources(scenes: BoxSet, folder: Path, rng: np.random.Generator) -> dict[str, Path]:
    """The VOC and COCO sources (module docstring), written by the command's own writers."""
    for images in scenes.splits.values():
        for index, image in enumerate(images):
            targets = image.targets
            if index % 10 == 9:
                for key in ("boxes", "labels", "difficult", "iscrowd"):
                    targets[key] = targets[key][:0]
            targets["difficult"] = rng.random(len(targets["labels"])) < 0.1
    write_voc(scenes, folder / "voc")
    for images in scenes.splits.values():
        for image in images:
            targets = image.targets
            height, width = targets["size"]
            moved = targets["boxes"] + rng.uniform(-0.5, 0.5, targets["boxes"].shape)
            moved = np.round(moved.clip(0, [width, height, width, height]), 2).astype(np.float32)
            keep = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
            for key in ("boxes", "labels", "difficult", "iscrowd"):
                targets[key] = (moved if key == "boxes" else targets[key])[keep]
            targets["difficult"] = np.zeros(keep.sum(), bool)
            targets["iscrowd"] = rng.random(keep.sum()) < 0.1
    write_coco(scenes, folder / "coco")
    return {"voc": folder / "voc", "coco": folder / "coco"}


def identical(first: BoxSet, second: BoxSet) -> tuple[int, int]:
    """(boxes identical in edges, label and flags, boxes in all) of two reads of the same images."""
    same = total = 0
    assert first.class_names == second.class_names and list(first.splits) == list(second.splits)
    for split, images in first.splits.items():
        others = {image.file: image for image in second.splits[split]}
        for image in images:
            other = others[image.file].targets
            assert tuple(other["size"]) == tuple(image.targets["size"])
            total += len(image.targets["labels"])
            if len(other["labels"]) != len(image.targets["labels"]):
                continue
            equal = (other["boxes"] == image.targets["boxes"]).all(axis=1)
            for key in ("labels", "difficult", "iscrowd"):
                equal &= other[key] == image.targets[key]
            same += int(equal.sum())
    return same, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=1000, help="scenes in all (80 %% train, 10 %% val, 10 %% test)")
    parser.add_argument("--keep", type=Path, help="write here instead of a temporary folder, and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.keep or Path(temporary)
        tenth = max(1, args.scenes // 10)
        shapes = export_shapes(folder / "shapes", args.scenes - 2 * tenth, tenth, tenth, size=128)
        roots = sources(FORMATS["voc"][0](shapes), folder, np.random.default_rng(0))
        print("| conversion | images | boxes | difficult | crowd | identical | seconds per step |")
        print("|---|---|---|---|---|---|---|")
        for start, chains in CHAINS.items():
            original = FORMATS[start][0](roots[start])
            images = sum(len(listed) for listed in original.splits.values())
            for chain in chains:
                current, current_form, seconds = roots[start], start, []
                for form in chain:
                    began = time.perf_counter()
                    boxes = FORMATS[current_form][0](current)
                    target = folder / f"{start}-{'-'.join(chain)}" / form
                    with building(target, current) as written:
                        FORMATS[form][1](boxes, written)
                    seconds.append(time.perf_counter() - began)
                    current, current_form = target, form
                same, total = identical(original, FORMATS[chain[-1]][0](current))
                counts = f"{original.count('difficult'):,} | {original.count('iscrowd'):,}"
                steps = " + ".join(f"{s:.2f}" for s in seconds)
                name = " -> ".join([start, *chain])
                print(f"| {name} | {images:,} | {total:,} | {counts} | {same:,} of {total:,} | {steps} |")
        masks = sorted((shapes / "SegmentationClass").glob("*.png"))
        began = time.perf_counter()
        with building(folder / "masks" / "index", shapes) as written:
            convert_masks(shapes / "SegmentationClass", written, "index")
        with building(folder / "masks" / "palette", shapes) as written:
            convert_masks(folder / "masks" / "index", written, "palette")
        elapsed = time.perf_counter() - began
        pixels = same = 0
        for mask in masks:
            first, back = np.array(Image.open(mask)), np.array(Image.open(folder / "masks" / "palette" / mask.name))
            pixels, same = pixels + first.size, same + int((first == back).sum())
        print(f"| palette -> index -> palette | {len(masks):,} masks | {pixels:,} pixels | | | {same:,} of "
              f"{pixels:,} | {elapsed:.2f} (both) |")  # fmt: skip


if __name__ == "__main__":
    main()
