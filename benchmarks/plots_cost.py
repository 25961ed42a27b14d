"""What the training pictures cost: the quickstart's epochs with and without TrainingPictures.

Runs of the quickstart recipe (ResNet-18 x0.25 on the embedded digits, CSV logger) alternate with the pictures on
(the CLI's default, 8 samples) and off (``--plots false``), in this one process, so a machine whose load changes
slows both alike. Each run trains ``--epochs`` epochs; its first epoch (loader start, warm-up) is left out. Printed:
the mean epoch time (training and validation) of each setting, their ratio, and the time spent inside the callback
itself per epoch (drawing the samples) and once per fit (the curves), measured directly, which is not blurred by
the noise of whole epochs.

    python benchmarks/plots_cost.py --epochs 3 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lit_models.cli import LitModelsCLI
from lit_models.pictures import TrainingPictures

QUICKSTART = Path(__file__).resolve().parents[1] / "lit_models" / "configs" / "quickstart.yaml"


class EpochTimer(Callback):
    """Wall time of each training epoch, its validation included (Lightning validates before the epoch ends)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self.start)


class TimedPictures(TrainingPictures):
    """TrainingPictures that adds up the time spent in its own sample and curve drawing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sample_seconds = 0.0
        self.curve_seconds = 0.0

    def collect(self, *args: Any) -> None:
        start = time.perf_counter()
        super().collect(*args)
        self.sample_seconds += time.perf_counter() - start

    def publish(self, *args: Any) -> None:
        start = time.perf_counter()
        super().publish(*args)
        self.sample_seconds += time.perf_counter() - start

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        start = time.perf_counter()
        super().on_fit_end(trainer, pl_module)
        self.curve_seconds += time.perf_counter() - start


def run(plots: bool, epochs: int, save_dir: Path) -> tuple[list[float], TimedPictures | None]:
    args = ["--config", str(QUICKSTART), "--trainer.max_epochs", str(epochs),
            "--trainer.logger.init_args.save_dir", str(save_dir), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.enable_checkpointing", "false"]  # fmt: skip
    cli = LitModelsCLI(args=args, run=False)
    timer = EpochTimer()
    pictures = TimedPictures(samples=8) if plots else None
    cli.trainer.callbacks += [timer] + ([pictures] if pictures else [])
    cli.trainer.fit(cli.model, cli.datamodule)
    return timer.seconds[1:], pictures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not counted")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting, alternating")
    options = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI below takes its arguments from `args`, not from this script's
    epochs: dict[bool, list[float]] = {True: [], False: []}
    drawing, curves = [], []
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(options.repeats):
            for plots in (True, False):
                seconds, pictures = run(plots, options.epochs, Path(folder) / f"{repeat}_{plots}")
                epochs[plots] += seconds
                if pictures is not None:
                    drawing.append(pictures.sample_seconds / options.epochs)
                    curves.append(pictures.curve_seconds)
                print(f"run {repeat} plots={plots}: epochs {', '.join(f'{s:.1f}' for s in seconds)} s", flush=True)
    on, off = statistics.mean(epochs[True]), statistics.mean(epochs[False])
    print()
    print("| quickstart epoch (train + val) | seconds |")
    print("|---|---|")
    print(f"| --plots false (mean of {len(epochs[False])}) | {off:.2f} |")
    print(f"| --plots true, 8 samples (mean of {len(epochs[True])}) | {on:.2f} |")
    print(f"| ratio on / off | {on / off:.3f} |")
    print(f"| inside the callback, per epoch (samples drawn) | {statistics.mean(drawing):.3f} |")
    print(f"| inside the callback, once per fit (curves.png) | {statistics.mean(curves):.3f} |")


if __name__ == "__main__":
    main()
