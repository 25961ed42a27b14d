"""The detection papers' test protocols on trained detectors: test mAP@0.5 and test time of each.

    python benchmarks/detection_test_protocols.py --runs DIR [--only sppnet_shapes ...] [--threads 2]

``DIR`` holds runs made with ``--trainer.logger.init_args.save_dir DIR`` (configs/detection/{sppnet,fast_rcnn,
yolov1}_shapes and any other detector's); each run's best checkpoint (its last where none was kept) is tested on
the test split of its own data, in this one process, one protocol after the other:

* every detector: one pass, then horizontal-flip test-time augmentation merged by NMS and by box voting
  (``test_flip``, ``flip_merge``);
* SPPNet and Fast R-CNN: their single scale (``min_size``) against the papers' five-scale test pyramid
  (``test_scales``: 480, 576, 688, 864 and 1200 in the proportion of the run's ``min_size`` to the paper's, 688
  for SPPNet and 600 for Fast R-CNN, rounded to 16 px; ``test_window`` 224 in the same proportion; Fast R-CNN's
  longer side capped at 2000 in proportion). A run's SPPNet SVMs were trained on single-scale features unless its
  fit set ``test_scales``;
* a Fast R-CNN run and a YOLO v1 run together: Fast R-CNN alone, YOLO alone, and Fast R-CNN rescored by YOLO
  (YOLO §4.3, :mod:`lit_models.detection.rescoring`), from the one-pass detections above.

Test time is the detector's wall time per test image, its batches through ``predict_step`` as the run's data batches
them, data loading and the first batch (thread pools, allocations) left out.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from cli_runs import run_checkpoints

from lit_models.detection import Detector, FastRCNN, SPPNet, YOLOv1
from lit_models.detection.evaluation import SplitDetections, detect_test_split, load_detector, map_50
from lit_models.detection.rescoring import compare

PAPER_SCALES = (480, 576, 688, 864, 1200)  # SPPNet §4.1, Fast R-CNN §5.2
PAPER_MIN_SIZE = {SPPNet: 688, FastRCNN: 600}  # each paper's single scale, which its five scales surround
PAPER_WINDOW = 224  # SPPNet §4.1: each window at the scale where it is closest to 224 x 224 pixels
FAST_RCNN_MAX_SIZE = 2000  # Fast R-CNN §5.2: the longer side's cap in its multi-scale setting
FLIPS = {"one pass": {}, "flip + NMS": {"test_flip": True}, "flip + vote": {"test_flip": True, "flip_merge": "vote"}}


def pyramid_options(model: type, min_size: int) -> dict:
    """The papers' five-scale test for a net trained at shorter side ``min_size`` (module docstring)."""
    ratio = min_size / PAPER_MIN_SIZE[model]
    options = {
        "test_scales": [16 * round(side * ratio / 16) for side in PAPER_SCALES],
        "test_window": round(PAPER_WINDOW * ratio),
    }
    if model is FastRCNN:
        options["max_size"] = round(FAST_RCNN_MAX_SIZE * ratio)
    return options


def measure(checkpoint: Path, **options) -> tuple[Detector, SplitDetections]:
    module, data = load_detector(checkpoint, **options)
    return module, detect_test_split(module, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="the save_dir of the runs to test")
    parser.add_argument("--only", nargs="*", help="run (config) names to test; default every one found")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = {name: path for name, path in run_checkpoints(args.runs).items() if not args.only or name in args.only}
    if not runs:
        raise SystemExit(f"no run with a checkpoint in {args.runs}: train with --trainer.logger.init_args.save_dir")
    rows, one_pass = [], {}  # (run, model, protocol, detections); run -> (model, one-pass detections)
    for name, checkpoint in runs.items():
        for protocol, options in FLIPS.items():
            module, found = measure(checkpoint, **options)
            rows.append((name, type(module), protocol, found))
            print(f"{name}, {protocol}: {map_50(found.found, found.truth):.4f}", file=sys.stderr)
            one_pass.setdefault(name, (type(module), found))
        min_size = getattr(module.net, "min_size", None)
        if type(module) in PAPER_MIN_SIZE and min_size is None:
            print(f"{name}: min_size is null (images as given): no pyramid in proportion to test", file=sys.stderr)
        elif type(module) in PAPER_MIN_SIZE:
            pyramid = pyramid_options(type(module), min_size)
            _, found = measure(checkpoint, **pyramid)
            protocol = f"5 scales {pyramid['test_scales']}, window {pyramid['test_window']}"
            rows.append((name, type(module), protocol, found))

    print(f"\nTest mAP@0.5 and test time per image of each protocol; {args.threads} torch thread(s) on "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}.\n")  # fmt: skip
    print("| run | model | protocol | test mAP@0.5 | test ms/image |")
    print("|---|---|---|---:|---:|")
    for name, model, protocol, found in rows:
        milliseconds = 1000 * found.seconds_per_image
        print(f"| {name} | {model.__name__} | {protocol} | {map_50(found.found, found.truth):.3f} | "
              f"{milliseconds:.1f} |")  # fmt: skip

    fast_rcnn = next((name for name, (model, _) in one_pass.items() if model is FastRCNN), None)
    yolo = next((name for name, (model, _) in one_pass.items() if model is YOLOv1), None)
    if fast_rcnn and yolo:
        print(f"\nYOLO + Fast R-CNN (YOLO §4.3), one pass each ({fast_rcnn}, {yolo}):\n")
        print("| detections | test mAP@0.5 |")
        print("|---|---:|")
        for detections, value in compare(one_pass[fast_rcnn][1], one_pass[yolo][1]).items():
            print(f"| {detections} | {value:.3f} |")


if __name__ == "__main__":
    main()
