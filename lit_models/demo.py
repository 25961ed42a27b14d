"""The end of ``make demo``: after ``lit-models fit`` and ``lit-models test --ckpt_path best`` of the quickstart, say
what the test measured, where the run and its checkpoint are, and what to try next.

    python -m lit_models.demo        # reads the newest quickstart runs under ./runs/quickstart
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import yaml

from lit_models.recipes import RECIPES
from lit_models.runs import recorded_best, run_versions

NEXT_STEPS = """\
Try next:
  lit-models predict --config quickstart --ckpt_path best --data.predict_dir YOUR_DIGITS/
      labels your own images of digits (any folder, any depth) into predictions.csv in the run's predict/ folder
  lit-models fit --config classification/resnet18_imagenet --data.root YOUR_FOLDER --data.batch_size 32 \\
      --model.init_args.weights IMAGENET1K_V1 --model.init_args.optimizer.init_args.lr 0.01 --trainer.max_epochs 15
      fine-tunes ImageNet weights (fetched once into torch's cache) on your own classes: the first choice;
      YOUR_FOLDER/train/<class>/*.jpg, optional val/ and test/ (docs/classification.md)
  lit-models fit --config classification/small_folder --data.root YOUR_FOLDER
      trains from scratch, nothing to fetch: a few hundred images of a handful of classes in minutes on a CPU"""


def quickstart_runs() -> Path:
    """Where the quickstart recipe's logger writes, relative to the working folder."""
    recipe = yaml.safe_load((RECIPES / "quickstart.yaml").read_text())
    logger = recipe["trainer"]["logger"]["init_args"]
    return Path(logger["save_dir"]) / logger["name"]


def read_test_metrics(run: Path) -> dict[str, float]:
    """The ``test/*`` values that the test of a run logged into its ``test/`` folder (empty where none did)."""
    path = run / "test" / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: float(value) for row in rows for key, value in row.items() if key.startswith("test/") and value}


def best_checkpoint(run: Path) -> Path | None:
    """The checkpoint that ``--ckpt_path best`` takes from this run: the one its last.ckpt names as best."""
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    best = recorded_best(last)
    if best is None:
        return None
    best = run / "checkpoints" / best.name
    return best if best.is_file() else None


def summary(runs: Path) -> str:
    """What the newest test of the quickstart measured and where its run is, or why that cannot be said."""
    tested = next((run for run in run_versions(runs) if read_test_metrics(run)), None)
    if tested is None:
        raise FileNotFoundError(f"no tested quickstart run under {runs}/: run `make demo` in this folder first.")
    metrics = read_test_metrics(tested)
    lines = ["", "Quickstart done: ResNet-18 on the embedded MNIST digits."]
    accuracy = [f"{metrics[f'test/acc_top{k}']:.1%} top-{k}" for k in (1, 5) if f"test/acc_top{k}" in metrics]
    loss = f" (loss {metrics['test/loss']:.3f})" if "test/loss" in metrics else ""
    lines.append(f"  test accuracy  {', '.join(accuracy)}{loss} on the held-out test digits")
    contents = ["metrics.csv", "config.yaml", *(["pictures/"] if (tested / "pictures").is_dir() else [])]
    lines.append(f"  trained run    {tested}/  ({', '.join(contents)})")
    if (checkpoint := best_checkpoint(tested)) is not None:
        lines.append(f"  checkpoint     {checkpoint}")
    drawn = sorted(path.name for path in (tested / "test" / "pictures").glob("*.png"))
    pictures = f"  (pictures/: {', '.join(drawn)})" if drawn else ""
    lines.append(f"  test results   {tested / 'test'}/{pictures}")
    return "\n".join([*lines, "", NEXT_STEPS])


def main() -> None:
    try:
        print(summary(quickstart_runs()))
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
