"""``lit-models check RECIPE [--data.* ...]``: decode every file of a recipe's data (each split, as a run would)
and list every problem before a long run, instead of stopping at the first bad batch."""

from __future__ import annotations

import argparse
import logging

from lit_models.datamodules.base import FileDataModule
from lit_models.datamodules.files import DataError


def main(argv: list[str]) -> None:
    """Build the recipe's DataModule with the overrides, as ``fit`` would, and check it; exit status 2 on problems."""
    parser = argparse.ArgumentParser(
        prog="lit-models check",
        description=__doc__.split("\n\n")[0],
        epilog="Example: lit-models check classification/resnet50_imagenet --data.root /data/photos",
    )
    parser.add_argument("recipe", help="a recipe (name or YAML file)")
    args, overrides = parser.parse_known_args(argv)
    from lit_models.cli import build_recipe

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no trainer start-up lines: nothing trains
    data = build_recipe(args.recipe, *overrides).datamodule
    if not isinstance(data, FileDataModule):
        raise DataError(f"check reads image files (classification, segmentation and detection data); "
                        f"{type(data).__name__}'s data is read and checked whole in setup, by fit itself.")  # fmt: skip
    problems = data.check()
    sizes = ", ".join(
        f"{split} {len(data.datasets[split]):,}" for split in ("train", "val", "test") if split in data.datasets
    )
    print(f"{type(data).__name__} at {data.root}: {sizes} samples, every file decoded")
    if problems:
        print(f"{len(problems)} problem(s):", *problems, sep="\n  ")
        raise SystemExit(2)
    print("no problems found")
