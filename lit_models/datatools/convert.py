"""``lit-models data convert SOURCE --to FORMAT --output DIR``: detection annotations between VOC XML, COCO JSON
and YOLO labels, read by the package's own readers (what a DetectionDataModule reads, its errors naming the same
files) and written whole into a new folder; segmentation masks between palette and class-index PNGs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from lit_models.datamodules.files import DataError
from lit_models.datamodules.output_folder import building
from lit_models.datatools.boxes import DEFAULT_SPLITS, BoxSet
from lit_models.datatools.coco import is_coco, read_coco, write_coco
from lit_models.datatools.masks import convert_masks
from lit_models.datatools.voc import is_voc, read_voc, write_voc
from lit_models.datatools.yolo import is_yolo, read_yolo, write_yolo
from lit_models.errors import CommandParser, fail

# Box formats in the order "auto" recognises them: (recognise a folder, write a BoxSet there and return notes).
FORMATS: dict[str, tuple[Callable[[Path], bool], Callable[[BoxSet, Path], list[str]]]] = {
    "voc": (is_voc, write_voc),
    "coco": (is_coco, write_coco),
    "yolo": (is_yolo, write_yolo),
}
MASK_FORMS = ("index", "palette")

EPILOG = """\
What is written (always a new folder, built beside DIR and renamed into place):
  voc      Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/<split>.txt, class_names.txt
  coco     annotations/instances_<split>.json, images/<split>/
  yolo     images/<split>/, labels/<split>/<name>.txt, data.yaml (lit_models_flags.json: difficult and crowd boxes)
  index    every PNG mask of SOURCE as class indices (mode L), at the same relative path
  palette  every PNG mask of SOURCE as a palette PNG with VOC's colours (mode P), at the same relative path
Images are hard-linked where the file system allows, else copied. Train on the result with --data.root DIR.

examples:
  lit-models data convert VOCdevkit/VOC2007 --to coco --output voc2007-coco --splits trainval test
  lit-models data convert my-roboflow-export --to voc --output my-voc
  lit-models data convert labels/instances.json --splits val --to yolo --output my-yolo   (one COCO file)
  lit-models data convert VOCdevkit/VOC2012/SegmentationClass --to index --output masks-index"""


def main(argv: list[str]) -> None:
    """``lit-models data convert SOURCE --to FORMAT --output DIR [--from F] [--splits ...] [--class_names ...]``."""
    args = parse(argv)
    from lit_models.cli import show_package_logs

    show_package_logs()  # images without labels, read as having no objects
    source = Path(args.source).expanduser()
    if args.to in MASK_FORMS:
        if not source.is_dir():
            raise DataError(f"{source} is not a folder; give the folder of the masks.")
        with building(args.output, source, args.overwrite) as folder:
            count = convert_masks(source, folder, args.to)
        print(f"{args.output}: {count} mask(s) of {source} as {args.to} PNGs")
        return
    if source.is_file() and source.suffix == ".json":
        source_format, boxes = "coco", read_coco_file(source, args.splits, args.images)
    elif source.is_dir():
        source_format = args.source_format if args.source_format != "auto" else recognise(source)
        boxes = read_boxes(source, source_format, args.splits, args.class_names)
    else:
        raise DataError(f"{source} is neither a folder nor a COCO .json file; give the dataset's folder.")
    with building(args.output, source.parent if source.is_file() else source, args.overwrite) as folder:
        notes = FORMATS[args.to][1](boxes, folder)
    print(f"{args.output}: {boxes.summary()}, from {source_format} to {args.to}")
    for note in notes:
        print(f"note: {note}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = CommandParser(
        prog="lit-models data convert",
        description="Convert a detection folder between VOC, COCO and YOLO (boxes, class names in order, image "
        "sizes, difficult and crowd flags, images without objects: read back, the same boxes), or a folder of "
        "segmentation masks between palette and class-index PNGs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="the folder to convert: a VOC, COCO or YOLO dataset (or one COCO .json "
                        "file), or a folder of masks")  # fmt: skip
    parser.add_argument("--to", required=True, choices=[*FORMATS, *MASK_FORMS], help="the format to write")
    parser.add_argument("--output", required=True, help="the folder to write (absent or empty)")
    parser.add_argument("--from", dest="source_format", choices=["auto", *FORMATS], default="auto",
                        help="the source's box format (default: recognised from its files)")  # fmt: skip
    splits = ", ".join(DEFAULT_SPLITS)
    parser.add_argument("--splits", nargs="+", metavar="SPLIT",
                        help=f"the splits to convert (default: those of {splits} the source has)")  # fmt: skip
    parser.add_argument("--class_names", nargs="+", metavar="NAME",
                        help="a VOC source's classes, background first (default: its class_names.txt, else VOC's 20 "
                        "and background)")  # fmt: skip
    parser.add_argument("--images", help="a COCO file's image folder (default: found as DetectionDataModule finds it)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    args = parser.parse_args(argv)
    if args.images and not args.source.endswith(".json"):
        fail("--images goes with a COCO .json file as the source; a folder's images are found in it.")
    if args.class_names and (args.source.endswith(".json") or args.source_format not in ("auto", "voc")):
        fail("--class_names goes with a VOC source; COCO and YOLO name their classes themselves.")
    return args


def read_coco_file(path: Path, splits: list[str] | None, images: str | None) -> BoxSet:
    """One COCO file as one split (the one --splits names, else train), its images in ``images`` or found as
    DetectionDataModule finds them, from the file's folder (its parent for an annotations/ folder)."""
    if splits and len(splits) > 1:
        raise DataError(f"{path} is one split; name it with one --splits NAME (default: train), or give the folder.")
    root = path.parent.parent if path.parent.name == "annotations" else path.parent
    folder = Path(images).expanduser() if images else None
    if folder is not None and not folder.is_dir():
        raise DataError(f"--images {folder} is not a folder; give the folder that holds {path}'s images.")
    return read_coco(root, splits or ["train"], True, path, folder)


def recognise(source: Path) -> str:
    for name, (recognises, _) in FORMATS.items():
        if recognises(source):
            return name
    raise DataError(f"{source} is none of the detection formats: VOC (Annotations/, ImageSets/Main/), COCO (a split "
                    "file such as annotations/instances_train.json) or YOLO (data.yaml or classes.txt). Name its "
                    "format with --from, or, for masks, pass --to index or --to palette.")  # fmt: skip


def read_boxes(source: Path, source_format: str, splits: list[str] | None, class_names: list[str] | None) -> BoxSet:
    """The source's splits (those named, each required; else those of ``DEFAULT_SPLITS`` it has)."""
    if class_names and source_format != "voc":
        raise DataError(f"--class_names goes with a VOC source; {source} is {source_format}, which names its classes.")
    chosen, required = (splits, True) if splits else (list(DEFAULT_SPLITS), False)
    if source_format == "voc":
        boxes = read_voc(source, chosen, required, class_names)
    elif source_format == "coco":
        boxes = read_coco(source, chosen, required)
    else:
        boxes = read_yolo(source, chosen, required)
    if not boxes.splits:
        raise DataError(f"{source} has none of the splits {', '.join(chosen)}; name those it has with --splits.")
    return boxes
