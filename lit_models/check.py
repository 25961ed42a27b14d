"""``lit-models check RECIPE [--data.* ...]``: list every problem of a recipe's data before a long run (the
structural ones, such as an empty class folder or a missing mask, and every file that does not decode, in each
split, as a run reads it), instead of stopping at the first one."""

from __future__ import annotations

import logging

from lit_models.datamodules.base import FileDataModule
from lit_models.datamodules.files import DataError
from lit_models.errors import CommandParser


def main(argv: list[str]) -> None:
    """Build the recipe's DataModule with the overrides, as ``fit`` would, and check it; exit status 2 on problems."""
    parser = CommandParser(
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
    sizes = {split: len(data.datasets[split]) for split in ("train", "val", "test") if split in data.datasets}
    listed = ", ".join(f"{split} {size:,}" for split, size in sizes.items())
    # Samples a structural problem left out are not among those read; each such problem is listed below.
    print(f"{type(data).__name__} at {data.root}: {sum(sizes.values()):,} samples read ({listed})")
    if problems:
        print(f"{len(problems)} problem(s):", *problems, sep="\n  ")
        raise SystemExit(2)
    print("no problems found")
