"""Class names travel from the DataModule into every checkpoint and are checked when a checkpoint is reused."""

from __future__ import annotations


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
