"""Faster R-CNN on the shapes scenes: the paper's 4-step alternating training against approximate joint training.

    python benchmarks/faster_rcnn_training.py [--seeds 0 1] [--train-fraction 0.05] [--threads 1] [--keep DIR]

For each seed, in fresh processes one at a time: `lit-models fit --config detection/faster_rcnn_shapes` (joint) and
`lit-models fit --config detection/faster_rcnn_4step_shapes` (RPN; Fast R-CNN with its own trunk on those
proposals; RPN on that trunk, frozen; the Fast R-CNN head on it), each with the epochs its recipe sets, then
`lit-models test --ckpt_path last` of each (the last step's for the chain) on the 100 held-out test scenes. Every
epoch sees ``--train-fraction`` of the 4,000 training scenes, the same for both: the shipped recipes, scaled down.
Validation is off during the fits (the chain hands on each step's last checkpoint, and both are tested at their
last), so the fit time is training alone: the whole command's (all four steps for the chain, start-ups included), in
wall seconds and in the CPU seconds its processes used, which depend less on what else the machine runs. Goal:
4-step test mAP@0.5 within 0.03 of joint training's (the paper, §3.2: close results, joint training 25-50% faster).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from cli_runs import REPO, last_metric

from lit_models.chains import chain_text

CONFIGS = REPO / "configs" / "detection"
METHODS = {
    "joint": (CONFIGS / "faster_rcnn_shapes.yaml", None),
    "4-step": (CONFIGS / "faster_rcnn_4step_shapes.yaml", "detector4"),
}
REPORTED = ("test/map_50", "test/map", "test/proposal_recall_50", "test/proposal_recall_70")


def lit_models(*args: str, cwd: Path) -> tuple[float, float]:
    """Run ``lit-models ARGS`` in ``cwd``; return its (wall, CPU) seconds."""
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lit_models", *args], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"lit-models {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)


def run(method: str, seed: int, fraction: float, folder: Path) -> dict:
    """Fit and test one method with one seed in its own folder; what it measured."""
    config, final_stage = METHODS[method]
    folder.mkdir(parents=True)
    common = ["--config", str(config), "--seed_everything", str(seed), "--trainer.enable_progress_bar", "false"]
    wall, cpu = lit_models("fit", *common, "--trainer.limit_train_batches", str(fraction),
                           "--trainer.limit_val_batches", "0", cwd=folder)  # fmt: skip
    lit_models("test", *common, "--ckpt_path", "last", cwd=folder)
    run_dir = next((folder / "runs" / config.stem).glob("version_*"))
    test_dir = (run_dir / final_stage if final_stage else run_dir) / "test"
    return {
        "method": method,
        "seed": seed,
        "wall_s": wall,
        "cpu_s": cpu,
        **{key: last_metric(test_dir, key) for key in REPORTED},
    }


def epochs(config: Path) -> str:
    """The recipe's epochs: ``12``, or a chain's per step, ``4 + 12 + 2 + 2``."""
    chain = chain_text(config)
    if chain is None:
        return str(yaml.safe_load(config.read_text())["trainer"]["max_epochs"])
    return " + ".join(str(stage["args"]["trainer.max_epochs"]) for stage in chain["chain"])


def table_row(row: dict) -> str:
    return (f"| {row['method']} | {row['seed']} | {epochs(METHODS[row['method']][0])} | {row['wall_s']:.0f} | "
            f"{row['cpu_s']:.0f} | {row['test/map_50']:.3f} | {row['test/map']:.3f} | "
            f"{row['test/proposal_recall_50']:.3f} / {row['test/proposal_recall_70']:.3f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seed_everything of each pair of runs")
    parser.add_argument("--train-fraction", type=float, default=0.05, help="share of the training scenes per epoch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--keep", type=Path, help="keep the runs (checkpoints, metrics) in this folder")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for seed in args.seeds:
            for method in METHODS:
                rows.append(run(method, seed, args.train_fraction, base / f"{method}_seed{seed}"))
                done = rows[-1]
                print(f"done: {table_row(done)}", file=sys.stderr)

    print(f"\nEmbedded shapes scenes, {args.train_fraction:g} of the 4,000 training scenes per epoch, 100 test scenes; "
          f"{os.cpu_count()} CPU cores, {args.threads} torch threads\n")  # fmt: skip
    print("| training | seed | epochs | fit wall (s) | fit CPU (s) | test mAP@0.5 | test mAP | "
          "test proposal recall@0.5 / @0.7 |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---|")
    for row in rows:
        print(table_row(row))
    by_seed = {(row["method"], row["seed"]): row for row in rows}
    gaps = [by_seed["joint", s]["test/map_50"] - by_seed["4-step", s]["test/map_50"] for s in args.seeds]
    times = [by_seed["4-step", s]["cpu_s"] / by_seed["joint", s]["cpu_s"] for s in args.seeds]
    print(f"\nTest mAP@0.5, joint minus 4-step: {', '.join(f'{gap:+.3f}' for gap in gaps)} (goal: at most 0.03); "
          f"4-step / joint fit CPU time: {', '.join(f'{t:.2f}x' for t in times)}"
          + (f" (median {statistics.median(times):.2f}x)" if len(times) > 1 else ""))  # fmt: skip


if __name__ == "__main__":
    main()
