"""Argument checks shared by the nets: one ValueError that names the argument, its value and the rule."""

from __future__ import annotations

from typing import Any


def check_args(owner: str, rules: list[tuple[str, Any, bool, str]]) -> None:
    """Raise ValueError for the first ``(name, value, ok, rule)`` that is not ok."""
    for name, value, ok, rule in rules:
        if not ok:
            raise ValueError(f"{owner} {name} must be {rule}, got {value!r}")
