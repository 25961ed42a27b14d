"""Run configs through the real `lit-models` command, one process at a time, and read back what they logged."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def last_metric(run_dir: Path, key: str) -> float:
    with open(run_dir / "metrics.csv") as handle:
        return float([row[key] for row in csv.DictReader(handle) if row.get(key)][-1])


def all_metrics(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "metrics.csv") as handle:
        return [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]


def run_command(command: str, config: Path, save_dir: Path, *extra: str) -> None:
    """`lit-models COMMAND --config CONFIG ...EXTRA`, logging under ``save_dir``, in a new process; RuntimeError with
    the end of its output if it fails."""
    common = ["--config", str(config), "--trainer.logger.init_args.save_dir", str(save_dir),
              "--trainer.enable_progress_bar", "false", *extra]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "lit_models", command, *common], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"lit-models {command} {' '.join(common)} failed:\n{result.stderr[-4000:]}")


def fit_and_test(config: Path, save_dir: Path, *extra: str) -> tuple[float, Path, Path]:
    """`fit`, then `test --ckpt_path best` in a new process; returns (fit wall seconds, fit run, test run).

    One at a time: two trainings sharing 2 cores slow each other several-fold. The wall time is the fit
    process's, start to end, including start-up and validation after every epoch.
    """
    start = time.perf_counter()
    run_command("fit", config, save_dir, *extra)
    fit_seconds = time.perf_counter() - start
    run_command("test", config, save_dir, *extra, "--ckpt_path", "best")
    runs = sorted((save_dir / config.stem).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    # `test --ckpt_path best` logs into the fit run's own test/ folder.
    test_run = runs[0] / "test" if (runs[0] / "test" / "metrics.csv").is_file() else runs[-1]
    return fit_seconds, runs[0], test_run


def run_checkpoints(folder: Path) -> dict[str, Path]:
    """The runs a `--trainer.logger.init_args.save_dir FOLDER` left there: config name -> the best checkpoint of its
    newest version that has one (its last.ckpt where no best-*.ckpt was kept)."""
    found = {}
    for config in sorted(path for path in folder.iterdir() if path.is_dir()):
        versions = sorted(config.glob("version_*/checkpoints"), key=lambda p: int(p.parent.name.split("_")[1]))
        for checkpoints in reversed(versions):
            chosen = sorted(checkpoints.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime) or [
                *checkpoints.glob("last.ckpt")
            ]
            if chosen:
                found[config.name] = chosen[-1]
                break
    return found


def describe_checkpoint(run_dir: Path) -> dict:
    """Model class, parameter count of the net and epochs trained, from the run's last.ckpt."""
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    weights = checkpoint["state_dict"].items()
    return {
        "model": checkpoint["hyper_parameters"]["_class_path"].rsplit(".", 1)[-1],
        "hparams": checkpoint["hyper_parameters"],
        "params": sum(
            v.numel() for k, v in weights if k.startswith("net.") and "running_" not in k and v.is_floating_point()
        ),
        "epochs": checkpoint["epoch"] + 1,  # last.ckpt is rewritten after every epoch
    }
