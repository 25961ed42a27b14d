"""The training runs behind the lecture's claims: the degradation problem (plain against residual CIFAR ResNets at
two depths, the paper's Figure 6) and DenseNet-BC's accuracy per parameter against them, on the embedded digits.

Each run is `lit-models fit` then `test --ckpt_path best` of configs/classification/resnet20_cifar_digits.yaml or
densenet_bc100_digits.yaml, in fresh processes one at a time; its training and validation error per epoch come
from the run's metrics.csv.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cli_runs import REPO, all_metrics, describe_checkpoint, fit_and_test, last_metric

CONFIGS = REPO / "configs" / "classification"
RESNET = CONFIGS / "resnet20_cifar_digits.yaml"
DENSENET = CONFIGS / "densenet_bc100_digits.yaml"
DEPTHS = (20, 56)


def variants(seeds: list[int]) -> dict[str, tuple[Path, list[str]]]:
    """Run name -> (config, CLI overrides): plain and residual ResNet-20/56 per seed, DenseNet-BC-100 on seed 0."""
    runs = {}
    for seed in seeds:
        for depth in DEPTHS:
            for residual in (False, True):
                name = f"{'resnet' if residual else 'plain'}{depth}_seed{seed}"
                overrides = ["--model.init_args.depth", str(depth), "--model.init_args.residual", str(residual).lower()]
                runs[name] = (RESNET, [*overrides, "--seed_everything", str(seed)])
    runs["densenet_bc100_seed0"] = (DENSENET, [])
    return runs


def train(name: str, config: Path, overrides: list[str], runs: Path) -> dict:
    """Fit and test one variant in runs/<name> (or read it back when an earlier call left its result.json)."""
    result_file = runs / name / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    fit_seconds, fit_run, test_run = fit_and_test(config, runs / name, *overrides)
    result = {
        "params": describe_checkpoint(fit_run)["params"],
        "fit_s": fit_seconds,
        "train_error": [1 - acc for acc in all_metrics(fit_run, "train/acc_top1")],
        "val_error": [1 - acc for acc in all_metrics(fit_run, "val/acc_top1")],
        "test_error": 1 - last_metric(test_run, "test/acc_top1"),
    }
    result_file.write_text(json.dumps(result))
    print(f"done {name}: test error {result['test_error']:.4f} in {fit_seconds:.0f} s", file=sys.stderr)
    return result


def train_all(seeds: list[int], runs: Path) -> dict[str, dict]:
    return {name: train(name, config, overrides, runs) for name, (config, overrides) in variants(seeds).items()}
