"""The quickstart with and without the modern recipe's options, over seeds; print a markdown table.

    python benchmarks/modern_recipe.py [--seeds 0 1 2] [--threads 2]

The quickstart (a small-stem ResNet-18 x0.25 on the embedded MNIST digits, label smoothing 0.1, cosine decay, 30
epochs) against the same recipe with the options of torchvision's modern recipe that make sense at 28 px: an EMA of
the weights (Lightning's EMAWeightAveraging, every step), MixUp 0.2 / CutMix 1.0, RandAugment (TrivialAugmentWide's
rotations up to 135 degrees turn a 6 into a 9), random erasing 0.1 and no weight decay on the BatchNorm parameters;
the same epochs, data and seeds. Each fit then `test --ckpt_path best` runs in a fresh process, one at a time,
alternating the two recipes seed by seed (two trainings sharing 2 cores slow each other several-fold). Wall time is
the fit process's, start to end, validation included.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from cli_runs import REPO, fit_and_test, last_metric

QUICKSTART = REPO / "configs" / "quickstart.yaml"
# The EMA decay per step: an average over about the last 50 steps (under 2 of the 30 epochs of 28 steps), the share
# of the run that torchvision's adjusted decay averages over on ImageNet (about 4 % of its 600 epochs).
MODERN = [
    "--trainer.callbacks+=EMAWeightAveraging", "--trainer.callbacks.decay", "0.98",
    "--data.init_args.mixup_alpha", "0.2", "--data.init_args.cutmix_alpha", "1.0",
    "--data.init_args.auto_augment", "randaugment", "--data.init_args.random_erasing", "0.1",
    "--model.init_args.norm_weight_decay", "0.0",
]  # fmt: skip
RECIPES = {"quickstart": [], "quickstart + modern options": MODERN}


def run(extra: list[str], seed: int) -> tuple[float, float]:
    """(test top-1 of the best checkpoint, fit wall seconds) of one quickstart fit with ``extra`` options."""
    with tempfile.TemporaryDirectory() as tmp:
        seconds, _, test_run = fit_and_test(QUICKSTART, Path(tmp), "--seed_everything", str(seed), *extra)
        return last_metric(test_run, "test/acc_top1"), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds, each trains both recipes")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per training process")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in RECIPES}
    for seed in args.seeds:  # alternating: both recipes see the same state of a shared machine
        for name, extra in RECIPES.items():
            results[name].append(run(extra, seed))
            top1, seconds = results[name][-1]
            print(f"done {name} seed {seed}: {top1:.4f} in {seconds:.0f} s", file=sys.stderr)
    print(f"\nEmbedded MNIST digits (3,600 train / 400 val / 1,000 test), seeds {args.seeds}, {os.cpu_count()} CPU "
          f"cores, torch {torch.__version__}\n")  # fmt: skip
    print("| recipe | test top-1 per seed | range | mean | fit wall time (s), mean |")
    print("|---|---|---:|---:|---:|")
    means = {}
    for name, rows in results.items():
        top1 = [100 * top for top, _ in rows]
        means[name] = sum(seconds for _, seconds in rows) / len(rows)
        print(f"| {name} | {' / '.join(f'{t:.1f}' for t in top1)} % | {min(top1):.1f}–{max(top1):.1f} % | "
              f"{sum(top1) / len(top1):.2f} % | {means[name]:.0f} |")  # fmt: skip
    base, modern = means.values()
    print(f"\nFit time, modern / quickstart: {modern / base:.2f}×")


if __name__ == "__main__":
    main()
