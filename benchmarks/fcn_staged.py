"""FCN-8s trained in stages (32s -> 16s -> 8s, the CVPR paper's §4.2) against FCN-8s trained at once, on the embedded
shapes scenes; prints test mIoU and total fit wall time per seed as a table.

    python benchmarks/fcn_staged.py [--seeds 0 1 2] [--epochs 16] [--fraction 1.0] [--threads 2]

Both get the same number of epochs: at-once fcn8s_shapes trains ``--epochs``; the chain
segmentation/fcn_staged_shapes trains half of them as 32s and a quarter each as 16s and 8s (its own split, scaled).
``--fraction`` trains each epoch on that share of the 4,000 training scenes (both sides alike), for a quicker run.
Each side's best epoch by validation mIoU is tested on the 100 held-out test scenes. One run at a time: two
trainings sharing 2 cores slow each other several-fold.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from cli_runs import REPO, fit_and_test, last_metric

from lit_models.runs import run_versions

CHAIN = REPO / "configs" / "segmentation" / "fcn_staged_shapes.yaml"
AT_ONCE = REPO / "configs" / "segmentation" / "fcn8s_shapes.yaml"
LIT_MODELS = [sys.executable, "-m", "lit_models"]


def scaled_chain(epochs: int, folder: Path) -> Path:
    """The chain recipe with its stages' epochs scaled so that together they train ``epochs``."""
    chain = yaml.safe_load(CHAIN.read_text())
    planned = sum(stage["args"]["trainer.max_epochs"] for stage in chain["chain"])
    for stage in chain["chain"]:
        stage["args"]["trainer.max_epochs"] = max(1, round(stage["args"]["trainer.max_epochs"] * epochs / planned))
        stage["config"] = str(CHAIN.parent / stage["config"])
    path = folder / CHAIN.name
    path.write_text(yaml.safe_dump(chain, sort_keys=False))
    return path


def staged(seed: int, epochs: int, save_dir: Path, *extra: str) -> tuple[float, float, list[int]]:
    """(fit seconds of the whole chain, test mIoU of its last stage's best checkpoint, epochs per stage)."""
    chain = scaled_chain(epochs, save_dir)
    common = ["--config", str(chain), "--trainer.logger.init_args.save_dir", str(save_dir),
              "--trainer.enable_progress_bar", "false", "--seed_everything", str(seed), *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run([*LIT_MODELS, "fit", *common], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    subprocess.run([*LIT_MODELS, "test", *common, "--ckpt_path", "best"], check=True, capture_output=True)
    run = run_versions(save_dir / chain.stem)[0]
    split = [stage["args"]["trainer.max_epochs"] for stage in yaml.safe_load(chain.read_text())["chain"]]
    return seconds, last_metric(run / "fcn8s" / "test", "test/miou"), split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=16, help="epochs of each side (the recipes': 16)")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the training scenes per epoch")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    share = f" of {args.fraction:g} of the training scenes" if args.fraction < 1 else ""
    print(f"FCN-8s on the shapes scenes, {args.epochs} epochs{share} each way, {args.threads} threads\n")
    print("| training | seed | epochs | fit (s) | test mIoU |\n|---|---|---|---|---|", flush=True)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:  # each row printed as it is measured: a long run shows its progress
            save_dir = Path(folder) / f"seed{seed}"
            save_dir.mkdir()
            fraction = ("--trainer.limit_train_batches", str(args.fraction))
            fit_s, _, test_run = fit_and_test(AT_ONCE, save_dir, "--seed_everything", str(seed),
                                              "--trainer.max_epochs", str(args.epochs), *fraction)  # fmt: skip
            row("at once (8s)", seed, str(args.epochs), fit_s, last_metric(test_run, "test/miou"), results)
            chain_s, chain_miou, split = staged(seed, args.epochs, save_dir, *fraction)
            row("staged 32s -> 16s -> 8s", seed, " + ".join(map(str, split)), chain_s, chain_miou, results)
    for name, values in results.items():
        print(f"\n{name}: test mIoU {min(values):.3f}-{max(values):.3f} over seeds {args.seeds}", end="")
    print()


def row(name: str, seed: int, epochs: str, seconds: float, miou: float, results: dict[str, list[float]]) -> None:
    print(f"| {name} | {seed} | {epochs} | {seconds:.0f} | {miou:.3f} |", flush=True)
    results.setdefault(name, []).append(miou)


if __name__ == "__main__":
    main()
