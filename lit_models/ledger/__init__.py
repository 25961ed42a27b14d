"""The fidelity ledgers: for each paper, what it specifies and where lit-models does it, or why it does not.

One YAML file per paper in this folder (``alexnet.yaml`` ... ``gru.yaml``)::

    paper: Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with Deep CNNs", NeurIPS
    systems: [AlexNet]                   # the registered modules whose recipes this paper's items govern
    items:
      - what: PCA lighting noise, standard deviation 0.1
        where: §4.1
        kind: augmentation               # architecture | training | augmentation | evaluation
        recipe:                          # recipe -> the values its resolved config must hold
          classification/alexnet_imagenet: {data.init_args.lighting: 0.1}
        code: lit_models.datamodules.transforms.PCALighting   # an object that must import
        claims: [PCA lighting, lighting noise]   # phrases a recipe comment may use for this item
      - what: An ensemble of 5 (7) networks
        where: §6
        kind: evaluation
        not_reproduced: one network per run; averaging checkpoints is left to the user

An item is bound (``recipe`` and/or ``code``) or ``not_reproduced`` with the reason; ``note`` adds what a reader
should know (an option that turns it on, a difference in form). A recipe name may be a pattern
(``sequence/lstm_*``); a key of a chain recipe is ``STAGE/key`` (``fcn16s/model.init_args.variant``,
``fcn16s/init_from``). ``lit_models.ledger.check`` verifies the bindings and the recipe comments;
``python -m lit_models.ledger`` prints docs/fidelity.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

LEDGERS = Path(__file__).resolve().parent
KINDS = ("architecture", "training", "augmentation", "evaluation")
# The papers in the order of the docs page: as the README lists the systems.
ORDER = ("alexnet", "vgg", "googlenet", "resnet", "densenet", "fcn", "rcnn", "sppnet", "fast_rcnn", "faster_rcnn",
         "yolov1", "markov", "rnn", "lstm", "gru")  # fmt: skip
# libyaml's loader where PyYAML has it: the pure-Python one takes most of a second for the fifteen files.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ITEM_KEYS = {"what", "where", "kind", "recipe", "code", "not_reproduced", "claims", "note"}
LEDGER_KEYS = {"paper", "systems", "items"}


class LedgerError(ValueError):
    """A ledger file that does not say what it must: names the file, the item and what to fix."""


@dataclass(frozen=True)
class Item:
    """One thing a paper specifies, and where lit-models does it.

    Args:
        what: The paper's specification, short.
        where: Its section, table or figure in the paper (or another source's, named).
        kind: "architecture", "training", "augmentation" or "evaluation".
        recipe: Recipe name (or pattern) -> {dotted config key: value} that its resolved config holds.
        code: Dotted paths of the objects that implement it.
        not_reproduced: Why lit-models does not do it (empty when it does).
        claims: Phrases a recipe comment uses to say it does this (case-insensitive, whole words).
        note: What a reader should also know (the option that turns it on, a difference in form).
    """

    what: str
    where: str
    kind: str
    recipe: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    code: tuple[str, ...] = ()
    not_reproduced: str = ""
    claims: tuple[str, ...] = ()
    note: str = ""

    @property
    def reproduced(self) -> bool:
        return not self.not_reproduced


@dataclass(frozen=True)
class Ledger:
    """A paper's ledger: its citation, the systems its items govern, and the items."""

    name: str
    paper: str
    systems: tuple[str, ...]
    items: tuple[Item, ...]
    path: Path

    def kinds(self) -> set[str]:
        return {item.kind for item in self.items}


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LedgerError(f"{where}: `{key}` must be a non-empty string, got {value!r}")
    return value.strip()


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise LedgerError(f"{where}: `{key}` must be a string or a non-empty list of strings, got {value!r}")
    return tuple(_text(v, where, key) for v in values)


def _bindings(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not value:
        raise LedgerError(f"{where}: `recipe` maps recipe names to {{config key: value}}, got {value!r}")
    for name, values in value.items():
        if not isinstance(name, str) or not isinstance(values, dict) or not values:
            raise LedgerError(f"{where}: `recipe` entry {name!r} must map config keys to values, got {values!r}")
        for key in values:
            if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
                raise LedgerError(f"{where}: recipe {name}: {key!r} is not a dotted config key")
    return value


def parse_item(entry: Any, where: str) -> Item:
    """One item of a ledger file, checked: a LedgerError names ``where`` (file and item) and what is wrong."""
    if not isinstance(entry, dict):
        raise LedgerError(f"{where}: an item is a mapping with what, where, kind and a binding, got {entry!r}")
    unknown = set(entry) - ITEM_KEYS
    if unknown:
        raise LedgerError(f"{where}: unknown keys {sorted(unknown)}; an item takes {sorted(ITEM_KEYS)}")
    what = _text(entry.get("what"), where, "what")
    where = f"{where} ({what!r})"
    kind = entry.get("kind")
    if kind not in KINDS:
        raise LedgerError(f"{where}: `kind` must be one of {list(KINDS)}, got {kind!r}")
    bound = "recipe" in entry or "code" in entry
    if bound == ("not_reproduced" in entry):
        raise LedgerError(
            f"{where}: give `recipe:` and/or `code:` (where lit-models does it) or `not_reproduced:` (why not), "
            "not both and not neither"
        )
    return Item(
        what=what,
        where=_text(entry.get("where"), where, "where"),
        kind=kind,
        recipe=_bindings(entry["recipe"], where) if "recipe" in entry else {},
        code=_strings(entry["code"], where, "code") if "code" in entry else (),
        not_reproduced=_text(entry["not_reproduced"], where, "not_reproduced") if "not_reproduced" in entry else "",
        claims=_strings(entry["claims"], where, "claims") if "claims" in entry else (),
        note=_text(entry["note"], where, "note") if "note" in entry else "",
    )


def load_ledger(path: str | Path) -> Ledger:
    """The ledger in ``path``.

    Raises:
        LedgerError: A malformed file or item, naming the file, the item and what to fix.
    """
    path = Path(path)
    try:
        loaded = yaml.load(path.read_text(), Loader=LOADER)
    except yaml.YAMLError as error:
        raise LedgerError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(loaded, dict) or set(loaded) != LEDGER_KEYS:
        got = sorted(loaded) if isinstance(loaded, dict) else type(loaded).__name__
        raise LedgerError(f"{path}: a ledger holds exactly {sorted(LEDGER_KEYS)}, got {got}")
    entries = loaded["items"]
    if not isinstance(entries, list) or not entries:
        raise LedgerError(f"{path}: `items` must be a non-empty list")
    items = tuple(parse_item(entry, f"{path}, item {index + 1}") for index, entry in enumerate(entries))
    whats = [item.what for item in items]
    repeated = sorted({what for what in whats if whats.count(what) > 1})
    if repeated:
        raise LedgerError(f"{path}: items must differ in `what`; repeated: {repeated}")
    return Ledger(
        name=path.stem,
        paper=_text(loaded["paper"], str(path), "paper"),
        systems=_strings(loaded["systems"], str(path), "systems"),
        items=items,
        path=path,
    )


def ledgers(folder: str | Path = LEDGERS) -> list[Ledger]:
    """Every ledger in ``folder`` (the packaged ones by default), in the docs' order."""
    return list(_ledgers(Path(folder).resolve()))


@cache
def _ledgers(folder: Path) -> tuple[Ledger, ...]:
    found = [load_ledger(path) for path in sorted(folder.glob("*.yaml"))]
    rank = {name: index for index, name in enumerate(ORDER)}
    return tuple(sorted(found, key=lambda ledger: (rank.get(ledger.name, len(rank)), ledger.name)))
