"""R-CNN's SVM stage on the shapes scenes: the paper's hard-negative mining over cached fc7 features against online
hinge-loss SGD, from the same fine-tuned CNN; test mAP@0.5 and the stage's time.

    python benchmarks/hard_negative_mining.py [--workdir DIR] [--train-scenes 800] [--test-scenes 100]
        [--svm-images 100 300] [--rounds 1 5] [--seeds 0 1 2] [--threads 1]

The embedded shapes scenes (``export_shapes``: ``--train-scenes`` train, 100 val, 100 test, 128 px) with the
recipe's proposals (selective search, fast mode, k = 5 at 256 px, at most 2,000 per image). configs/detection/
rcnn_shapes.yaml is fine-tuned once for its ``finetune_epochs`` (validation off); then its SVM stage, one epoch,
runs from that checkpoint (``fit --ckpt_path``) in each variant, seed after seed:

* online: the SVMs by SGD on the hinge loss of each step's sampled proposals, with the box regressors;
* mining, N images: the fc7 features of every proposal and ground-truth box of N training images (spread over the
  list) computed once with the frozen CNN and cached on disk, the SVMs mined over them (``--rounds``: 1 pass, the
  paper's code; more: until a pass finds no new hard negative), then the box regressors' epoch. The cache is
  computed by the first run of each N (in increasing N, each reusing the smaller one's files) and reused by the
  later runs.

Every variant is tested on the 100 test scenes with one pass of the shared, frozen CNN: its features are computed
once per scene, and each variant's SVMs and box regressors score them (the CNNs are checked to be identical). The
fine-tuned CNN's softmax on the unregressed proposals (what validation measures before the SVM stage) is the
first row. Timings are in this one process, one run at a time; ``--workdir`` keeps the scenes, proposals,
fine-tuned checkpoint and caches for a rerun.
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

import lit_models
from lit_models.datamodules.detection import DetectionDataModule
from lit_models.datamodules.sources.shapes import export_shapes
from lit_models.detection import RCNN
from lit_models.detection.feature_cache import fingerprint
from lit_models.metrics import evaluation_targets, mean_average_precision

RECIPE = "detection/rcnn_shapes"
QUIET = {
    "enable_progress_bar": "false",
    "enable_model_summary": "false",
    "limit_val_batches": "0",
    "check_val_every_n_epoch": "1",
}  # no validation: a checkpoint at the end of every epoch


def build(workdir: Path, root: Path, epochs: int, seed: int, **model: object) -> tuple:
    """The recipe's model, data and trainer on the scenes under ``root``, logging under ``workdir``."""
    return lit_models.recipe(
        RECIPE,
        seed_everything=seed,
        data={"root": str(root)},
        model={key: str(value) for key, value in model.items()},
        trainer={**QUIET, "max_epochs": str(epochs), "logger.init_args.save_dir": str(workdir / "runs")},
    )


def finetune(workdir: Path, root: Path) -> tuple[Path, int]:
    """The recipe's fine-tuning stage alone, once; its last checkpoint and epochs."""
    model, data, trainer = build(workdir, root, 1, 0)  # only to read the recipe's finetune_epochs
    epochs = model.finetune_epochs
    found = sorted((workdir / "runs" / "rcnn_shapes").glob("version_*/checkpoints/last.ckpt"))
    for path in found:
        if torch.load(path, weights_only=True, map_location="cpu")["epoch"] == epochs - 1:
            return path, epochs
    model, data, trainer = build(workdir, root, epochs, 0)
    start = time.perf_counter()
    trainer.fit(model, data)
    print(f"fine-tuned {epochs} epochs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return Path(trainer.checkpoint_callback.dirpath) / "last.ckpt", epochs


def svm_stage(workdir: Path, root: Path, checkpoint: Path, epochs: int, seed: int, **svm: object) -> dict:
    """One SVM-stage epoch from the fine-tuned checkpoint; the module and the stage's timings."""
    model, data, trainer = build(workdir, root, epochs + 1, seed, **svm)
    start = time.perf_counter()
    trainer.fit(model, data, ckpt_path=checkpoint)
    logged = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("train/svm_")}
    return {"model": model.eval(), "seconds": time.perf_counter() - start, **logged}


def test_scenes(root: Path) -> list[dict]:
    data = DetectionDataModule(root=str(root), **proposal_settings(), num_workers=0, eval_batch_size=1)
    data.compute_proposals(("test",))
    data.setup("test")
    return list(data.test_dataloader())


def proposal_settings() -> dict:
    """configs/_shared/shapes_proposals.yaml's."""
    return {"proposals": "fast", "proposal_width": 256, "proposal_k": 5, "max_proposals": 2000}


def shapes_scenes(workdir: Path, train: int, test: int) -> Path:
    """The shapes scenes (``train`` train, 100 val, ``test`` test) under ``workdir``, with their proposals."""
    root = export_shapes(workdir / "shapes", num_train=train, num_val=100, num_test=test)
    start = time.perf_counter()
    DetectionDataModule(root=str(root), **proposal_settings()).compute_proposals(("train", "val", "test"))
    print(f"proposals ready in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return root


def test_map(models: dict[str, RCNN], scenes: list[dict]) -> dict[str, float]:
    """Test mAP@0.5 of each model, their identical CNN run once per scene."""
    nets = [model.net for model in models.values()]
    prints = {fingerprint([net.trunk, net.head], {}) for net in nets}
    if len(prints) != 1:
        raise SystemExit("the variants' CNNs differ: their SVM stages should have left the fine-tuned CNN as it was")
    maps = {name: mean_average_precision(iou_thresholds=[0.5]) for name in models}
    with torch.inference_mode():
        for scene in scenes:
            proposals = nets[0].check_inputs(scene["image"], scene["proposals"])
            features = nets[0].roi_features(scene["image"], proposals)
            sizes = [tuple(image.shape[-2:]) for image in scene["image"]]
            truth = evaluation_targets(scene["target"])
            for name, model in models.items():
                maps[name].update(model.net.detect(*features, proposals, sizes), truth)
    return {name: float(metric.compute()["map_50"]) for name, metric in maps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, help="keep scenes, proposals, checkpoints and caches here")
    parser.add_argument("--train-scenes", type=int, default=800, help="training scenes (the recipe's data: 4,000)")
    parser.add_argument("--test-scenes", type=int, default=100, help="test scenes (the recipe's data: 100)")
    parser.add_argument("--svm-images", type=int, nargs="+", default=[100, 300], help="images cached for mining")
    parser.add_argument("--rounds", type=int, nargs="+", default=[1], help="svm_mining_rounds of the mining runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of each SVM stage")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or Path(temporary)
        root = shapes_scenes(workdir, args.train_scenes, args.test_scenes)
        checkpoint, epochs = finetune(workdir, root)
        variants = {"online hinge (SGD, 1 epoch)": {"svm_training": "online"}}
        for images in sorted(args.svm_images):
            for rounds in args.rounds:
                label = "1 pass" if rounds == 1 else f"passes until none new (at most {rounds})"
                variants[f"mining, {images} images, {label}"] = {
                    "svm_training": "mining", "svm_images": images, "svm_mining_rounds": rounds,
                }  # fmt: skip
        runs: dict[str, list[dict]] = {}
        for name, svm in variants.items():
            for seed in args.seeds:
                runs.setdefault(name, []).append(svm_stage(workdir, root, checkpoint, epochs, seed, **svm))
                print(f"{name}, seed {seed}: {runs[name][-1]['seconds']:.0f} s", file=sys.stderr)
        finetuned = RCNN.load_from_checkpoint(checkpoint, map_location="cpu").eval()
        models = {"softmax": finetuned}
        models.update({f"{name}#{i}": run["model"] for name, seeded in runs.items() for i, run in enumerate(seeded)})
        maps = test_map(models, test_scenes(root))

    print(f"\nR-CNN (configs/detection/rcnn_shapes.yaml) on the shapes scenes: {args.train_scenes} train / "
          f"{args.test_scenes} test, fine-tuned {epochs} epochs; SVM stage 1 epoch; seeds {args.seeds}; "
          f"{args.threads} threads on {os.cpu_count()} CPU cores, torch {torch.__version__}.\n")  # fmt: skip
    print(
        "| SVMs | test mAP@0.5: mean (range over seeds) | SVM stage (s): first seed | later seeds (mean) | "
        "first seed: feature cache (s) | SVM solves (s) | hard negatives cached (all classes) | classes converged |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print(f"| none: the fine-tuned softmax | {maps['softmax']:.3f} | 0 | | | | | |")
    for name, seeded in runs.items():
        values = [maps[f"{name}#{i}"] for i in range(len(seeded))]
        spread = f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"
        first = seeded[0]
        mining = "train/svm_cache_seconds" in first
        later = [run["seconds"] for run in seeded[1:]]
        cells = [f"{first['seconds']:.0f}", f"{statistics.mean(later):.0f}" if later else ""]
        keys = ("train/svm_cache_seconds", "train/svm_solve_seconds", "train/svm_hard_negatives",
                "train/svm_converged_classes")  # fmt: skip
        cells += [f"{first[key]:,.0f}" if mining else "" for key in keys]
        print(f"| {name} | {spread} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
