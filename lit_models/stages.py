"""Initialising a model from an earlier stage's checkpoint, as the papers' staged procedures do (FCN-16s from a
trained FCN-32s, the YOLO detector from its pre-trained classifier, Faster R-CNN's alternating steps).

The mapping from one architecture's parameters to the next is declared in code by the later module
(``init_mapping``), never guessed from matching names: every source parameter must land somewhere or be declared
left out, and every target parameter must be filled or be declared new. The checkpoint is data: its tensors are
read with ``weights_only=True``, its model name is only compared with the registered names, never imported from,
and its arguments are checked against that model's signature (:mod:`lit_models.checkpoint_file`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lit_models.checkpoint_file import CHECKPOINT_KEY, read_checkpoint, saved_arguments, saved_class

if TYPE_CHECKING:
    from lit_models.task import TaskModule


class InitError(ValueError):
    """A checkpoint that cannot initialise this model: another architecture, other shapes, unmapped parameters."""


@dataclass(frozen=True)
class ParameterMapping:
    """How a source checkpoint's parameters become the target module's.

    Args:
        sources: Source state-dict key prefix -> target prefix, or None to leave those source parameters out.
            The longest matching prefix wins; a key under no prefix keeps its name.
        new: Target prefixes that keep their own initialisation (the layers the later architecture adds).
    """

    sources: Mapping[str, str | None] = field(default_factory=dict)
    new: tuple[str, ...] = ()

    def target_key(self, key: str) -> str | None:
        """Where the source parameter ``key`` goes (None: left out)."""
        matches = [prefix for prefix in self.sources if key.startswith(prefix)]
        if not matches:
            return key
        prefix = max(matches, key=len)
        target = self.sources[prefix]
        return None if target is None else target + key[len(prefix) :]

    def is_new(self, key: str) -> bool:
        return any(key.startswith(prefix) for prefix in self.new)

    def apply(self, source: Mapping[str, Tensor], target: Mapping[str, Tensor], what: str) -> dict[str, Tensor]:
        """The target state entries this mapping fills from ``source``.

        Raises:
            InitError: A source parameter with no place or the wrong shape, or a target parameter left unfilled
                that is not declared new; ``what`` (the checkpoint) is named in the message.
        """
        filled: dict[str, Tensor] = {}
        homeless, misshapen = [], []
        for key, value in source.items():
            destination = self.target_key(key)
            if destination is None:
                continue
            if destination not in target or self.is_new(destination):
                homeless.append(f"{key} -> {destination}" if destination != key else key)
            elif target[destination].shape != value.shape:
                misshapen.append(f"{key} {tuple(value.shape)} -> {destination} {tuple(target[destination].shape)}")
            else:
                filled[destination] = value
        unfilled = [key for key in target if key not in filled and not self.is_new(key)]
        problems = [
            (homeless, "source parameters with no place in this model"),
            (misshapen, "shapes that differ"),
            (unfilled, "parameters of this model the checkpoint does not fill"),
        ]
        described = [
            f"{label}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}" for keys, label in problems if keys
        ]
        if described:
            raise InitError(f"cannot initialise from {what}: {'; '.join(described)}.")
        return filled


@dataclass(frozen=True)
class SourceModel:
    """An earlier stage's checkpoint, as a later module's ``init_mapping`` sees it.

    Args:
        path: The checkpoint file.
        model: Its module's registered name (``FCN``, ``YOLOClassifier``).
        hparams: Its module's hyperparameters (``variant``, ``backbone``, ...).
        state: Its module's state dict (``net.*`` keys).
        stage: Its own stage record (chain, stage, init_from), where it came from a chain.
    """

    path: str
    model: str
    hparams: dict[str, Any]
    state: dict[str, Tensor]
    stage: dict[str, Any] | None = None

    def describe(self) -> str:
        return f"{self.path} (a {self.model} checkpoint)"


def read_source(path: str | os.PathLike) -> SourceModel:
    """The checkpoint ``path`` as a :class:`SourceModel` (errors name the file)."""
    saved = read_checkpoint(path)
    model = saved_class(saved, "model", path)  # a registered name, its arguments checked as data
    return SourceModel(
        path=str(Path(path)),
        model=model.__name__,
        hparams=saved_arguments(saved, "model", model, path),
        state=dict(saved.get("state_dict") or {}),
        stage=saved[CHECKPOINT_KEY].get("stage"),
    )


def initialise(module: TaskModule, path: str | os.PathLike) -> SourceModel:
    """Copy the parameters and buffers of the checkpoint ``path`` into ``module`` through its declared
    ``init_mapping``; the layers it declares new keep their own initialisation. Returns the source read.

    Raises:
        InitError: The module does not take that checkpoint, or its parameters do not fit.
    """
    source = read_source(path)
    mapping = module.init_mapping(source)
    target = module.state_dict()
    filled = mapping.apply(source.state, target, source.describe())
    with torch.no_grad():
        for key, value in filled.items():
            target[key].copy_(value)
    module.initialised_from = {"checkpoint": source.path, "model": source.model, "stage": source.stage}
    return source
