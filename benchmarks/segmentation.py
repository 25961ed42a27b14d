"""Train FCN-32s, 16s and 8s on the embedded shapes scenes; print fit wall time, val mIoU and the FCN paper's four
test metrics as a table.

    python benchmarks/segmentation.py [--only fcn8s_shapes] [--threads 2] [--keep runs/bench]
                                      [--epochs 16] [--fraction 1.0]

Each configs/segmentation/*_shapes.yaml runs `lit-models fit`, then `lit-models test --ckpt_path best`, in
fresh processes one at a time. Val mIoU is the best epoch's (the checkpoint test uses); the test metrics (pixel
accuracy, mean accuracy, mean IU, frequency weighted IU; Long et al. 2015, §5) are on the 100 held-out test scenes,
which no run ever selected on. The goals: FCN-8s >= 0.90 mIoU within 10 minutes of training, and 8s >= 16s >= 32s.
``--epochs`` and ``--fraction`` (the share of the 4,000 training scenes per epoch) shorten a run; the defaults are
the recipes'.
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
from cli_runs import REPO, all_metrics, describe_checkpoint, fit_and_test, last_metric

from lit_models.datamodules.sources.shapes import CLASS_NAMES
from lit_models.metrics import SEGMENTATION_SCORES
from lit_models.nets.fcn import FCN as FCNNet

CONFIGS = [REPO / "configs" / "segmentation" / f"fcn{variant}_shapes.yaml" for variant in ("32s", "16s", "8s")]


def run(config: Path, save_dir: Path, *extra: str) -> dict:
    fit_seconds, fit_run, test_run = fit_and_test(config, save_dir, *extra)
    about = describe_checkpoint(fit_run)
    return {
        "config": config.stem,
        "backbone": about["hparams"]["backbone"],
        "params": about["params"],
        "epochs": about["epochs"],
        "fit_s": fit_seconds,
        "val_miou": max(all_metrics(fit_run, "val/miou")),
        "test": {name: last_metric(test_run, f"test/{name}") for name in SEGMENTATION_SCORES},
        "class_iou": [last_metric(test_run, f"test/iou/{name}") for name in CLASS_NAMES],
    }


def step_seconds(net: torch.nn.Module, repeats: int = 3) -> float:
    """Median seconds of one training step (forward, backward, SGD update) on a batch of 8 128x128 scenes."""
    images, masks = torch.randn(8, 3, 128, 128), torch.randint(0, len(CLASS_NAMES), (8, 128, 128))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    times = []
    for _ in range(repeats + 1):  # the first step warms up allocators and is not counted
        start = time.perf_counter()
        torch.nn.functional.cross_entropy(net(images), masks).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def backbone_costs() -> list[tuple[str, int, float]]:
    """FCN-8s train-step time with the configs' backbone and with the paper's VGG-16 (padded by 100 px)."""
    nets = {
        "resnet18, width 0.5 (the shapes configs)": FCNNet(len(CLASS_NAMES), "8s", "resnet18", width_mult=0.5),
        "vgg16 + BN, width 0.25, fc6/fc7 128": FCNNet(
            len(CLASS_NAMES), "8s", "vgg16", width_mult=0.25, representation_size=128, batch_norm=True
        ),
    }
    torch.manual_seed(0)
    return [(name, sum(p.numel() for p in net.parameters()), step_seconds(net)) for name, net in nets.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="config names (stems) to run; default all")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per training process")
    parser.add_argument("--keep", type=Path, help="keep the runs (checkpoints, metrics) in this folder")
    parser.add_argument("--epochs", type=int, help="epochs of every run (default: the recipes', 16)")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the training scenes per epoch")
    args = parser.parse_args()
    extra = ["--trainer.limit_train_batches", str(args.fraction)]
    if args.epochs is not None:
        extra += ["--trainer.max_epochs", str(args.epochs)]
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    costs = backbone_costs()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        save_dir = args.keep or Path(tmp)
        for config in (c for c in CONFIGS if not args.only or c.stem in args.only):
            rows.append(run(config, save_dir, *extra))
            done = rows[-1]
            print(f"done {config.stem}: val mIoU {done['val_miou']:.4f} in {done['fit_s']:.0f} s", file=sys.stderr)
    print(f"\nEmbedded shapes scenes (4,000 train / 100 val / 100 test, 128x128, {len(CLASS_NAMES)} classes), "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}\n")  # fmt: skip
    print(f"| config | backbone | params | epochs | fit wall time (s) | val mIoU | test pixel acc | test mean acc | "
          f"test mIoU | test f.w. IU | test IoU {' / '.join(CLASS_NAMES)} |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        test = row["test"]
        per_class = " / ".join(f"{iou:.3f}" for iou in row["class_iou"])
        print(f"| {row['config']} | {row['backbone']} | {row['params']:,} | {row['epochs']} | {row['fit_s']:.0f} | "
              f"{row['val_miou']:.3f} | {100 * test['pixel_acc']:.1f} % | {100 * test['mean_acc']:.1f} % | "
              f"{test['miou']:.3f} | {test['fwiou']:.3f} | {per_class} |")  # fmt: skip

    print("\nFCN-8s train step, batch 8 at 128x128, same process:\n")
    print("| backbone | params | s / step | relative |")
    print("|---|---:|---:|---:|")
    for name, params, seconds in costs:
        print(f"| {name} | {params:,} | {seconds:.3f} | {seconds / costs[0][2]:.1f}× |")


if __name__ == "__main__":
    main()
