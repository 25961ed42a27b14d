"""Lines that Lightning and torch print on every run but that ask nothing of a lit-models user, filtered once when the
command starts. Each filter names one message precisely; warnings that ask for an action (too few DataLoader
workers, a GPU left unused, ...) and lit-models' own messages pass. Run with ``-W default`` (or ``PYTHONWARNINGS``)
to see the filtered warnings again: warning options given to Python win over these."""

from __future__ import annotations

import logging
import re
import sys
import warnings

from lightning_fabric.utilities.warnings import PossibleUserWarning

# (category, regex matched at the start of the message): why it asks nothing.
WARNINGS: list[tuple[type[Warning], str]] = [
    # torch's deprecation of a name that Lightning's own _pytree module uses.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # Small data: the step metrics are not logged, the epoch ones are.
    (PossibleUserWarning, r"The number of training batches \(\d+\) is smaller than the logging interval"),
    # validate / test / predict and a resumed fit log into a new version folder, by design.
    (UserWarning, r"The dirpath has changed from .* Only `best_model_path` will be reloaded"),
    # Resuming mid-epoch (after SIGTERM): lit_models.preemption says what it means for the rest of the epoch.
    (PossibleUserWarning, r"You're resuming from a checkpoint that ended before the epoch ended"),
    # Said to the author of an IterableDataset: the text DataModule's streams shard themselves per worker.
    (UserWarning, r"Your `IterableDataset` has `__len__` defined"),
]

# Logger name -> regexes of INFO lines to drop.
LOG_LINES: dict[str, list[str]] = {
    "pytorch_lightning.utilities.rank_zero": [
        r"💡 Tip: ",  # a vendor's services
        # TaskModule.configure_callbacks replaces Lightning's default ModelCheckpoint on purpose.
        r"The following callbacks returned in `LightningModule.configure_callbacks` will override existing callbacks "
        r"passed to Trainer: ModelCheckpoint$",
        r"TPU available: False, using: 0 TPU cores$",
        # Repeats the "Restoring states from the checkpoint path at ..." line before it.
        r"(Restored all states|Loaded model weights) from the checkpoint at ",
    ],
    # The run's config.yaml records the seed.
    "lightning_fabric.utilities.seed": [r"(\[rank: \d+\] )?Seed set to -?\d+$"],
}


class DropLines(logging.Filter):
    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.patterns = [re.compile(pattern) for pattern in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.match(message) for pattern in self.patterns)


def quiet_libraries() -> None:
    """Install the filters above (once per process; DDP's other ranks start the command again and install their own)."""
    if not sys.warnoptions:
        for category, message in WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
    for name, patterns in LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropLines) for f in logger.filters):
            logger.addFilter(DropLines(patterns))
