"""Run folders as the loggers write them (``<save_dir>/<name>/version_N/``) and the checkpoints inside them."""

from __future__ import annotations

import re
from pathlib import Path

import torch


def run_versions(runs: Path) -> list[Path]:
    """The ``version_N`` folders of a run folder, newest (highest N) first."""
    found = [p for p in runs.glob("version_*") if re.fullmatch(r"version_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.removeprefix("version_")), reverse=True)


def recorded_best(last: Path) -> Path | None:
    """The best checkpoint that a ``last.ckpt`` records (its monitored ModelCheckpoint's state), None if none."""
    # mmap: only the callback states are read, not the weights and optimizer state around them.
    state = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("callbacks", {})
    for key, value in state.items():
        if key.startswith("ModelCheckpoint") and value.get("monitor") and value.get("best_model_path"):
            return Path(value["best_model_path"])
    return None
