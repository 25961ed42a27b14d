"""COCO's mAP@0.5 beside PASCAL VOC's AP (as the VOC devkit computes it) for the trained shapes detectors of a folder.

    python benchmarks/detection_ap.py --runs DIR [-- EXTRA lit-models test ARGUMENTS]

``DIR`` holds runs of configs/detection/{rcnn,sppnet,fast_rcnn,faster_rcnn,yolov1}_shapes made by
``lit-models fit --config detection/<name> --trainer.logger.init_args.save_dir DIR``. The newest run of each is
tested in a new process, one at a time, on the 100 held-out shapes test scenes: ``lit-models test --config
<run>/config.yaml --ckpt_path best --model.init_args.voc07_ap true`` (its best checkpoint, with the configuration
it was fitted with; arguments after ``--`` are passed on). The table: COCO's mAP@0.5 (``test/map_50``), VOC2007's
11-point AP (``test/map_50_voc07``), VOC2010's all-point AP (``test/map_50_voc10``) and the test command's wall
time. The shapes boxes are continuous, so VOC's AP is computed without the +1-pixel convention (docs/detection.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cli_runs import last_metric, run_command

DETECTORS = ("rcnn_shapes", "sppnet_shapes", "fast_rcnn_shapes", "faster_rcnn_shapes", "yolov1_shapes")
COLUMNS = {
    "COCO mAP@0.5": "test/map_50",
    "VOC07 11-point": "test/map_50_voc07",
    "VOC2010 all-point": "test/map_50_voc10",
}


def newest_run(runs: Path, name: str) -> Path | None:
    """The newest version_N of ``name`` under ``runs`` that kept a checkpoint (the one ``--ckpt_path best`` takes)."""
    versions = sorted((runs / name).glob("version_*"), key=lambda path: int(path.name.split("_")[1]))
    return next((run for run in reversed(versions) if any(run.glob("checkpoints/*.ckpt"))), None)


def test_best(run: Path, runs: Path, extra: list[str]) -> dict[str, float]:
    """The three APs of ``run``'s best checkpoint, tested with the configuration it was fitted with, and the test
    command's wall seconds."""
    start = time.perf_counter()
    run_command("test", run / "config.yaml", runs, "--ckpt_path", "best", "--model.init_args.voc07_ap", "true", *extra)
    seconds = time.perf_counter() - start
    # `test --ckpt_path best` logs into the tested run's own test/ folder.
    return {**{column: last_metric(run / "test", key) for column, key in COLUMNS.items()}, "test s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="the save_dir the shapes detectors were fitted into")
    arguments = sys.argv[1:]
    split = arguments.index("--") if "--" in arguments else len(arguments)
    args = parser.parse_args(arguments[:split])
    extra = arguments[split + 1 :]
    present = {name: run for name in DETECTORS if (run := newest_run(args.runs, name)) is not None}
    if not present:
        parser.error(
            f"{args.runs} holds no run of {', '.join(DETECTORS)}: fit them first with `lit-models fit --config "
            f"detection/<name> --trainer.logger.init_args.save_dir {args.runs}`."
        )
    rows = {}
    for name, run in present.items():
        print(f"testing {run} ...", file=sys.stderr, flush=True)
        rows[name] = test_best(run, args.runs, extra)
    header = ["detector", *COLUMNS, "test s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in rows.items():
        values = [f"{row[column]:.3f}" for column in COLUMNS] + [f"{row['test s']:.0f}"]
        print(f"| {name} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
