"""Train R-CNN, SPPNet and Fast R-CNN on the embedded shapes scenes; compare their test speed and mAP with the same
2,000 selective-search proposals per image, beside Faster R-CNN and YOLO v1.

    python benchmarks/proposal_detection.py [--only rcnn_shapes ...] [--detection-runs RUNS] [--keep RUNS]
        [--reuse RUNS]

Each configs/detection/{rcnn,sppnet,fast_rcnn}_shapes.yaml runs `lit-models fit`, then `test --ckpt_path best`, in
fresh processes one at a time. The three configs share one proposal setting (checked here): selective search in
fast mode with k = 5 on the scenes at 256 px, the first 2,000 kept. Then, in this one process, every best
checkpoint runs over the same 100 test scenes with those same proposals. Speed is test images/s at batch 1 (the
papers' seconds per image), from the normalised image tensor and its proposals to the final boxes, the proposals'
own computation excluded as the papers exclude it; the models alternate over ``--rounds`` passes and the median is
quoted. Each model runs as its config tests it (Fast R-CNN with its truncated SVD; SPPNet and Fast R-CNN pooling
each distinct feature-map window once), and SPPNet and Fast R-CNN once more with every proposal through the full
head, as the papers ran them. Faster R-CNN and YOLO v1 need no proposals; with ``--detection-runs`` (a
``benchmarks/detection.py --keep`` folder) their best checkpoints join the speed comparison. Goals:
SPPNet >= 25x and Fast R-CNN >= 100x R-CNN's test images/s, each >= 0.85 mAP@0.5 on shapes.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from cli_runs import REPO, all_metrics, describe_checkpoint, fit_and_test, last_metric

from lit_models.datamodules.detection import DetectionDataModule
from lit_models.detection import RCNN, FasterRCNN, FastRCNN, SPPNet, YOLOv1
from lit_models.metrics import evaluation_targets, mean_average_precision
from lit_models.nets.region_detector import image_sizes

CONFIGS = {
    "rcnn_shapes": RCNN,
    "sppnet_shapes": SPPNet,
    "fast_rcnn_shapes": FastRCNN,
}
PROPOSAL_SETTINGS = ("proposals", "proposal_width", "proposal_k", "max_proposals")
EVERY_ROI = " (every proposal through the full head)"
PROPOSAL_FREE = {"faster_rcnn_shapes": FasterRCNN, "yolov1_shapes": YOLOv1}
# Test-time speed relative to R-CNN in the papers (VGG-16 on VOC 2007 unless said): SPPNet 24-102x (its §4.2,
# ZF-5: 5 scales to 1 scale); Fast R-CNN 146x (its Table 4: 0.32 s against 47 s per image); Faster R-CNN 0.2 s per
# image with its proposals (5 fps) and YOLO v1 45 fps, each against R-CNN's 47 s (across papers and GPUs).
PAPER_SPEEDUP = {
    "rcnn_shapes": "1x (47 s/image)",
    "sppnet_shapes": "24-102x",
    "fast_rcnn_shapes": "146x",
    "faster_rcnn_shapes": "~235x",
    "yolov1_shapes": "~2100x",
}


def train(name: str, save_dir: Path) -> dict:
    fit_seconds, fit_run, test_run = fit_and_test(REPO / "configs" / "detection" / f"{name}.yaml", save_dir)
    return summary(name, fit_run, test_run, fit_seconds)


def reused(folder: Path, name: str) -> dict:
    """The rows of an earlier --keep run (its fit and test runs) without training again; the fit time is the span
    of its run folder's writes (the logger's first file to the last checkpoint), without the process start-up."""
    runs = sorted((folder / name).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    written = [path.stat().st_mtime for path in runs[0].rglob("*") if path.is_file()]
    return summary(name, runs[0], runs[-1], max(written) - min(written))


def summary(name: str, fit_run: Path, test_run: Path, fit_seconds: float) -> dict:
    about = describe_checkpoint(fit_run)
    vals = all_metrics(fit_run, "val/map_50")
    best = max(range(len(vals)), key=vals.__getitem__)
    return {
        "config": name,
        "params": about["params"],
        "epochs": about["epochs"],
        "fit_s": fit_seconds,
        "val_map_50": vals[best],
        "test_map_50": last_metric(test_run, "test/map_50"),
        "checkpoint": sorted((fit_run / "checkpoints").glob("best*.ckpt"))[-1],
    }


def config_args(name: str, section: str) -> dict:
    """``init_args`` of a config's ``data`` or ``model`` section."""
    return yaml.safe_load((REPO / "configs" / "detection" / f"{name}.yaml").read_text())[section]["init_args"]


def config_proposals() -> dict:
    """The proposal setting of the three configs, which must agree: the comparison's "same 2,000 proposals"."""
    settings = {}
    for name in CONFIGS:
        data = config_args(name, "data")
        settings[name] = {key: data.get(key) for key in PROPOSAL_SETTINGS}
    if len({tuple(found.values()) for found in settings.values()}) != 1:
        raise SystemExit(f"the configs' proposal settings differ: {settings}")
    return settings["rcnn_shapes"]


def test_scenes(proposals: dict) -> tuple[list[dict], dict]:
    """The 100 test scenes one by one (normalised 128 x 128, truth, proposals), and the proposals' statistics."""
    DetectionDataModule().prepare_data()  # the scenes (prepare_data with proposals would search every split)
    data = DetectionDataModule(**proposals, num_workers=0, eval_batch_size=1)
    stats = data.compute_proposals(("test",))["test"]
    data.setup("test")
    return list(data.test_dataloader()), stats


def config_svd_ranks(name: str) -> tuple[int, int] | None:
    ranks = config_args(name, "model").get("svd_ranks")
    return tuple(ranks) if ranks else None


def as_tested(models: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """Each model as ``lit-models test`` runs it, plus SPPNet and Fast R-CNN with every proposal through the full
    fc6/fc7, as the papers ran them (their own rows)."""
    variants = {}
    for name, model in models.items():
        model.eval()
        if name not in CONFIGS:
            variants[name] = model
            continue
        model.net.truncate_head(config_svd_ranks(name))  # the config's, as `lit-models test` uses
        variants[name] = model
        if name != "rcnn_shapes":  # R-CNN's warps share nothing
            plain = copy.deepcopy(model)
            plain.net.truncate_head(None)
            plain.net.share_pooling_windows = False
            variants[name + EVERY_ROI] = plain
    return variants


def evaluate(models: dict[str, torch.nn.Module], scenes: list[dict], rounds: int) -> dict[str, dict]:
    """Per model: mAP@0.5 over the scenes (first pass) and the median images/s over rounds, models alternating."""
    seconds: dict[str, list[float]] = {name: [] for name in models}
    maps = {name: mean_average_precision(iou_thresholds=[0.5]) for name in models}
    with torch.inference_mode():
        for model in models.values():
            run_once(model, scenes[0])  # warm-up: allocator, thread pool
        for round_index in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                found = [run_once(model, scene) for scene in scenes]
                seconds[name].append(time.perf_counter() - start)
                if round_index == 0:
                    for scene, detections in zip(scenes, found, strict=True):
                        maps[name].update(detections, evaluation_targets(scene["target"]))
            print(f"round {round_index + 1}: { ({n: round(s[-1], 1) for n, s in seconds.items()}) }", file=sys.stderr)
    return {
        name: {
            "images_s": len(scenes) / statistics.median(seconds[name]),
            "map_50": float(maps[name].compute()["map_50"]),
        }
        for name in models
    }


def run_once(model: torch.nn.Module, scene: dict) -> list[dict]:
    if getattr(model, "uses_proposals", False):
        return model(scene["image"], scene["proposals"])
    return model(scene["image"])


def time_parts(model: torch.nn.Module, scenes: list[dict], rounds: int) -> dict[str, float]:
    """Milliseconds per image of a shared-feature detector's test pass, by part (median over every scene of every
    round): the trunk, RoI pooling of the distinct windows (torchvision's kernel), and everything else (the
    distinct windows, the head, decoding, NMS)."""
    net = model.net
    parts: dict[str, list[float]] = {"total": [], "trunk": [], "pooling": []}
    with torch.inference_mode():
        for _ in range(rounds):
            for scene in scenes:
                image, proposals = scene["image"], scene["proposals"]
                sizes = image_sizes(image)
                distinct, _ = net.distinct_windows(net.check_inputs(image, proposals), sizes)
                start = time.perf_counter()
                model(image, proposals)
                parts["total"].append(time.perf_counter() - start)
                start = time.perf_counter()
                maps = net.trunk_maps(image)
                parts["trunk"].append(time.perf_counter() - start)
                start = time.perf_counter()
                net.pool_features(maps, distinct, sizes)
                parts["pooling"].append(time.perf_counter() - start)
    medians = {name: 1000 * statistics.median(values) for name, values in parts.items()}
    medians["rest"] = medians["total"] - medians["trunk"] - medians["pooling"]
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="config names (stems) to train; default all three")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--keep", type=Path, help="keep the runs (checkpoints, metrics) in this folder")
    parser.add_argument("--reuse", type=Path, help="an earlier --keep folder: its configs are not trained again")
    parser.add_argument(
        "--detection-runs", type=Path, help="benchmarks/detection.py --keep folder (Faster R-CNN, YOLO v1)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the test scenes per model")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        save_dir = args.keep or Path(tmp)
        for name in (n for n in CONFIGS if not args.only or n in args.only):
            earlier = args.reuse and (args.reuse / name).is_dir()
            rows.append(reused(args.reuse, name) if earlier else train(name, save_dir))
            print(f"done {name}: val mAP@0.5 {rows[-1]['val_map_50']:.4f}", file=sys.stderr)
        models = {row["config"]: CONFIGS[row["config"]].load_from_checkpoint(row["checkpoint"], map_location="cpu")
                  for row in rows}  # fmt: skip
        for name, module in PROPOSAL_FREE.items():
            found = (
                sorted(args.detection_runs.glob(f"{name}/version_0/checkpoints/best*.ckpt"))
                if args.detection_runs
                else []
            )
            if found:
                models[name] = module.load_from_checkpoint(found[-1], map_location="cpu")
        proposals = config_proposals()
        scenes, stats = test_scenes(proposals)
        variants = as_tested(models)
        results = evaluate(variants, scenes, args.rounds)
        parts = {name: time_parts(variants[name], scenes, args.rounds) for name in ("sppnet_shapes", "fast_rcnn_shapes")
                 if name in variants}  # fmt: skip

    print(f"\nEmbedded shapes scenes (4,000 train / 100 val / 100 test, 128x128), {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}. Proposals (train and test): selective search, {proposals['proposals']} mode, "
          f"k = {proposals['proposal_k']}, at {proposals['proposal_width']} px, at most "
          f"{proposals['max_proposals']}: {stats.mean_proposals:.0f} per test image on average, recall@0.5 "
          f"{stats.recall_50:.3f}, recall@0.7 {stats.recall_70:.3f}.\n")  # fmt: skip
    print(
        "| model | params | epochs | fit (s) | val mAP@0.5 | test mAP@0.5, lit-models test | "
        "test mAP@0.5, this pass | test images/s (batch 1) | x R-CNN | papers: x R-CNN |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    base = results.get("rcnn_shapes", {}).get("images_s")
    trained = {row["config"]: row for row in rows}
    for name, result in results.items():
        row = trained.get(name)
        if row:
            cells = [f"{row['params']:,}", str(row["epochs"]), f"{row['fit_s']:.0f}", f"{row['val_map_50']:.3f}",
                     f"{row['test_map_50']:.3f}"]  # fmt: skip
        else:  # a variant of the row above, or a Faster R-CNN / YOLO v1 checkpoint
            cells = ["", "", "", "", ""] if name.endswith(EVERY_ROI) else ["", "", "", "detection.py", "detection.py"]
        ratio = f"{result['images_s'] / base:.0f}x" if base else ""
        print(
            f"| {name} | {' | '.join(cells)} | {result['map_50']:.3f} | {result['images_s']:.2f} | {ratio} | "
            f"{PAPER_SPEEDUP[name.removesuffix(EVERY_ROI)]} |"
        )

    rcnn_ms = 1000 / base if base else float("nan")
    print(
        f"\nWhere the time goes (ms per test image, median over the scenes and {args.rounds} rounds; R-CNN: "
        f"{rcnn_ms:.0f} ms). The bound is R-CNN's time over the RoI pooling alone: the most any head could reach.\n"
    )
    print("| model | total | trunk | RoI pooling (distinct windows) | rest | x R-CNN bound from the pooling |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, part in parts.items():
        print(
            f"| {name} | {part['total']:.1f} | {part['trunk']:.1f} | {part['pooling']:.1f} | {part['rest']:.1f} | "
            f"{rcnn_ms / part['pooling']:.0f}x |"
        )


if __name__ == "__main__":
    main()
