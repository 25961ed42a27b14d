"""Fast R-CNN on the shapes scenes trained at one scale against the paper's multi-scale training (each training
image's shorter side drawn from five scales, Fast R-CNN §2.4 and §5.2); test mAP@0.5 at the one test scale.

    python benchmarks/multiscale_training.py [--workdir DIR] [--train-scenes 800] [--epochs 5] [--seeds 0 1 2]
        [--threads 1]

configs/detection/fast_rcnn_shapes.yaml on the shapes scenes of benchmarks/hard_negative_mining.py (``--train-scenes``
train, 100 val, 100 test, the recipe's proposals; the same ``--workdir`` reuses them), for ``--epochs`` epochs (its
cosine schedule follows them), validation off, then ``test`` on the 100 test scenes at the recipe's 256 px (with its
truncated SVD), once as the recipe trains (shorter side 256) and once with ``--model.init_args.train_scales
[208,240,288,368,512]``: the paper's {480, 576, 688, 864, 1200} in the proportion of its 600-px test scale to the
recipe's 256. Runs one at a time in this process; the fit time is the training epochs' (validation off).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hard_negative_mining import shapes_scenes

import lit_models

SCALES = {"one scale (shorter side 256)": None, "multi-scale [208, 240, 288, 368, 512]": [208, 240, 288, 368, 512]}


def run(workdir: Path, root: Path, epochs: int, seed: int, scales: list[int] | None) -> tuple[float, float]:
    """(test mAP@0.5, fit seconds) of one training."""
    model, data, trainer = lit_models.recipe(
        "detection/fast_rcnn_shapes",
        seed_everything=seed,
        data={"root": str(root)},
        model={"train_scales": str(scales)} if scales else {},
        trainer={"max_epochs": str(epochs), "limit_val_batches": "0", "enable_progress_bar": "false",
                 "enable_model_summary": "false", "logger.init_args.save_dir": str(workdir / "runs")},
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - start
    return float(trainer.test(model, data, verbose=False)[0]["test/map_50"]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, help="keep the scenes, proposals and runs here")
    parser.add_argument("--train-scenes", type=int, default=800, help="training scenes (the recipe's data: 4,000)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (the recipe: 10)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or Path(temporary)
        root = shapes_scenes(workdir, args.train_scenes, 100)
        for seed in args.seeds:
            for name, scales in SCALES.items():
                results.setdefault(name, []).append(run(workdir, root, args.epochs, seed, scales))
                print(f"{name}, seed {seed}: {results[name][-1]}", file=sys.stderr)

    print(f"\nFast R-CNN (configs/detection/fast_rcnn_shapes.yaml), {args.train_scenes} train / 100 test scenes, "
          f"{args.epochs} epochs, seeds {args.seeds}; {args.threads} thread(s) on {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}.\n")  # fmt: skip
    print("| training scales | test mAP@0.5: mean (range over seeds) | fit (s, mean) |")
    print("|---|---|---:|")
    for name, runs in results.items():
        maps, seconds = [m for m, _ in runs], [s for _, s in runs]
        print(f"| {name} | {statistics.mean(maps):.3f} ({min(maps):.3f}-{max(maps):.3f}) | "
              f"{statistics.mean(seconds):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
