"""Procedural scenes of circles, squares and triangles, exported in the PASCAL VOC layout (plus COCO JSON).

Segmentation and detection need data with masks and boxes, and nothing may be downloaded at run time, so this
module draws it: each scene is a noisy colour-gradient background with 1-4 shapes of random size, colour and
rotation that overlap and occlude each other. The export writes the same files a real VOC tree holds, so the
embedded default goes through the same on-disk code path as PASCAL VOC itself::

    root/JPEGImages/000001.jpg
    root/SegmentationClass/000001.png          palette PNG, class indices, VOC colour map
    root/Annotations/000001.xml                VOC XML, 1-based inclusive boxes
    root/ImageSets/Segmentation/{train,val[,test]}.txt
    root/ImageSets/Main/{train,val[,test]}.txt
    root/annotations_{train,val[,test]}.json   COCO, 0-based [x, y, w, h] boxes
    root/class_names.txt                       one name per line, index 0 (background) first

Run ``python -m lit_models.datamodules.sources.shapes OUT --train 4000 --val 100 --test 100`` to write one anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lit_models.datamodules.sources.export import COMPLETE_MARKER, export_once
from lit_models.datamodules.voc_layout import voc_palette

CLASS_NAMES = ["background", "circle", "square", "triangle"]
# Diameter of the circle each shape is inscribed in, in pixels. At least 16, two cells of a stride-8 map (FCN-8s'
# finest scores, and about a YOLO v1 cell at 128 px): smaller triangles are blobs no stride-8 model can shape.
MIN_EXTENT, MAX_EXTENT = 16, 60
MIN_VISIBLE_AREA = 20  # pixels; an object occluded below this is erased rather than labelled
MIN_SIZE = 32
JPEG_QUALITY = 95
# The embedded default that SegmentationDataModule (and detection) generate: enough scenes that a CPU-sized FCN
# generalises rather than memorises (with 1,000 it overfits: train IoU 0.95, val 0.75 on squares), few enough to
# generate in 13 seconds (85 MB; measured on 2 cores).
DEFAULT_TRAIN, DEFAULT_VAL, DEFAULT_TEST = 4000, 100, 100


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth gradient between two random colours along a random direction, plus gaussian noise.

    The texture keeps a net from segmenting by "anything not flat is an object". Returns size x size x 3 float.
    """
    start, end = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    ramp = xx * np.cos(angle) + yy * np.sin(angle)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())  # 0..1 whatever the direction
    gradient = start + ramp[..., None] * (end - start)  # size x size x 3
    return gradient + rng.normal(0, 12, (size, size, 3))


def _shape_mask(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """A boolean size x size mask of one shape, drawn aliased by PIL so image and mask agree pixel for pixel."""
    extent = rng.uniform(MIN_EXTENT, min(MAX_EXTENT, size - 2))
    radius = extent / 2
    # The centre keeps the whole circumscribed circle inside the image: no shape is truncated by the border,
    # which is what the VOC XML's <truncated>0</truncated> claims.
    cx, cy = rng.uniform(radius, size - 1 - radius, 2)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if CLASS_NAMES[label] == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=1)
    else:
        corners = 4 if CLASS_NAMES[label] == "square" else 3
        angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(corners) / corners
        draw.polygon([(cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in angles], fill=1)
    return np.asarray(canvas, dtype=bool)


def generate_scene(rng: np.random.Generator, size: int = 128) -> tuple[Image.Image, np.ndarray, list[dict]]:
    """Draw one scene of 1-4 overlapping shapes on a noisy gradient.

    Shapes are painted in order, so later ones occlude earlier ones; the mask and the boxes describe what is
    visible. An object whose visible part falls under ``MIN_VISIBLE_AREA`` pixels is erased (its leftover
    pixels go back to background in both image and mask) rather than kept as an unlabelled sliver or a box
    around a few pixels. The last shape is never occluded, so every scene holds at least one object.

    Args:
        rng: Source of all randomness; the scene is a pure function of its state.
        size: Width and height in pixels (at least 32).

    Returns:
        The RGB image; the size x size uint8 mask of class indices (0 background, 1-3 as ``CLASS_NAMES``);
        and one dict per visible object, in painting order, with ``label`` (1-3), ``box`` = (xmin, ymin,
        xmax, ymax) in 0-based pixels where xmin/ymin are inclusive and xmax/ymax EXCLUSIVE (so the width
        is xmax - xmin, as in torchvision), and ``area``, the number of visible pixels.
    """
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels to fit a {MIN_EXTENT} px shape, got {size}")
    background = _background(rng, size)
    image = background.copy()
    owner = np.full((size, size), -1, dtype=np.int64)  # which shape each pixel shows, -1 background
    labels = []
    for index in range(int(rng.integers(1, 5))):
        label = int(rng.integers(1, len(CLASS_NAMES)))
        shape = _shape_mask(rng, label, size)
        colour = rng.uniform(0, 255, 3)
        # Mild per-pixel noise on the shape too, so its colour alone is not a perfect cue.
        image[shape] = colour + rng.normal(0, 6, (int(shape.sum()), 3))
        owner[shape] = index
        labels.append(label)

    mask = np.zeros((size, size), dtype=np.uint8)
    objects = []
    for index, label in enumerate(labels):
        visible = owner == index
        area = int(visible.sum())
        if area < MIN_VISIBLE_AREA:
            image[visible] = background[visible]
            continue
        mask[visible] = label
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        objects.append({"label": label, "box": box, "area": area})
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB"), mask, objects


def _voc_xml(image_id: str, size: int, objects: list[dict]) -> bytes:
    """VOC annotation XML; boxes convert from 0-based half-open to VOC's 1-based inclusive pixel indices.

    A box covering 0-based columns xmin .. xmax-1 covers 1-based columns xmin+1 .. xmax, hence
    ``xmin + 1`` and ``xmax`` unchanged (likewise for y).
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    ET.SubElement(root, "segmented").text = "1"
    size_node = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_node, tag).text = str(value)
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = CLASS_NAMES[obj["label"]]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = "0"
        xmin, ymin, xmax, ymax = obj["box"]
        box = ET.SubElement(node, "bndbox")
        for tag, value in (("xmin", xmin + 1), ("ymin", ymin + 1), ("xmax", xmax), ("ymax", ymax)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def export_shapes(
    root: str | os.PathLike,
    num_train: int = DEFAULT_TRAIN,
    num_val: int = DEFAULT_VAL,
    num_test: int = 0,
    size: int = 128,
    seed: int = 0,
) -> Path:
    """Write a VOC-layout shapes dataset under ``root`` once; later calls return at once.

    Image ``k`` (ids "000001", ... with train first, then val, then test) is drawn from its own generator seeded with
    ``(seed, k)``, so the output is byte-identical for the same arguments and an image does not change when
    another split grows. The tree is built in a temporary sibling folder and renamed into place, so an
    interrupted export never leaves a half-written tree that later runs would trust.

    Args:
        root: Folder to create; must be absent, empty, or a finished export.
        num_train: Images in the train split.
        num_val: Images in the val split.
        num_test: Images in the test split (none by default: no test.txt, as in a VOC trainval release).
        size: Width and height of every image in pixels (at least 32).
        seed: Seed of the whole dataset.

    Returns:
        ``root``.
    """
    if min(num_train, num_val, num_test) < 0:
        raise ValueError(f"split sizes must be >= 0, got {num_train} train, {num_val} val, {num_test} test")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    palette = voc_palette()
    categories = [{"id": label, "name": name} for label, name in enumerate(CLASS_NAMES) if label > 0]

    def write(staging: Path) -> str:
        for folder in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation", "ImageSets/Main"):
            (staging / folder).mkdir(parents=True)
        (staging / "class_names.txt").write_text("".join(f"{name}\n" for name in CLASS_NAMES))
        number = annotation_id = 0
        splits = [("train", num_train), ("val", num_val)] + ([("test", num_test)] if num_test else [])
        for split, count in splits:
            ids, images, annotations = [], [], []
            for _ in range(count):
                number += 1
                image_id = f"{number:06d}"
                rng = np.random.default_rng([seed, number])
                image, mask, objects = generate_scene(rng, size)
                image.save(staging / "JPEGImages" / f"{image_id}.jpg", quality=JPEG_QUALITY)
                label_image = Image.fromarray(mask, mode="P")
                label_image.putpalette(palette)
                label_image.save(staging / "SegmentationClass" / f"{image_id}.png")
                (staging / "Annotations" / f"{image_id}.xml").write_bytes(_voc_xml(image_id, size, objects))
                ids.append(image_id)
                images.append({"id": number, "file_name": f"{image_id}.jpg", "width": size, "height": size})
                for obj in objects:
                    # COCO needs unique annotation ids; counting across both splits keeps them unique overall.
                    annotation_id += 1
                    xmin, ymin, xmax, ymax = obj["box"]
                    annotations.append(
                        {
                            "id": annotation_id,
                            "image_id": number,
                            "category_id": obj["label"],
                            "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
                            "area": obj["area"],
                            "iscrowd": 0,
                        }
                    )
            listing = "".join(f"{image_id}\n" for image_id in ids)
            (staging / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(listing)
            (staging / "ImageSets" / "Main" / f"{split}.txt").write_text(listing)
            coco = {"images": images, "annotations": annotations, "categories": categories}
            (staging / f"annotations_{split}.json").write_text(json.dumps(coco, indent=1) + "\n")
        return f"{num_train} train, {num_val} val, {num_test} test, size {size}, seed {seed}"

    return export_once(root, "shapes", write)


def main(argv: list[str] | None = None) -> None:
    """Command line: write a shapes dataset to the given folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to create (absent, empty, or a finished export)")
    parser.add_argument("--train", type=int, default=DEFAULT_TRAIN, help="images in the train split")
    parser.add_argument("--val", type=int, default=DEFAULT_VAL, help="images in the val split")
    parser.add_argument("--test", type=int, default=DEFAULT_TEST, help="images in the test split (0: none)")
    parser.add_argument("--size", type=int, default=128, help="image width and height in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole dataset")
    args = parser.parse_args(argv)
    root = export_shapes(
        args.out, num_train=args.train, num_val=args.val, num_test=args.test, size=args.size, seed=args.seed
    )
    print(f"shapes dataset in {root} ({(root / COMPLETE_MARKER).read_text().strip()})")


if __name__ == "__main__":
    main()
