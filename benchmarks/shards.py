"""The quickstart trained from the image files and from the same images prepared as shards: test top-1 of both, seed by
seed, and the images/s of the two training loaders; print markdown tables.

    python benchmarks/shards.py                       # seeds 0 and 1, the recipe's 30 epochs
    python benchmarks/shards.py --seeds 0 1 2 --epochs 10

The quickstart (ResNet-18 on the 5,000 embedded MNIST digits, lit_models/configs/quickstart.yaml) runs as `fit`
builds it, once with its own data (the exported PNG tree, 400 training digits held out for validation) and once
with --data.root set to shards that `lit-models data prepare quickstart` wrote from that tree (the held-out digits
are its val split), with the same seed; each run is tested on the 1,000 test digits with its final weights. The
runs go one after another. Then each form's training loader (the recipe's batch size and workers) is timed over
full passes, the two alternating round by round.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import lit_models
from lit_models.datamodules.shard_writer import prepare_shards

RECIPE = "quickstart"


def train_and_test(root: str | None, seed: int, epochs: int | None, folder: Path) -> float:
    """Test top-1 (%) of the quickstart trained with this data root (None: its own files) and seed."""
    trainer_args = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(folder)}  # fmt: skip
    if epochs is not None:
        trainer_args["max_epochs"] = epochs
    model, data, trainer = lit_models.recipe(RECIPE, seed_everything=seed, data={"root": root}, trainer=trainer_args)
    trainer.fit(model, datamodule=data)
    return 100 * trainer.test(model, datamodule=data, verbose=False)[0]["test/acc_top1"]


def accuracy_table(roots: dict[str, str | None], seeds: list[int], epochs: int | None, scratch: Path) -> None:
    """Train and test both forms with each seed, one run after another; print the table."""
    rows = ["| seed | files: test top-1 % | shards: test top-1 % | shards - files |", "|---|---|---|---|"]
    results: dict[str, list[float]] = {name: [] for name in roots}
    for seed in seeds:
        for name, root in roots.items():
            results[name].append(train_and_test(root, seed, epochs, scratch / f"{name}-{seed}"))
        difference = results["shards"][-1] - results["files"][-1]
        rows.append(f"| {seed} | {results['files'][-1]:.2f} | {results['shards'][-1]:.2f} | {difference:+.2f} |")
    files_mean, shards_mean = (statistics.mean(results[name]) for name in roots)
    rows.append(f"| mean | {files_mean:.2f} | {shards_mean:.2f} | {shards_mean - files_mean:+.2f} |")
    print("\n".join(rows) + "\n")


def loader_speed(roots: dict[str, str | None], rounds: int) -> dict[str, list[float]]:
    """Images/s of each form's training loader per round (one warm-up pass first), the forms alternating."""
    loaders = {}
    for name, root in roots.items():
        _, data, _ = lit_models.recipe(RECIPE, data={"root": root})
        data.setup("fit")
        loaders[name] = data.train_dataloader()
    speeds: dict[str, list[float]] = {name: [] for name in roots}
    for round_index in range(rounds + 1):
        for name, loader in loaders.items():
            start = time.perf_counter()
            images = sum(len(batch["label"]) for batch in loader)
            if round_index:  # the first pass starts the workers and fills the page cache
                speeds[name].append(images / (time.perf_counter() - start))
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1], help="none: the loader speed only")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe's 30)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes of each training loader")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as scratch:
        _, files, _ = lit_models.recipe(RECIPE)
        start = time.perf_counter()
        prepare_shards(files, Path(scratch) / "shards", workers=2)
        print(f"prepared {files.root} as shards in {time.perf_counter() - start:.0f} s\n")
        roots = {"files": None, "shards": str(Path(scratch) / "shards")}
        if args.seeds:
            accuracy_table(roots, args.seeds, args.epochs, Path(scratch))
        speeds = loader_speed(roots, args.rounds)
    reference = statistics.median(speeds["files"])
    print("\n| training loader | images/s, median (min-max) | ratio to files |\n|---|---|---|")
    for name, values in speeds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} ({min(values):.0f}-{max(values):.0f}) | {median / reference:.2f} |")
    print(f"\n{torch.get_num_threads()} torch threads; {args.epochs or 'the recipe'} epochs")


if __name__ == "__main__":
    main()
