"""``lit-models data show RECIPE --output DIR``: a split's images drawn with their annotations as the DataModule
reads them (class name; mask overlay; boxes with class names, difficult and crowd boxes thin and marked), one PNG
per image at its own pixels and an overview of them all."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lit_models.datamodules.output_folder import building
from lit_models.datamodules.segmentation import load_mask
from lit_models.datatools.recipe_data import SPLITS, recipe_splits
from lit_models.drawing import draw_boxes, image_tensor, overlay_mask, side_by_side
from lit_models.errors import CommandParser, fail
from lit_models.pictures import Sample, sample_grid

EPILOG = """\
Writes DIR/NNN_<name>.png for each image (segmentation: the image and its mask overlay side by side) and
DIR/samples.png, all of them with captions. The recipe's data arguments apply as in fit (--data.root DIR, ...).

examples:
  lit-models data show detection/faster_rcnn_voc --data.root VOCdevkit/VOC2007 --output show-voc --count 8
  lit-models data show quickstart --split val --output show-digits"""


def main(argv: list[str]) -> None:
    """``lit-models data show RECIPE --output DIR [--split S] [--count N] [--seed K] [--overwrite] [--data.* ...]``."""
    parser = CommandParser(
        prog="lit-models data show",
        description="Draw images of a recipe's data with their annotations: classification images with their class, "
        "segmentation images with their mask over them, detection images with their boxes and class names "
        "(difficult and crowd boxes drawn thin and marked).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="a recipe (name or YAML file) whose data to draw")
    parser.add_argument("--output", required=True, help="the folder to write (absent or empty)")
    parser.add_argument("--split", choices=SPLITS, default="train", help="the split to draw (default: train)")
    parser.add_argument("--count", type=int, default=16, help="images to draw (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images chosen (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    args, overrides = parser.parse_known_args(argv)
    if args.count < 1:
        fail(f"--count must be at least 1, got {args.count}")
    data, splits = recipe_splits(args.recipe, overrides, (args.split,))
    samples = splits[args.split]
    chosen = sorted(np.random.default_rng(args.seed).choice(len(samples), min(args.count, len(samples)), False))
    drawn = [draw(samples[index], data.spec.task, data.class_names) for index in chosen]
    with building(args.output, data.root, args.overwrite) as folder:
        for number, (sample, name) in enumerate(drawn):
            Image.fromarray(sample.image.permute(1, 2, 0).numpy()).save(folder / f"{number:03d}_{file_part(name)}.png")
        Image.fromarray(sample_grid([sample for sample, _ in drawn])).save(folder / "samples.png")
    print(f"{args.output}: {len(drawn)} of the {len(samples):,} {args.split} images of {data.root}, and samples.png")


def draw(sample: tuple, task: str, class_names: list[str]) -> tuple[Sample, str]:
    """One sample drawn with its annotation, and its name."""
    image = image_tensor(sample[0])
    if task == "classification":  # named by its class folder and file, as two classes may hold a 000.png each
        name = f"{Path(sample[0]).parent.name}/{Path(sample[0]).stem}"
        label = sample[1]
        height, width = image.shape[-2:]
        whole = torch.tensor([[0.0, 0.0, float(width), float(height)]])  # the class name over a frame in its colour
        picture = draw_boxes(image, whole, torch.tensor([label]), class_names, width=1)
        return Sample(image=picture, caption=f"{name}\n{class_names[label]}"), name
    name = sample[2]
    if task == "segmentation":
        mask = torch.from_numpy(load_mask(sample[1], len(class_names)))
        present = [class_names[c] for c in mask.unique().tolist() if 0 < c < len(class_names)]
        picture = side_by_side(image, overlay_mask(image, mask, len(class_names)))
        return Sample(image=picture, caption=f"{name}\n{', '.join(present) or 'background only'}"), name
    targets = sample[1]
    picture, flagged = draw_targets(image, targets, class_names), []
    for flag, word in (("difficult", "difficult"), ("iscrowd", "crowd")):
        if count := int(np.count_nonzero(targets[flag])):
            flagged.append(f"{count} {word}")
    objects = f"{len(targets['labels'])} objects" + (f" ({', '.join(flagged)})" if flagged else "")
    return Sample(image=picture, caption=f"{name}\n{objects}"), name


def draw_targets(image: torch.Tensor, targets: Any, class_names: list[str]) -> torch.Tensor:
    """Boxes in their class's colour with the class name; difficult and crowd boxes thin, their names marked."""
    boxes, labels = torch.from_numpy(targets["boxes"]), torch.from_numpy(targets["labels"])
    difficult, crowd = torch.from_numpy(targets["difficult"]), torch.from_numpy(targets["iscrowd"])
    groups = ((~difficult & ~crowd, class_names, 2),
              (difficult & ~crowd, [f"{name} (difficult)" for name in class_names], 1),
              (crowd, [f"{name} (crowd)" for name in class_names], 1))  # fmt: skip
    for chosen, names, width in groups:
        image = draw_boxes(image, boxes[chosen], labels[chosen], names, width=width)
    return image


def file_part(name: str) -> str:
    """A sample's name as part of a file name (a name may hold folders)."""
    return re.sub(r"[^\w.-]+", "_", name)
