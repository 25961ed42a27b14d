"""Train the quickstart and every <arch>_digits config on the embedded MNIST digits; print a markdown table.

    python benchmarks/digits.py [--only quickstart resnet18_digits] [--threads 2]
    python benchmarks/digits.py --only quickstart --seeds 0 1 2 3 4    # the range over seeds, no SVM

Each config runs `lit-models fit` then `lit-models test --ckpt_path best` in fresh processes, one at a time
(two trainings sharing 2 cores slow each other several-fold). Wall time is the fit process's, start to end,
including validation every epoch. The same run trains an RBF-SVM (scikit-learn) on the same 3,600 training
images and scores it on the same 1,000 test images, so the ratios in the table come from one machine and one
run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from cli_runs import REPO, describe_checkpoint, fit_and_test, last_metric
from PIL import Image

CONFIGS = [REPO / "configs" / "quickstart.yaml", *sorted((REPO / "configs" / "classification").glob("*_digits.yaml"))]


def run(config: Path, save_dir: Path, *extra: str) -> dict:
    fit_seconds, fit_run, test_run = fit_and_test(config, save_dir, *extra)
    about = describe_checkpoint(fit_run)
    return {
        "config": config.stem,
        "model": about["model"],
        "params": about["params"],
        "epochs": about["epochs"],
        "fit_s": fit_seconds,
        "top1": last_metric(test_run, "test/acc_top1"),
        "top5": last_metric(test_run, "test/acc_top5"),
    }


def svm_baseline() -> dict:
    from sklearn.svm import SVC

    from lit_models.datamodules.image_folder import ImageFolderDataModule

    dm = ImageFolderDataModule(num_workers=0)
    dm.prepare_data()
    dm.setup("fit")

    def arrays(samples):
        pixels = np.stack([np.asarray(Image.open(p), dtype=np.float32).ravel() / 255 for p, _ in samples])
        return pixels, np.array([label for _, label in samples])

    x_train, y_train = arrays(dm.datasets["train"].samples)
    x_test, y_test = arrays(dm.datasets["test"].samples)
    start = time.perf_counter()
    svm = SVC(C=5.0, kernel="rbf", gamma="scale").fit(x_train, y_train)
    seconds = time.perf_counter() - start
    scores = svm.decision_function(x_test)
    top5 = np.mean([y in np.argsort(s)[-5:] for y, s in zip(y_test, scores, strict=True)])
    return {"config": "RBF-SVM (scikit-learn, C=5)", "model": "SVC", "params": len(svm.support_) * x_train.shape[1],
            "epochs": "-", "fit_s": seconds, "top1": svm.score(x_test, y_test), "top5": top5}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="config names (stems) to run; default all")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per training process")
    parser.add_argument("--seeds", type=int, nargs="*", help="train each config once per seed; print the range")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    configs = [c for c in CONFIGS if not args.only or c.stem in args.only]
    if args.seeds:
        seed_ranges(configs, args.seeds)
        return
    rows = [svm_baseline()]
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            rows.append(run(config, Path(tmp)))
            print(f"done {config.stem}: {rows[-1]['top1']:.4f} in {rows[-1]['fit_s']:.0f} s", file=sys.stderr)
    svm = rows[0]
    print(f"\nEmbedded MNIST digits (3,600 train / 400 val / 1,000 test), {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}\n")  # fmt: skip
    print("| config | model | params | epochs | fit wall time (s) | test top-1 | test top-5 | top-1 error vs SVM |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        ratio = (1 - row["top1"]) / (1 - svm["top1"])
        print(f"| {row['config']} | {row['model']} | {row['params']:,} | {row['epochs']} | {row['fit_s']:.0f} | "
              f"{100 * row['top1']:.1f} % | {100 * row['top5']:.1f} % | {ratio:.2f}× |")  # fmt: skip


def seed_ranges(configs: list[Path], seeds: list[int]) -> None:
    """Each config trained and tested once per seed (a fresh folder each): the range a user may see."""
    print(f"\nEmbedded MNIST digits, seeds {seeds}, {os.cpu_count()} CPU cores, torch {torch.__version__}\n")
    print("| config | test top-1 per seed | worst | mean | fit wall time (s) |")
    print("|---|---|---:|---:|---:|")
    for config in configs:
        rows = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(run(config, Path(tmp), "--seed_everything", str(seed)))
            done = f"done {config.stem} seed {seed}: {rows[-1]['top1']:.4f} in {rows[-1]['fit_s']:.0f} s"
            print(done, file=sys.stderr)
        top1 = [100 * row["top1"] for row in rows]
        fit = [row["fit_s"] for row in rows]
        print(f"| {config.stem} | {' / '.join(f'{a:.1f}' for a in top1)} % | {min(top1):.1f} % | "
              f"{sum(top1) / len(top1):.2f} % | {min(fit):.0f}–{max(fit):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
