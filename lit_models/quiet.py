"""Lines that Lightning and torch print on every run but that ask nothing of a lit-models user, filtered once when the
command starts. Each filter names one message precisely; warnings that ask for an action (too few DataLoader
workers, a GPU left unused, ...) and lit-models' own messages pass. Run with ``-W default`` (or ``PYTHONWARNINGS``)
to see the filtered warnings again: warning options given to Python win over these."""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

from lightning_fabric.utilities.warnings import PossibleUserWarning
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import RichModelSummary
from pytorch_lightning.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count

# (category, regex matched at the start of the message): why it asks nothing.
WARNINGS: list[tuple[type[Warning], str]] = [
    # torch's deprecation of a name that Lightning's own _pytree module uses.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # Small data: the step metrics are not logged, the epoch ones are.
    (PossibleUserWarning, r"The number of training batches \(\d+\) is smaller than the logging interval"),
    # validate / test / predict log into the run's <stage>/ folder and a resumed fit into a new version folder, so the
    # checkpoint's folder is not theirs, by design.
    (UserWarning, r"The dirpath has changed from .* Only `best_model_path` will be reloaded"),
    # A second test (validate, predict) of a run replaces the first one's logs in the run's <stage>/ folder.
    (UserWarning, r"Experiment logs directory .*version_\d+/(validate|test|predict) exists and is not empty"),
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


# Lightning's model summaries count FLOPs only on a module's ``example_input_array``: without one their FLOPs column
# and total read 0 on every run. The text one (ModelSummary) logs here; the rich one prints (rich_model_summary).
MODEL_SUMMARY = "pytorch_lightning.callbacks.model_summary"


def without_unmeasured_flops(summary: str) -> str:
    """The text model summary without its FLOPs column and ``Total Flops`` line when it measured none."""
    lines = summary.split("\n")
    if not re.fullmatch(r"0\s+Total Flops", lines[-1]):
        return summary
    lines = lines[:-1]
    header = next((index for index, line in enumerate(lines) if " | Name " in line), None)
    if header is None or not lines[header].rstrip().endswith(" | FLOPs"):
        return "\n".join(lines)
    # FLOPs is the last column: every row and divider of the table loses the same width.
    cut = lines[header].rindex(" | FLOPs")
    removed = len(lines[header]) - cut
    end = max(index for index, line in enumerate(lines) if line and set(line) == {"-"})
    for index in range(header, end + 1):
        line = lines[index]
        lines[index] = line[: len(line) - removed] if set(line) == {"-"} else line[:cut]
    return "\n".join(lines)


def rich_model_summary(
    summary_data: list[tuple[str, list[str]]],
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    total_training_modes: dict[str, int],
    total_flops: int,
    **summarize_kwargs: Any,
) -> None:
    """RichModelSummary's table and totals, without FLOPs where Lightning measured none."""
    if total_flops:
        return RichModelSummary.summarize(summary_data, total_parameters, trainable_parameters, model_size,
                                          total_training_modes, total_flops, **summarize_kwargs)  # fmt: skip
    from rich import get_console
    from rich.table import Table

    columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
    table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
    for name, _ in columns:
        left = name in ("Name", "Type", "Mode")
        table.add_column(name, justify="left" if left else "right", style="dim" if name == " " else None)
    for row in zip(*(values for _, values in columns), strict=True):
        table.add_row(*row)
    totals = Table.grid(expand=True)
    for label, value in [
        ("Trainable params", get_human_readable_count(trainable_parameters)),
        ("Non-trainable params", get_human_readable_count(total_parameters - trainable_parameters)),
        ("Total params", get_human_readable_count(total_parameters)),
        ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
        ("Modules in train mode", total_training_modes["train"]),
        ("Modules in eval mode", total_training_modes["eval"]),
    ]:
        totals.add_row(f"[bold]{label}[/]: {value}")
    get_console().print(table)
    get_console().print(totals)
    return None


def quiet_model_summary(trainer: Trainer) -> None:
    """Give the trainer's RichModelSummary (Lightning's default beside its rich progress bar) the summary above."""
    for callback in trainer.callbacks:
        if type(callback) is RichModelSummary:
            callback.summarize = rich_model_summary  # called as self.summarize(...): a static method's arguments


class EditMessage(logging.Filter):
    def __init__(self, edit: Callable[[str], str]) -> None:
        super().__init__()
        self.edit = edit

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        edited = self.edit(message)
        if edited != message:
            record.msg, record.args = edited, ()
        return True


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
    summary = logging.getLogger(MODEL_SUMMARY)
    if not any(isinstance(f, EditMessage) for f in summary.filters):
        summary.addFilter(EditMessage(without_unmeasured_flops))
