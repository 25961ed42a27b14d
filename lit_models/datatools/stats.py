"""``lit-models data stats RECIPE``: what a recipe's data holds, read from its annotations (no image decoded: sizes
from the image headers or the annotations): images, objects or mask pixels per class, objects per image, box sizes
and aspect ratios, image sizes, as tables; ``--plots DIR`` draws their histograms."""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lit_models.datamodules.box_annotations import header_size
from lit_models.datamodules.output_folder import building
from lit_models.datamodules.segmentation import IGNORE_INDEX, load_mask
from lit_models.datatools.recipe_data import SPLITS, recipe_splits
from lit_models.errors import CommandParser

EPILOG = """\
examples:
  lit-models data stats detection/faster_rcnn_voc --data.root VOCdevkit/VOC2007
  lit-models data stats segmentation/fcn8s_voc --data.root VOCdevkit/VOC2012 --split train --plots voc-stats"""
QUANTILES = (0, 5, 50, 95, 100)


@dataclass
class SplitStats:
    """One split counted: per class (objects, or mask pixels, or images) and the images holding each class; per
    image its size (H, W) and number of objects; per box its width and height in pixels."""

    per_class: np.ndarray
    images_with: np.ndarray
    sizes: list[tuple[int, int]] = field(default_factory=list)
    objects: list[int] = field(default_factory=list)
    box_sides: list[tuple[float, float]] = field(default_factory=list)
    flagged: Counter = field(default_factory=Counter)


def count(samples: list, task: str, num_classes: int) -> SplitStats:
    """A split's samples (the DataModule's) counted without decoding an image."""
    stats = SplitStats(np.zeros(num_classes + (task == "segmentation"), np.int64), np.zeros(num_classes, np.int64))
    for sample in samples:
        if task == "classification":
            stats.per_class[sample[1]] += 1
            stats.images_with[sample[1]] += 1
            stats.sizes.append(header_size(Path(sample[0])))
        elif task == "segmentation":
            mask = load_mask(sample[1], num_classes)
            pixels = np.bincount(mask.ravel(), minlength=IGNORE_INDEX + 1)
            stats.per_class += np.append(pixels[:num_classes], pixels[IGNORE_INDEX])  # the classes, then void
            stats.images_with += pixels[:num_classes] > 0
            stats.sizes.append(mask.shape)
        else:
            targets = sample[1]
            stats.per_class += np.bincount(targets["labels"], minlength=num_classes)
            stats.images_with += np.bincount(np.unique(targets["labels"]), minlength=num_classes).astype(bool)
            stats.sizes.append(tuple(targets["size"]))
            stats.objects.append(len(targets["labels"]))
            boxes = targets["boxes"]
            stats.box_sides += (boxes[:, 2:] - boxes[:, :2]).tolist()  # [width, height] per box
            stats.flagged.update({flag: int(np.count_nonzero(targets[flag])) for flag in ("difficult", "iscrowd")})
    return stats


def class_table(splits: dict[str, SplitStats], task: str, class_names: list[str]) -> str:
    """Rows of classes, a column per split: images (classification), objects and the images holding them
    (detection), the share of pixels and the images holding them (segmentation)."""
    what = {"classification": "images", "detection": "objects (images)", "segmentation": "% of pixels (images)"}[task]
    rows = [f"| class | {' | '.join(f'{split}: {what}' for split in splits)} |", "|---" * (len(splits) + 1) + "|"]
    first = 1 if task == "detection" else 0  # detection's label 0 is background, which no box has
    names = class_names[first:] + (["void (255)"] if task == "segmentation" else [])
    for index, name in enumerate(names, first):
        cells = []
        for stats in splits.values():
            if task == "classification":
                cells.append(f"{stats.per_class[index]:,}")
            elif task == "segmentation":
                share = 100 * stats.per_class[index] / max(1, stats.per_class.sum())
                cells.append(f"{share:.2f}" + (f" ({stats.images_with[index]:,})" if index < len(class_names) else ""))
            else:
                cells.append(f"{stats.per_class[index]:,} ({stats.images_with[index]:,})")
        rows.append(f"| {name} | {' | '.join(cells)} |")
    totals = [f"{len(stats.sizes):,} images" + (f", {sum(stats.objects):,} objects" if task == "detection" else "")
              for stats in splits.values()]  # fmt: skip
    rows.append(f"| all | {' | '.join(totals)} |")
    return "\n".join(rows)


def distribution_table(splits: dict[str, SplitStats]) -> str:
    """Quantiles of objects per image, box sides and aspect ratios, image sides, per split."""
    heading = " | ".join({0: "min", 50: "median", 100: "max"}.get(q, f"{q}%") for q in QUANTILES)
    rows = [f"| quantity | split | {heading} | mean |", "|---" * (len(QUANTILES) + 3) + "|"]
    for name, values in distributions(splits).items():
        for split, numbers in values.items():
            if len(numbers):
                cells = " | ".join(f"{v:,.3g}" for v in np.percentile(numbers, QUANTILES))
                rows.append(f"| {name} | {split} | {cells} | {np.mean(numbers):,.3g} |")
    return "\n".join(rows)


def distributions(splits: dict[str, SplitStats]) -> dict[str, dict[str, np.ndarray]]:
    """{quantity: {split: values}}: objects per image, box width, height, side sqrt(w h) and aspect w/h in pixels
    (detection), image width and height."""
    table: dict[str, dict[str, np.ndarray]] = {}
    for split, stats in splits.items():
        sides = np.array(stats.box_sides, dtype=np.float64).reshape(-1, 2)
        sizes = np.array(stats.sizes, dtype=np.float64).reshape(-1, 2)
        values = {"objects per image": np.array(stats.objects, dtype=np.float64), "box width": sides[:, 0],
                  "box height": sides[:, 1], "box side √(wh)": np.sqrt(sides[:, 0] * sides[:, 1]),
                  "box aspect w/h": sides[:, 0] / sides[:, 1], "image width": sizes[:, 1],
                  "image height": sizes[:, 0]}  # fmt: skip
        for name, numbers in values.items():
            table.setdefault(name, {})[split] = numbers
    return table


def report(splits: dict[str, SplitStats], task: str, class_names: list[str], source: str) -> str:
    """The whole printout: the splits, the class table, the distributions, the commonest image sizes."""
    listed = ", ".join(f"{split} {len(stats.sizes):,}" for split, stats in splits.items())
    lines = [f"{source}: {task} images ({listed})", "", class_table(splits, task, class_names), ""]
    for split, stats in splits.items():
        flags = ", ".join(f"{count:,} {flag}" for flag, count in stats.flagged.items() if count)
        if flags:
            lines.append(f"{split}: {flags} boxes (counted above)")
    lines += [distribution_table(splits), ""]
    for split, stats in splits.items():
        common = Counter(f"{w}x{h}" for h, w in stats.sizes).most_common(5)
        lines.append(f"{split} image sizes (W x H), commonest: {', '.join(f'{size} ({n:,})' for size, n in common)}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """``lit-models data stats RECIPE [--split S] [--plots DIR] [--overwrite] [--data.* ...]``."""
    parser = CommandParser(
        prog="lit-models data stats",
        description="Count what a recipe's data holds, from its annotations: images per class (classification), "
        "objects per class and per image, box sizes and aspect ratios (detection), the share of pixels per class "
        "(segmentation), image sizes (from the image headers or the annotations; no image is decoded).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="a recipe (name or YAML file) whose data to count")
    parser.add_argument("--split", choices=[*SPLITS, "all"], default="all", help="the split to count (default: all)")
    parser.add_argument("--plots", help="a folder (absent or empty) to draw the histograms into, as PNGs")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --plots folder")
    args, overrides = parser.parse_known_args(argv)
    data, samples = recipe_splits(args.recipe, overrides, SPLITS if args.split == "all" else (args.split,))
    task, names = data.spec.task, data.class_names
    splits = {split: count(listed, task, len(names)) for split, listed in samples.items()}
    print(report(splits, task, names, str(data.root)))
    if args.plots:
        from lit_models.datatools.stats_plots import draw_plots

        with building(args.plots, data.root, args.overwrite) as folder:
            written = draw_plots(splits, task, names, distributions(splits), folder)
        print(f"{args.plots}: {', '.join(written)}")
