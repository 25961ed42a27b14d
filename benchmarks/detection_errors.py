"""YOLO v1's and Fast R-CNN's errors side by side, as YOLO's Fig. 4 compares them (Redmon et al. 2016, §4.2).

    python benchmarks/detection_errors.py --runs RUNS [--threads 2]

RUNS holds trained runs of configs/detection/yolov1_shapes and fast_rcnn_shapes, as `lit-models fit --config
detection/<recipe> --trainer.logger.init_args.save_dir RUNS` (or benchmarks/detection.py --keep RUNS and
benchmarks/proposal_detection.py --keep RUNS) leave them. The newest run of each is tested again, in a fresh process
one at a time, from its best checkpoint with the configuration it was trained with (its config.yaml): on the 100
held-out test scenes for the shipped recipes. The table gives each category's share of each class's top N
detections (N: the class's objects in the split), averaged over the classes (``test/errors/*``), beside the
paper's VOC 2007 numbers. The shapes have no similar classes, so "similar" stays 0 there.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cli_runs import last_metric, run_checkpoints, run_command

from lit_models.detection.errors import CATEGORIES

DETECTORS = {"yolov1_shapes": "YOLO v1", "fast_rcnn_shapes": "Fast R-CNN"}
# YOLO §4.2, Fig. 4 (VOC 2007 test, Hoiem et al.'s tool): each category's share, in %.
PAPER = {
    "yolov1_shapes": {"correct": 65.5, "localization": 19.0, "similar": 6.75, "other": 4.0, "background": 4.75},
    "fast_rcnn_shapes": {"correct": 71.6, "localization": 8.6, "similar": 4.3, "other": 1.9, "background": 13.6},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="the folder holding <recipe>/version_N runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the test processes")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    checkpoints = run_checkpoints(args.runs)
    measured = {}
    for recipe in DETECTORS:
        if recipe not in checkpoints:
            raise SystemExit(f"{args.runs / recipe}: no trained run; train it first: lit-models fit --config "
                             f"detection/{recipe} --trainer.logger.init_args.save_dir {args.runs}")  # fmt: skip
        run = checkpoints[recipe].parents[1]
        # Its own configuration (the run's config.yaml), so a run trained with other options is rebuilt as it was.
        run_command("test", run / "config.yaml", args.runs, "--ckpt_path", str(checkpoints[recipe]))
        tested = run / "test"
        measured[recipe] = {name: last_metric(tested, f"test/errors/{name}") for name in CATEGORIES}
        measured[recipe]["map_50"] = last_metric(tested, "test/map_50")
        print(f"tested {run}", file=sys.stderr)

    print("\nEach class's top N test detections (N: its objects), by category, averaged over the classes (%); "
          "shapes: this run's test split; paper: VOC 2007 test (YOLO, Fig. 4)\n")  # fmt: skip
    names = list(DETECTORS.values())
    print(f"| category | {' | '.join(f'{name} (shapes)' for name in names)} | "
          f"{' | '.join(f'{name} (paper)' for name in names)} |")  # fmt: skip
    print("|---|" + "---:|" * (2 * len(names)))
    for category in CATEGORIES:
        ours = " | ".join(f"{100 * measured[recipe][category]:.1f}" for recipe in DETECTORS)
        paper = " | ".join(str(PAPER[recipe][category]) for recipe in DETECTORS)  # as the figure gives them
        print(f"| {category} | {ours} | {paper} |")
    maps = " | ".join(f"{100 * measured[recipe]['map_50']:.1f}" for recipe in DETECTORS)
    print(f"| test mAP@0.5 | {maps} | 63.4 | 70.0 |")  # the paper's Table 1 (VOC 2007+2012 training)


if __name__ == "__main__":
    main()
