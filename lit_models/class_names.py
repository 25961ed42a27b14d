"""Class names travel from the DataModule into every checkpoint and are checked when a checkpoint is reused."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


class ClassNamesMismatchError(ValueError):
    """A checkpoint was trained on other classes (or another order) than the data it is used with."""


def describe_difference(saved: list[str], current: list[str]) -> str:
    def show(names: list[str]) -> str:
        return repr(names) if len(names) <= 40 else f"[{', '.join(names[:20])}, … {len(names) - 20} more]"

    only_saved = sorted(set(saved) - set(current))
    only_current = sorted(set(current) - set(saved))
    if not only_saved and not only_current:
        detail = "the same names in a different order, so every class index would mean another class"
    else:
        detail = f"only in the checkpoint: {show(only_saved)}; only in the data: {show(only_current)}"
    return (
        f"checkpoint classes {show(saved)} ({len(saved)}) differ from the data's classes {show(current)} "
        f"({len(current)}): {detail}. Use the data the checkpoint was trained on, or train a new model."
    )


class ClassNamesMixin(pl.LightningModule):
    """Keeps ``self.class_names`` (from ``trainer.datamodule.class_names``) in the checkpoint and checks it."""

    class_names: list[str] | None = None

    def setup(self, stage: str) -> None:
        names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None)
        if names is None:
            return
        names = [str(name) for name in names]
        if self.class_names is not None and self.class_names != names:
            # Weights loaded before the trainer started (load_from_checkpoint) meet different data.
            raise ClassNamesMismatchError(describe_difference(self.class_names, names))
        self.class_names = names

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.class_names is not None:
            checkpoint["class_names"] = list(self.class_names)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("class_names")
        if saved is None:
            return
        if self.class_names is not None and list(saved) != self.class_names:
            raise ClassNamesMismatchError(describe_difference(list(saved), self.class_names))
        self.class_names = list(saved)
