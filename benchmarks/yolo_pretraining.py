"""YOLO v1 with the paper's classifier pre-training (§2.2) against the same detector from scratch, on the embedded
shapes scenes; prints validation mAP@0.5 per epoch, the first epoch reaching 0.85, and test mAP@0.5 as a table.

    python benchmarks/yolo_pretraining.py [--seeds 0 1] [--epochs 6] [--classifier-epochs 4]
                                          [--augmentation-seeds 0] [--threads 1] [--keep DIR]

Pre-trained: the chain detection/yolov1_pretrained_shapes (the classifier on the embedded digits at 64 px, then
detection/yolov1_shapes initialised from its last checkpoint), with its stages' epochs set to ``--classifier-epochs``
and ``--epochs``. Scratch: detection/yolov1_shapes alone for ``--epochs``. The detector's recipe is otherwise the
same both ways, its cosine decay spanning the shortened run; each side's best epoch by validation mAP@0.5 is tested
on the 100 held-out test scenes. ``--augmentation-seeds`` adds a third side for those seeds: scratch with the rest
of the paper's augmentation, which the shapes recipe leaves off (random translations of up to 20 %, exposure and
saturation by up to 1.5 in HSV). Fit times are each run's training, from its first file to its last checkpoint
(the chain's: both stages). With ``--keep DIR`` the runs stay in DIR, and a run already finished there is read
back instead of trained again (a benchmark cut short, or extended by a seed, continues). One run at a time: two
trainings sharing 2 cores slow each other several-fold.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from cli_runs import REPO, all_metrics, fit_and_test, last_metric

CHAIN = REPO / "configs" / "detection" / "yolov1_pretrained_shapes.yaml"
SCRATCH = REPO / "configs" / "detection" / "yolov1_shapes.yaml"
LIT_MODELS = [sys.executable, "-m", "lit_models"]
GOAL = 0.85  # validation mAP@0.5
PAPER_AUGMENTATION = ["--data.init_args.translate", "0.2", "--data.init_args.exposure", "1.5",
                      "--data.init_args.saturation", "1.5"]  # fmt: skip


def sized_chain(classifier_epochs: int, epochs: int, folder: Path) -> Path:
    """The chain recipe with its stages' epochs set (classifier, detector)."""
    chain = yaml.safe_load(CHAIN.read_text())
    for stage, count in zip(chain["chain"], (classifier_epochs, epochs), strict=True):
        stage["args"] = {**stage.get("args", {}), "trainer.max_epochs": count}
        stage["config"] = str(CHAIN.parent / stage["config"])
    path = folder / CHAIN.name
    path.write_text(yaml.safe_dump(chain, sort_keys=False))
    return path


def span(first: Path, last: Path) -> float:
    """Seconds from a run's first file (its config.yaml) to its last checkpoint: the training, start-up excluded."""
    return (last / "checkpoints" / "last.ckpt").stat().st_mtime - (first / "config.yaml").stat().st_mtime


def finished(run: Path, save_dir: Path) -> bool:
    """Whether ``run`` was trained and tested already (kept by an earlier --keep pass, then read back)."""
    if (run / "test" / "metrics.csv").is_file():
        return True
    if run.parent.exists():
        raise SystemExit(f"{run.parent} holds an unfinished run: delete {save_dir} and run again")
    return False


def pretrained(seed: int, classifier_epochs: int, epochs: int, save_dir: Path) -> dict:
    chain = sized_chain(classifier_epochs, epochs, save_dir)
    run = save_dir / "runs" / chain.stem / "version_0"
    if not finished(run / "detector", save_dir):
        common = ["--config", str(chain), "--trainer.enable_progress_bar", "false", "--seed_everything", str(seed)]
        for command in (["fit"], ["test", "--ckpt_path", "best"]):
            subprocess.run([*LIT_MODELS, *command, *common], check=True, capture_output=True, cwd=save_dir)
    classifier, detector = run / "classifier", run / "detector"
    return {
        "start": f"pre-trained ({classifier_epochs} classifier epochs)",
        "seed": seed,
        "maps": all_metrics(detector, "val/map_50"),
        "test": last_metric(detector / "test", "test/map_50"),
        "fit_s": span(classifier, detector),
        "classifier": (all_metrics(classifier, "val/acc_top1")[-1], span(classifier, classifier)),
    }


def scratch(seed: int, epochs: int, save_dir: Path, augmentation: bool = False) -> dict:
    run = save_dir / SCRATCH.stem / "version_0"
    if not finished(run, save_dir):
        extra = ["--seed_everything", str(seed), "--trainer.max_epochs", str(epochs)]
        fit_and_test(SCRATCH, save_dir, *extra, *(PAPER_AUGMENTATION if augmentation else []))
    start = "scratch, + translations and HSV jitter" if augmentation else "scratch"
    return {"start": start, "seed": seed, "maps": all_metrics(run, "val/map_50"),
            "test": last_metric(run / "test", "test/map_50"), "fit_s": span(run, run)}  # fmt: skip


def reached(maps: list[float]) -> str:
    return next((str(epoch) for epoch, value in enumerate(maps, 1) if value >= GOAL), f"not in {len(maps)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=6, help="detector epochs, both ways (the recipe's: 40)")
    parser.add_argument("--classifier-epochs", type=int, default=4, help="the pre-training's (the recipe's: 4)")
    parser.add_argument("--augmentation-seeds", type=int, nargs="*", default=[],
                        help="seeds that also train from scratch with the paper's other augmentation")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 where other jobs share the cores)")
    parser.add_argument("--keep", type=Path, help="keep the runs (checkpoints, metrics) in this folder")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.keep or Path(temporary)
        for seed in args.seeds:
            save_dir = folder / f"seed{seed}"
            save_dir.mkdir(parents=True, exist_ok=True)
            rows.append(scratch(seed, args.epochs, save_dir))
            print(f"done scratch, seed {seed}: {rows[-1]['maps']}", file=sys.stderr)
            rows.append(pretrained(seed, args.classifier_epochs, args.epochs, save_dir))
            print(f"done pre-trained, seed {seed}: {rows[-1]['maps']}", file=sys.stderr)
            if seed in args.augmentation_seeds:
                augmented = folder / f"augmented{seed}"
                augmented.mkdir(exist_ok=True)
                rows.append(scratch(seed, args.epochs, augmented, augmentation=True))
                print(f"done augmented, seed {seed}: {rows[-1]['maps']}", file=sys.stderr)
    print(f"YOLO v1 (detection/yolov1_shapes) on the embedded shapes scenes, {args.epochs} detector epochs each way, "
          f"{args.threads} threads\n")  # fmt: skip
    print("| detector starts from | seed | val mAP@0.5 per epoch | epoch reaching 0.85 | best val mAP@0.5 | "
          "test mAP@0.5 (best epoch) | fit (s), all stages |\n|---|---:|---|---:|---:|---:|---:|")  # fmt: skip
    for row in rows:
        per_epoch = " ".join(f"{value:.2f}" for value in row["maps"])
        print(f"| {row['start']} | {row['seed']} | {per_epoch} | {reached(row['maps'])} | {max(row['maps']):.3f} | "
              f"{row['test']:.3f} | {row['fit_s']:.0f} |")  # fmt: skip
    for row in rows:
        if "classifier" in row:
            accuracy, seconds = row["classifier"]
            print(f"\nseed {row['seed']}: the classifier stage, {accuracy:.3f} val top-1 on the digits in "
                  f"{seconds:.0f} s of the chain's fit time", end="")  # fmt: skip
    for start in dict.fromkeys(row["start"] for row in rows):
        tests = {row["seed"]: row["test"] for row in rows if row["start"] == start}
        values = tests.values()
        print(f"\n{start}: test mAP@0.5 {min(values):.3f}-{max(values):.3f} over seeds {list(tests)}", end="")
    print()


if __name__ == "__main__":
    main()
