"""Train Faster R-CNN and YOLO v1 on the embedded shapes scenes; print mAP, fit time and inference speed.

    python benchmarks/detection.py [--only yolov1_shapes] [--threads 2] [--keep runs/bench] [--picture docs/x.png]

Each configs/detection/*_shapes.yaml runs `lit-models fit`, then `lit-models test --ckpt_path best`, in fresh
processes one at a time. Val mAP is the best epoch's (the checkpoint test uses); test mAP is on the 100 held-out
test scenes, which no run selected on. Inference speed: both best checkpoints in this one process, on the same
100 test scenes at 128 x 128, everything from the image tensor to the final boxes (network, decoding, NMS),
at batch 1 (the papers' frames per second) and batch 8, the two models alternating over 5 rounds (the median is
quoted) so that machine noise hits both alike. Goals: each >= 0.90 mAP@0.5 on shapes, and
YOLO v1 >= 6x Faster R-CNN's inference images/s (the papers: 45 against 7 frames/s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from cli_runs import REPO, all_metrics, describe_checkpoint, fit_and_test, last_metric
from PIL import Image

from lit_models.datamodules.detection import DetectionDataModule
from lit_models.datamodules.sources.shapes import CLASS_NAMES
from lit_models.detection import FasterRCNN, YOLOv1
from lit_models.drawing import draw_boxes, image_tensor

CONFIGS = {
    "faster_rcnn_shapes": (REPO / "configs" / "detection" / "faster_rcnn_shapes.yaml", FasterRCNN),
    "yolov1_shapes": (REPO / "configs" / "detection" / "yolov1_shapes.yaml", YOLOv1),
}


def run(name: str, save_dir: Path) -> dict:
    config, _ = CONFIGS[name]
    fit_seconds, fit_run, test_run = fit_and_test(config, save_dir)
    about = describe_checkpoint(fit_run)
    best = max(range(len(vals := all_metrics(fit_run, "val/map_50"))), key=vals.__getitem__)
    return {
        "config": name,
        "backbone": about["hparams"]["backbone"],
        "params": about["params"],
        "epochs": about["epochs"],
        "fit_s": fit_seconds,
        "val_map_50": vals[best],
        "val_map": all_metrics(fit_run, "val/map")[best],
        "test_map_50": last_metric(test_run, "test/map_50"),
        "test_map": last_metric(test_run, "test/map"),
        "class_ap": [last_metric(test_run, f"test/ap_50/{c}") for c in CLASS_NAMES[1:]],
        "checkpoint": sorted((fit_run / "checkpoints").glob("best*.ckpt"))[-1],
    }


def test_images() -> tuple[torch.Tensor, list[dict], list[str]]:
    """The 100 test scenes as the DataModule serves them (normalised, 128 x 128), with truth and file paths."""
    data = DetectionDataModule(image_size=128, num_workers=0, eval_batch_size=100)
    data.prepare_data()
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    return batch["image"], batch["target"], batch["path"]


def images_per_second(models: dict[str, torch.nn.Module], images: torch.Tensor, batch: int, rounds: int = 5) -> dict:
    """Median over rounds of images/s through each model's forward (net + decoding + NMS), models alternating."""
    seconds: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(images[:batch])  # warm-up: allocator, thread pool
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                for first in range(0, len(images), batch):
                    model(images[first : first + batch])
                seconds[name].append(time.perf_counter() - start)
    return {name: len(images) / statistics.median(times) for name, times in seconds.items()}


def picture(models: dict[str, torch.nn.Module], images, targets, paths, path: Path, count: int = 6) -> None:
    """Rows: truth, then each model's detections scoring >= 0.5, on the first test scenes, drawn as `predict` draws."""

    def drawn(index, boxes, labels, scores=None):
        return draw_boxes(image_tensor(paths[index]), boxes, labels, CLASS_NAMES, scores, 0.5).permute(1, 2, 0)

    rows = [[drawn(i, t["boxes"], t["labels"]) for i, t in enumerate(targets[:count])]]
    with torch.inference_mode():
        for model in models.values():
            found = model(images[:count])
            rows.append([drawn(i, f["boxes"], f["labels"], f["scores"]) for i, f in enumerate(found)])
    tiles = [np.concatenate([np.pad(tile.numpy(), ((2, 2), (2, 2), (0, 0)), constant_values=255) for tile in row], 1)
             for row in rows]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, axis=0)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="config names (stems) to run; default both")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per process")
    parser.add_argument("--keep", type=Path, help="keep the runs (checkpoints, metrics) in this folder")
    parser.add_argument("--picture", type=Path, help="save test scenes with truth and both models' boxes here")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        save_dir = args.keep or Path(tmp)
        for name in (n for n in CONFIGS if not args.only or n in args.only):
            rows.append(run(name, save_dir))
            done = rows[-1]
            print(f"done {name}: val mAP@0.5 {done['val_map_50']:.4f} in {done['fit_s']:.0f} s", file=sys.stderr)
        models = {
            row["config"]: CONFIGS[row["config"]][1].load_from_checkpoint(row["checkpoint"], map_location="cpu").eval()
            for row in rows
        }
        images, targets, paths = test_images()
        speed = {batch: images_per_second(models, images, batch) for batch in (1, 8)}
        if args.picture:
            picture(models, images, targets, paths, args.picture)

    print(f"\nEmbedded shapes scenes (4,000 train / 100 val / 100 test, 128x128, {len(CLASS_NAMES) - 1} classes), "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}\n")  # fmt: skip
    print(
        "| config | backbone | params | epochs | fit wall time (s) | val mAP@0.5 | val mAP | test mAP@0.5 | "
        f"test mAP | test AP@0.5 {' / '.join(CLASS_NAMES[1:])} | images/s, batch 1 | images/s, batch 8 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for row in rows:
        per_class = " / ".join(f"{ap:.3f}" for ap in row["class_ap"])
        print(f"| {row['config']} | {row['backbone']} | {row['params']:,} | {row['epochs']} | {row['fit_s']:.0f} | "
              f"{row['val_map_50']:.3f} | {row['val_map']:.3f} | {row['test_map_50']:.3f} | {row['test_map']:.3f} | "
              f"{per_class} | {speed[1][row['config']]:.0f} | {speed[8][row['config']]:.0f} |")  # fmt: skip
    if len(rows) == 2:
        for batch in (1, 8):
            ratio = speed[batch]["yolov1_shapes"] / speed[batch]["faster_rcnn_shapes"]
            print(f"\nYOLO v1 / Faster R-CNN inference images/s, batch {batch}: {ratio:.1f}x (paper: 45 / 7 = 6.4x)")


if __name__ == "__main__":
    main()
