"""Train the small-folder recipe on generated folders of a few hundred images; print a markdown table.

    python benchmarks/small_folders.py                   # every kind, seeds 0 1 2
    python benchmarks/small_folders.py --kinds shapes --seeds 0 --keep /tmp/folders

Each kind is a folder of your own as `classification/small_folder` expects it, written under a temporary folder:
root/train/<class>/*.png and root/val/<class>/*.png (a fifth of each class):

- shapes: an upright circle, triangle, square or star (turned by up to 15 degrees) of random size, place and colour
  on a random colour gradient with noise, 80-128 px a side, at 40 and at 80 images per class;
- stripes: gratings of 3, 6 or 12 cycles across the image, at random angles, phases and colours, with noise,
  80-128 px square;
- digits: handwritten 0-4 from the MNIST digits embedded in the package (28 px; the recipe as it is, mirroring
  included).

Every run is `lit-models fit --config classification/small_folder --data.init_args.root DIR --seed_everything S`,
one process at a time with one torch thread (the recipe's data loader worker is a second process), so two
runs never share the cores. The table gives the last epoch's val top-1 over the seeds (min-max) and the
fit process's wall time, start-up and validation included.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

RECIPE = "classification/small_folder"


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A random colour gradient plus pixel noise: H x W x 3 floats in 0-255."""
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = np.linspace(0, 1, width)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, height)[:, None, None]
    image = start + (end - start) * ramp * np.ones((height, width, 1))
    return image + rng.normal(0, 20, (height, width, 3))


def contrasting(rng: np.random.Generator, pixels: np.ndarray) -> tuple[int, int, int]:
    """A colour far from the background's mean, so every shape can be seen."""
    while True:
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - pixels.mean((0, 1))).sum() > 150:
            return tuple(int(c) for c in colour)


def shape(kind: str, rng: np.random.Generator) -> Image.Image:
    """One upright shape (turned by up to 15 degrees) of random size, place and colour on a random background."""
    width, height = rng.integers(96, 129, 2)
    pixels = background(rng, width, height)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    radius = rng.uniform(0.22, 0.4) * min(width, height)
    centre = (rng.uniform(radius, width - radius), rng.uniform(radius, height - radius))
    turn, colour = rng.uniform(-15, 15), contrasting(rng, pixels)
    draw = ImageDraw.Draw(image)
    if kind == "circle":
        draw.ellipse([centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius], fill=colour)
    elif kind == "star":  # five points, inner radius 0.4 of the outer
        corners = [(radius * (1 if k % 2 == 0 else 0.4), math.radians(turn - 90) + k * math.pi / 5) for k in range(10)]
        draw.polygon([(centre[0] + r * math.cos(a), centre[1] + r * math.sin(a)) for r, a in corners], fill=colour)
    else:
        draw.regular_polygon((*centre, radius), {"triangle": 3, "square": 4}[kind], rotation=turn, fill=colour)
    return image


def stripes(cycles: float, rng: np.random.Generator) -> Image.Image:
    """A grating of ``cycles`` periods across the image's width (±10 %): the same class at any image size."""
    size = int(rng.integers(80, 129))
    yy, xx = np.mgrid[:size, :size] / size
    angle, phase = rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
    wave = np.sin(2 * math.pi * cycles * rng.uniform(0.9, 1.1) * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
    dark, light = rng.uniform(0, 110, 3), rng.uniform(145, 255, 3)
    pixels = dark + (light - dark) * (wave[..., None] + 1) / 2 + rng.normal(0, 20, (size, size, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def digits(per_class: int, rng: np.random.Generator) -> dict[str, list[Image.Image]]:
    from lit_models.datamodules.sources.mnist5k import load_mnist5k

    pixels, labels = load_mnist5k()
    chosen = {str(d): rng.choice(np.flatnonzero(labels == d), per_class, replace=False) for d in range(5)}
    return {name: [Image.fromarray(pixels[i]) for i in indices] for name, indices in chosen.items()}


# kind -> its classes; then the folders the benchmark writes: (kind, images per class)
CLASSES = {"shapes": ["circle", "triangle", "square", "star"], "stripes": [3, 6, 12], "digits": [0, 1, 2, 3, 4]}
FOLDERS = [("shapes", 40), ("shapes", 80), ("stripes", 30), ("digits", 60)]


def write_folder(kind: str, per_class: int, root: Path, seed: int = 0) -> Path:
    """root/train/<class>/*.png and root/val/<class>/*.png, a fifth of each class in val."""
    rng = np.random.default_rng(seed)
    if kind == "shapes":
        images = {name: [shape(name, rng) for _ in range(per_class)] for name in CLASSES[kind]}
    elif kind == "stripes":
        images = {f"{c:02d}_cycles": [stripes(c, rng) for _ in range(per_class)] for c in CLASSES[kind]}
    else:
        images = digits(per_class, rng)
    for name, members in images.items():
        for index, image in enumerate(members):
            split = "val" if index < per_class // 5 else "train"
            (root / split / name).mkdir(parents=True, exist_ok=True)
            image.save(root / split / name / f"{index:03d}.png")
    return root


def fit(root: Path, seed: int, save_dir: Path, *extra: str) -> tuple[float, float]:
    """(the last epoch's val top-1, the fit's wall seconds)."""
    command = [sys.executable, "-m", "lit_models", "fit", "--config", RECIPE, "--data.init_args.root", str(root),
               "--seed_everything", str(seed), "--trainer.enable_progress_bar", "false",
               "--trainer.logger.init_args.save_dir", str(save_dir), *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    run = max(save_dir.glob("*/version_*"), key=lambda p: p.stat().st_mtime)
    with open(run / "metrics.csv") as handle:
        top1 = [float(row["val/acc_top1"]) for row in csv.DictReader(handle) if row.get("val/acc_top1")]
    return top1[-1], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", nargs="*", default=list(CLASSES), choices=list(CLASSES))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--keep", type=Path, help="write the folders and runs here and keep them")
    parser.add_argument("extra", nargs="*", help="more `lit-models fit` arguments, after --")
    args = parser.parse_args()
    rows = ["| kind | classes x images (train + val) | val top-1, last epoch (min-max over seeds) | fit time (mean) |",
            "|---|---|---|---:|"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for kind, per_class in [(kind, count) for kind, count in FOLDERS if kind in args.kinds]:
            folder = f"{kind}_{per_class}"
            root = write_folder(kind, per_class, base / folder)
            results = [fit(root, seed, base / "runs" / folder / str(seed), *args.extra) for seed in args.seeds]
            top1, seconds = zip(*results, strict=True)
            print(f"{folder}: top-1 {top1}, seconds {[round(s) for s in seconds]}", file=sys.stderr, flush=True)
            size = f"{len(CLASSES[kind])} x {per_class} ({per_class - per_class // 5} + {per_class // 5})"
            rows.append(f"| {kind} | {size} | {min(top1):.1%} - {max(top1):.1%} | {np.mean(seconds):.0f} s |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
