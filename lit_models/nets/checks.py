"""Argument checks shared by the nets: one ValueError that names the argument, its value and the rule."""

from __future__ import annotations

from typing import Any


def check_args(owner: str, rules: list[tuple[str, Any, bool, str]]) -> None:
    """Raise ValueError for the first ``(name, value, ok, rule)`` that is not ok."""
    for name, value, ok, rule in rules:
        if not ok:
            raise ValueError(f"{owner} {name} must be {rule}, got {value!r}")


def check_classifier_head(owner: str, num_classes: int, width_mult: float, representation_size: int, dropout: float):
    """The size arguments every classifier with a fully connected head takes (AlexNet, VGG)."""
    check_args(owner, [
        ("num_classes", num_classes, num_classes >= 1, ">= 1"),
        ("width_mult", width_mult, width_mult > 0, "> 0"),
        ("representation_size", representation_size, representation_size >= 1, ">= 1"),
        ("dropout", dropout, 0.0 <= dropout <= 1.0, "in [0, 1]"),
    ])  # fmt: skip
