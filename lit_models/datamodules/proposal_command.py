"""The command line that fills a dataset's region proposal cache ahead of training.

Run ``python -m lit_models.datamodules.proposal_command ROOT --mode fast --max-proposals 2000 --width 500
--workers 8``: it computes the missing proposals of every image under ROOT/JPEGImages (else ROOT) into the cache
``DetectionDataModule`` reads (``ProposalCache``, in ``proposals``), then, for a VOC layout, reports their recall
per split. A Trainer's ``prepare_data`` does the same for the images it reads.

The dependencies go one way: this module uses ``proposals`` and ``detection``; ``detection`` uses ``proposals``;
``proposals`` uses neither.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from lit_models.datamodules.files import DataError, list_images
from lit_models.datamodules.proposals import DEFAULT_K, MODES, ProposalCache


def _width(text: str) -> int | None:
    return None if text.lower() in ("none", "null", "orig") else int(text)


def main(argv: list[str] | None = None) -> None:
    """Command line: fill a dataset's proposal cache, as DetectionDataModule.prepare_data would."""
    parser = argparse.ArgumentParser(description="Compute and cache selective-search region proposals.")
    parser.add_argument("root", type=Path, help="dataset root (cache keys are image paths relative to it)")
    parser.add_argument(
        "--images",
        type=Path,
        nargs="+",
        help="folders whose images (any depth) to process (default: ROOT/JPEGImages if present, else ROOT)",
    )
    parser.add_argument("--proposal-dir", type=Path, help="cache folder (default: ROOT/proposals)")
    parser.add_argument("--mode", choices=MODES, default="fast", help="selective search mode")
    parser.add_argument("--max-proposals", type=int, default=2000, help="boxes kept per image")
    parser.add_argument("--width", type=_width, default=500, help="search width in pixels, or 'none' for as-is")
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="segmentation threshold k (smaller: more boxes)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.root.expanduser()
    folders = args.images or [root / "JPEGImages" if (root / "JPEGImages").is_dir() else root]
    images = [path for folder in folders for path in list_images(folder.expanduser())]
    if not images:
        raise SystemExit(f"no images under {', '.join(map(str, folders))}")
    cache = ProposalCache(
        args.proposal_dir or root / "proposals", root, args.mode, args.max_proposals, args.width, args.k
    )
    try:
        computed = cache.compute(images, workers=args.workers)
    except DataError as error:
        raise SystemExit(f"error: {error}") from error
    print(f"{computed} of {len(images)} images computed; proposals in {cache.directory}")
    if (root / "Annotations").is_dir() and (root / "ImageSets" / "Main").is_dir():
        report_voc_recall(root, args)


def report_voc_recall(root: Path, args: argparse.Namespace) -> None:
    """Recall of the proposals per split of a VOC layout: the ceiling of any detector that classifies them."""
    # Imported here, not at the top: the spawned search workers re-import this module (it is __main__ under
    # ``python -m``), and this keeps torch and Lightning out of every one of them. No import circle is involved.
    from lit_models.datamodules.detection import DetectionDataModule

    proposal_dir = str(args.proposal_dir) if args.proposal_dir else None
    data = DetectionDataModule(str(root), format="voc", proposals=args.mode, max_proposals=args.max_proposals,
                               proposal_width=args.width, proposal_k=args.k, proposal_dir=proposal_dir)  # fmt: skip
    try:
        report = data.compute_proposals(("train", "val", "test"))
    except DataError as error:
        raise SystemExit(f"error: {error}") from error
    for role, stats in report.items():
        print(f"{role}: {stats}")


if __name__ == "__main__":
    main()
