"""Draw the README's picture: held-out test samples of three families, as their recipes' `test` runs draw them.

    python benchmarks/readme_picture.py [--keep runs/picture] [--output docs/predictions.png]

Trains the quickstart (digits), segmentation/fcn8s_shapes and detection/faster_rcnn_shapes with their recipes
unchanged (about 35 minutes on 2 cores), tests each best checkpoint on its test split, and stacks the test
samples that each run's pictures callback wrote (``pictures/test_samples.png``) into one image.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from cli_runs import REPO, fit_and_test
from PIL import Image

RECIPES = {  # recipe: test samples drawn
    "quickstart": 8,
    "segmentation/fcn8s_shapes": 4,
    "detection/faster_rcnn_shapes": 4,
}


def stacked(pictures: list[Image.Image], width: int = 1000, gap: int = 12) -> Image.Image:
    """The pictures one under another, each scaled to ``width`` pixels, on white."""
    scaled = [picture.resize((width, round(picture.height * width / picture.width))) for picture in pictures]
    canvas = Image.new("RGB", (width, sum(p.height for p in scaled) + gap * (len(scaled) - 1)), "white")
    top = 0
    for picture in scaled:
        canvas.paste(picture, (0, top))
        top += picture.height + gap
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="keep the runs (checkpoints, pictures) in this folder")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "predictions.png")
    args = parser.parse_args()
    pictures = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe, samples in RECIPES.items():
            config = REPO / "configs" / f"{recipe}.yaml"
            fit_s, _, test_run = fit_and_test(config, args.keep or Path(tmp), "--plots_samples", str(samples))
            pictures.append(Image.open(test_run / "pictures" / "test_samples.png").convert("RGB"))
            print(f"done {recipe} in {fit_s:.0f} s: {test_run}", file=sys.stderr)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    stacked(pictures).save(args.output, optimize=True)
    print(f"wrote {args.output} ({np.prod(Image.open(args.output).size):,} pixels)")


if __name__ == "__main__":
    main()
