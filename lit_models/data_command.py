"""``lit-models data VERB``: work on a recipe's data, one verb at a time (``VERBS``; a new verb is one row)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import NamedTuple

from lit_models.commands import load
from lit_models.errors import CommandParser, check_first_word, fail


class Verb(NamedTuple):
    about: str
    target: str  # "module:function", imported when the verb runs and called with the arguments after the verb


VERBS = {
    "prepare": Verb(
        "write a recipe's data (every split) as LitData shards that training streams: RECIPE --output DIR",
        "lit_models.data_command:prepare",
    ),
    "convert": Verb(
        "boxes between VOC, COCO and YOLO, masks between palette and index PNGs: SOURCE --to FORMAT --output DIR",
        "lit_models.datatools.convert:main",
    ),
    "show": Verb(
        "draw a split's images with their classes, masks or boxes into PNGs: RECIPE --output DIR",
        "lit_models.datatools.show:main",
    ),
    "stats": Verb(
        "count a recipe's classes, objects, box and image sizes (--plots DIR: their histograms): RECIPE",
        "lit_models.datatools.stats:main",
    ),
}


def overview() -> str:
    """What ``lit-models data --help`` prints: every verb with what it does."""
    width = max(map(len, VERBS))
    return "\n".join([
        "usage: lit-models data VERB [options]   (lit-models data VERB --help: that verb's options)",
        "",
        "Work on image data (classification, segmentation and detection): a recipe's, or a folder's (convert).",
        "",
        "verbs:",
        *(f"  {name:<{width}}  {verb.about}" for name, verb in VERBS.items()),
    ])  # fmt: skip


def main(argv: list[str]) -> None:
    """``lit-models data VERB [options]`` (``argv``: the arguments after ``data``)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return
    verb, rest = argv[0], argv[1:]
    check_first_word(verb, VERBS, "verb", "lit-models data VERB")
    load(VERBS[verb].target)(rest)


PREPARE_EPILOG = """\
The recipe's data arguments apply as in fit (--data.root DIR, --data.class_names, ...): the same splits, a held-out
validation split included, are written. Train on the result with --data.root DIR: the DataModule recognises the
shards by their description file and streams them through the recipe's own transforms.

examples:
  lit-models data prepare quickstart --output shards/digits
  lit-models data prepare classification/resnet50_imagenet --data.root /data/imagenet --output /fast/imagenet \\
      --shorter_side 256 --workers 16
  lit-models fit --config classification/resnet50_imagenet --data.root /fast/imagenet"""


def prepare(argv: list[str]) -> None:
    """``lit-models data prepare RECIPE --output DIR [--shorter_side N] [--workers K] [--overwrite] [--data.* ...]``."""
    parser = CommandParser(
        prog="lit-models data prepare",
        description="Write every split of a recipe's images (train, val, and test where there is one) with their "
        "labels, masks or boxes and file names into LitData's optimized format, one folder per split, and a "
        "description of them. JPEG images keep their bytes; an image shrunk by --shorter_side is re-encoded (JPEG "
        "at quality 90). Every sample is read first as a run reads it: a file that would stop a run stops this, "
        "all of them listed, and nothing is written.",
        epilog=PREPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="a recipe (name or YAML file) whose data to prepare")
    parser.add_argument("--output", required=True, help="the folder to write (absent or empty)")
    parser.add_argument("--shorter_side", type=int, help="shrink images to this shorter side (default: keep them)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="processes that read and encode images (default: every core)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    args, overrides = parser.parse_known_args(argv)
    if args.workers < 1:
        fail(f"--workers must be at least 1, got {args.workers}")
    from lit_models.cli import build_recipe, show_package_logs
    from lit_models.datamodules.shard_writer import prepare_shards

    show_package_logs()  # each split's progress
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no trainer start-up lines: nothing trains
    data = build_recipe(args.recipe, *overrides).datamodule
    description = prepare_shards(data, args.output, args.shorter_side, args.workers, args.overwrite)
    splits = ", ".join(f"{split} {count:,}" for split, count in description["splits"].items())
    print(f"{args.output}: {description['kind']} shards of {len(description['class_names'])} classes ({splits}); "
          f"train on them with --data.root {args.output}")  # fmt: skip
