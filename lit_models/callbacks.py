"""Callbacks the CLI adds: the predictions CSV writer."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.callbacks import BasePredictionWriter


class PredictionCSVWriter(BasePredictionWriter):
    """Writes ``predict`` results as CSV: file, then top-k class names with probabilities (rank 0 writes)."""

    def __init__(self, output: str | None = None, overwrite: bool = False) -> None:
        """Configure the CSV output.

        Args:
            output: CSV path; default ``predictions.csv`` in the run's log folder.
            overwrite: Replace an existing file instead of stopping with an error.
        """
        super().__init__(write_interval="epoch")
        self.output = output
        self.overwrite = overwrite

    def resolve_path(self, trainer: pl.Trainer) -> Path:
        return Path(self.output) if self.output else Path(trainer.log_dir or ".") / "predictions.csv"

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.resolve_path(trainer)
        if path.exists() and not self.overwrite:
            raise FileExistsError(
                f"{path} already exists; pass another --prediction_writer.output or --prediction_writer.overwrite true."
            )

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        names = getattr(pl_module, "class_names", None)
        rows = []
        for batch in predictions[0] if predictions and isinstance(predictions[0], list) else predictions:
            for path, indices, probs in zip(
                batch["path"], batch["indices"].tolist(), batch["probs"].tolist(), strict=True
            ):
                row = [path]
                for index, prob in zip(indices, probs, strict=True):
                    row += [names[index] if names else str(index), f"{prob:.6f}"]
                rows.append(row)
        if trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
        if trainer.global_rank != 0:
            return
        rows.sort(key=lambda row: row[0])
        top_k = (len(rows[0]) - 1) // 2 if rows else 0
        path = self.resolve_path(trainer)
        os.makedirs(path.parent, exist_ok=True)
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path"] + [f"{col}_{k}" for k in range(1, top_k + 1) for col in ("class", "prob")])
            writer.writerows(rows)
        print(f"wrote {len(rows)} predictions to {path}")
