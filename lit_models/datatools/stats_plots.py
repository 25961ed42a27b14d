"""``lit-models data stats --plots DIR``: the counts as pictures (matplotlib's Agg canvas, never pyplot): classes per
split, and histograms of objects per image, box sides and aspect ratios, and image sizes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

if TYPE_CHECKING:
    from lit_models.datatools.stats import SplitStats

# Histograms drawn, by file: the quantity (``stats.distributions``) and whether its bins are logarithmic.
HISTOGRAMS = {
    "objects_per_image.png": ("objects per image", False),
    "box_sides.png": ("box side √(wh)", True),
    "box_aspects.png": ("box aspect w/h", True),
}


def draw_plots(
    splits: dict[str, SplitStats],
    task: str,
    class_names: list[str],
    distributions: dict[str, dict[str, np.ndarray]],
    folder: Path,
) -> list[str]:
    """Write the pictures into ``folder``; return their file names."""
    written = [class_plot(splits, task, class_names, folder)]
    for file, (quantity, logarithmic) in HISTOGRAMS.items():
        values = {split: v for split, v in distributions[quantity].items() if len(v)}
        if values:
            histogram(values, quantity, logarithmic, folder / file)
            written.append(file)
    figure = Figure(figsize=(5, 5), dpi=100, layout="constrained")
    ax = figure.subplots()
    for split, stats in splits.items():
        sizes = np.array(stats.sizes).reshape(-1, 2)
        ax.scatter(sizes[:, 1], sizes[:, 0], s=8, alpha=0.5, label=split)
    ax.set(xlabel="image width (px)", ylabel="image height (px)", title="image sizes")
    ax.legend()
    figure.savefig(folder / "image_sizes.png")
    return [*written, "image_sizes.png"]


def class_plot(splits: dict[str, SplitStats], task: str, class_names: list[str], folder: Path) -> str:
    """Horizontal bars per class, one per split: images, objects, or the share of pixels."""
    first = 1 if task == "detection" else 0
    names = class_names[first:]
    figure = Figure(figsize=(7, 1.2 + 0.3 * len(names) * len(splits) ** 0.5), dpi=100, layout="constrained")
    ax = figure.subplots()
    height = 0.8 / len(splits)
    for offset, (split, stats) in enumerate(splits.items()):
        counts = stats.per_class[first : len(class_names)].astype(np.float64)
        if task == "segmentation":
            counts = 100 * counts / max(1, stats.per_class.sum())
        ax.barh(np.arange(len(names)) + offset * height, counts, height=height, label=split)
    ax.set_yticks(np.arange(len(names)) + 0.4 - height / 2, names)
    ax.invert_yaxis()
    unit = {"classification": "images", "detection": "objects", "segmentation": "% of pixels"}[task]
    ax.set(xlabel=unit, title=f"{unit} per class")
    ax.legend()
    figure.savefig(folder / "class_counts.png")
    return "class_counts.png"


def histogram(values: dict[str, np.ndarray], quantity: str, logarithmic: bool, path: Path) -> None:
    """One step histogram per split over shared bins (logarithmic ones for sizes and ratios)."""
    everything = np.concatenate(list(values.values()))
    low, high = everything.min(), everything.max()
    if logarithmic:
        bins = np.geomspace(max(low, 1e-3), max(high, low * 1.01, 1e-3 * 1.01), 41)
    else:
        bins = np.arange(low, high + 2) - 0.5  # one bin per whole number
    figure = Figure(figsize=(6, 3.5), dpi=100, layout="constrained")
    ax = figure.subplots()
    for split, numbers in values.items():
        ax.hist(numbers, bins=bins, histtype="step", linewidth=1.5, label=split)
    if logarithmic:  # ticks at 1, 2, 5 x 10^k, written as plain numbers
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=quantity, ylabel="count", title=quantity)
    ax.legend()
    figure.savefig(path)
