"""Sequence predictions: a CSV of each sequence's top classes or regressed values, or the generated texts."""

from __future__ import annotations

import csv
from typing import Any

import pytorch_lightning as pl

from lit_models.callbacks import PredictionWriter, gather_rows


class SequenceWriter(PredictionWriter):
    """``<output>/predictions.csv`` (classification: sequence index, then top-k classes with probabilities;
    regression: index, then one column per target) or ``<output>/generated.txt`` (language model: each prompt
    followed by its generated text). Rank 0 writes, after gathering every rank's rows."""

    def __init__(self, output: str | None = None, overwrite: bool = False) -> None:
        """Configure the output.

        Args:
            output: Folder; default ``predictions`` in the run's log folder.
            overwrite: Write into a folder that already holds files instead of stopping with an error.
        """
        super().__init__(output, overwrite, write_interval="epoch")

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        names = list(getattr(pl_module, "class_names", None) or [])
        if getattr(pl_module, "task", None) == "language_model":
            decode = getattr(trainer.datamodule, "decode", None) or (lambda ids: "".join(names[i] for i in ids))
            rows = [[batch["prompt"], decode(batch["generated"])] for batch in batches]
        else:
            rows = [row for batch in batches for row in table_rows(batch, names)]
        rows = gather_rows(trainer, rows)
        if trainer.global_rank != 0:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        if getattr(pl_module, "task", None) == "language_model":
            path = self.path / "generated.txt"
            path.write_text("".join(f"=== prompt: {prompt!r}\n{prompt}{text}\n\n" for prompt, text in rows))
            print(f"wrote {len(rows)} generated text(s) to {path}:\n{rows[0][0]}{rows[0][1]}" if rows else "")
            return
        rows.sort(key=lambda row: row[0])
        path = self.path / "predictions.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            width = len(rows[0]) - 1 if rows else 0
            if getattr(pl_module, "task", None) == "regression":
                writer.writerow(["index", *(names or [f"target_{k}" for k in range(width)])])
            else:
                top_k = range(1, width // 2 + 1)
                writer.writerow(["index"] + [f"{col}_{k}" for k in top_k for col in ("class", "prob")])
            writer.writerows(rows)
        print(f"wrote {len(rows)} predictions to {path}")


def table_rows(batch: dict[str, Any], names: list[str]) -> list[list]:
    """One CSV row per sequence of a predict batch: its index, then classes and probabilities or the values."""
    count = len(batch["values"] if "values" in batch else batch["indices"])
    indices = batch["index"] if batch.get("index") is not None else list(range(count))
    if "values" in batch:
        values = batch["values"].tolist()
        return [[index, *(f"{v:.6g}" for v in row)] for index, row in zip(indices, values, strict=True)]
    rows = []
    for index, classes, probs in zip(indices, batch["indices"].tolist(), batch["probs"].tolist(), strict=True):
        row: list = [index]
        for k, p in zip(classes, probs, strict=True):
            row += [names[k] if names else str(k), f"{p:.6f}"]
        rows.append(row)
    return rows
