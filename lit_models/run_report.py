"""What a run tells its user beyond Lightning's own lines: one plain line per epoch where no progress bar can show
one, a warning when validation loss explodes, and at the end of ``fit`` where the run and its checkpoints are and
what to type next."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)


def epoch_scalars(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """The ``train/*`` then ``val/*`` scalars of ``trainer.callback_metrics``, loss first in each stage: one value
    per name (``train/loss``, not also its ``_step`` and ``_epoch`` copies), per-class values (``val/iou/cat``)
    left out."""
    shown = {}
    for stage in ("train", "val"):
        names = [name for name in metrics if name.startswith(f"{stage}/") and name.count("/") == 1]
        names = [name for name in names if not name.endswith("_step")]
        names = [name for name in names if not (name.endswith("_epoch") and name.removesuffix("_epoch") in metrics)]
        for name in sorted(names, key=lambda name: (not name.startswith(f"{stage}/loss"), name)):
            value = metrics[name]
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                shown[name.removesuffix("_epoch")] = float(value)
    return shown


def shorter(path: str | Path) -> str:
    """``path`` relative to the working folder where it lies below it, for lines users copy."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class RunReport(Callback):
    """Report a run in plain lines on stdout (rank 0 only).

    Args:
        config: How to repeat this run's model and data in the next commands (``--config quickstart``); None: the
            run's own ``config.yaml``.
        epoch_lines: Print one line per epoch (``epoch 3/10  train/loss 0.412  val/loss 0.388  (41 s)``); None:
            where no progress bar shows them: stdout is not a terminal (a log file), or the bar is off.
        explode_ratio: Warn once when the validation loss exceeds this multiple of the epoch's training loss...
        explode_floor: ...and this absolute value (a tiny training loss makes any ratio large).
    """

    def __init__(
        self,
        config: str | None = None,
        epoch_lines: bool | None = None,
        explode_ratio: float = 10.0,
        explode_floor: float = 1.0,
    ) -> None:
        self.config = config
        self.epoch_lines = epoch_lines
        self.explode_ratio = explode_ratio
        self.explode_floor = explode_floor
        self.warned = False
        self.validated = False
        self.epoch_start = time.monotonic()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epoch_lines is None:
            self.epoch_lines = not sys.stdout.isatty() or trainer.progress_bar_callback is None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_start = time.monotonic()
        self.validated = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.say_where(trainer, "validation")
        elif not trainer.sanity_checking:
            self.validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        scalars = epoch_scalars(trainer.callback_metrics)
        if not self.validated:  # the last validation's values would pass for this epoch's
            scalars = {name: value for name, value in scalars.items() if not name.startswith("val/")}
        if not trainer.is_global_zero:
            return
        self.check_explosion(scalars, trainer.current_epoch)
        if self.epoch_lines:
            total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
            values = "  ".join(f"{name} {value:.4g}" for name, value in scalars.items())
            seconds = time.monotonic() - self.epoch_start
            print(f"epoch {trainer.current_epoch + 1}{total}  {values}  ({seconds:.0f} s)", flush=True)

    def check_explosion(self, scalars: dict[str, float], epoch: int) -> None:
        """Warn, once per run, when the validation loss is far above the training loss: the model does much worse
        on data it does not train on, which more epochs rarely fix."""
        train, val = scalars.get("train/loss"), scalars.get("val/loss")
        if self.warned or train is None or val is None:
            return
        exploded = not math.isfinite(val) or (val > self.explode_floor and val > self.explode_ratio * train)
        if not exploded:
            return
        self.warned = True
        log.warning(
            "val/loss %.4g is %s the training loss %.4g (epoch %d): the model does far worse on the validation data "
            "than on what it trains on. Usually the learning rate is too high for this data, or the data is too "
            "small for the recipe's network. Try a lower learning rate (--model.optimizer.lr), fine-tuning "
            "from pretrained weights, more training data, or a smaller recipe for a small folder (lit-models recipes "
            "lists them; classification/small_folder is one for images).",
            val,
            f"{val / train:.0f}x" if math.isfinite(val) and train > 0 else "far above",
            train,
            epoch,
        )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # on every rank: a collective (a broadcast from rank 0) under DDP
        if trainer.is_global_zero and not trainer.fast_dev_run:
            print(self.summary(trainer, log_dir), flush=True)

    def summary(self, trainer: pl.Trainer, log_dir: str | None) -> str:
        """Where the run (``log_dir``) and its checkpoints are, the best one's score, and the commands that use
        them."""
        checkpoints = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
        best = next((cb for cb in checkpoints if cb.monitor and cb.best_model_path), None)
        last = next((cb.last_model_path or cb.best_model_path for cb in checkpoints if not cb.monitor), None)
        last = last or next((cb.last_model_path for cb in checkpoints if cb.last_model_path), None)
        lines = ["", "Done."]
        if log_dir:
            lines.append(f"  run folder       {shorter(log_dir)}/")
        if best is not None:
            score = f" ({best.monitor} {float(best.best_model_score):.4g})" if best.best_model_score is not None else ""
            lines.append(f"  best checkpoint  {shorter(best.best_model_path)}{score}")
        if last:
            lines.append(f"  last checkpoint  {shorter(last)}")
        chosen = best.best_model_path if best is not None else last
        if chosen:
            config = self.config or f"--config {shorter(Path(log_dir or '.') / 'config.yaml')}"
            alias = "best" if best is not None else "last"
            lines += [
                "Next:",
                f"  lit-models test {config} --ckpt_path {alias}",
                f"  lit-models predict {shorter(chosen)} YOUR_INPUTS...  (images, folders or prompts)",
            ]
        return "\n".join(lines)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.say_where(trainer, "test")

    def say_where(self, trainer: pl.Trainer, what: str) -> None:
        log_dir = trainer.log_dir  # on every rank: a collective under DDP
        if trainer.is_global_zero and log_dir and not trainer.fast_dev_run:
            print(f"{what} results logged in {shorter(log_dir)}/", flush=True)
