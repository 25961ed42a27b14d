"""docs/fidelity.md, written from the ledgers: one table per paper, so that the page never drifts from them."""

from __future__ import annotations

import re

import yaml

from lit_models.ledger import KINDS, Item, Ledger, ledgers
from lit_models.ledger.check import matching

HEADER = """# Fidelity: what each paper specifies, and where lit-models does it

For each paper, every specification that matters to reproduce it (architecture, training, augmentation, evaluation),
bound to the recipe keys or the code that do it, or marked **not reproduced** with the reason. The tables are
written from the ledgers in `lit_models/ledger/` (one YAML file per paper) by
`python -m lit_models.ledger > docs/fidelity.md`; `tests/test_ledger.py` fails when this page differs from them,
when a binding does not hold in its recipe's resolved configuration (the recipe with its includes and defaults, as
`lit-models fit --config NAME --print_config` shows it), when a bound object does not import, or when a recipe's
comment claims what its ledger marks not reproduced or what its configuration does not hold.
`python -m lit_models.ledger check` runs the same checks and lists what fails.

Recipe keys are written without `init_args.` (`model.optimizer.momentum` is
`model.init_args.optimizer.init_args.momentum`); a chain recipe's keys start with their stage (`fcn16s/init_from`).
Most recipes here have not been trained on the papers' data sets (2 CPU cores); docs/benchmarks.md holds what was
measured.
"""


def cell(text: str) -> str:
    """Text for a markdown table cell: one line, pipes escaped."""
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def short_key(key: str) -> str:
    return key.replace("init_args.", "")


def flow(value: object) -> str:
    """A YAML value on one line, as a recipe would write it."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def where_it_lives(item: Item) -> str:
    """The last column: the recipes and their values, the code, the note; or why it is not reproduced."""
    if not item.reproduced:
        return cell(f"**not reproduced**: {item.not_reproduced}")
    parts = []
    for pattern, values in item.recipe.items():
        names = ", ".join(f"`{name}`" for name in matching(pattern))
        settings = ", ".join(f"`{short_key(key)}: {flow(value)}`" for key, value in values.items())
        parts.append(f"{names}: {settings}")
    if item.code:
        parts.append("code " + ", ".join(f"`{dotted}`" for dotted in item.code))
    text = "; ".join(parts)
    return cell(f"{text} — {item.note}" if item.note else text)


def table(ledger: Ledger) -> str:
    systems = ", ".join(ledger.systems)
    lines = [f"## {systems}", "", cell(ledger.paper), "", "| | the paper specifies | where | in lit-models |",
             "|---|---|---|---|"]  # fmt: skip
    for kind in KINDS:
        for index, item in enumerate(i for i in ledger.items if i.kind == kind):
            lines.append(f"| {kind if index == 0 else ''} | {cell(item.what)} | {cell(item.where)} | "
                         f"{where_it_lives(item)} |")  # fmt: skip
    return "\n".join(lines)


def summary(all_ledgers: list[Ledger]) -> str:
    lines = ["| systems | paper | items | in lit-models | not reproduced |", "|---|---|---|---|---|"]
    for ledger in all_ledgers:
        done = sum(item.reproduced for item in ledger.items)
        anchor = re.sub(r"[^\w -]", "", ", ".join(ledger.systems).lower()).replace(" ", "-")
        paper = cell(ledger.paper.split('"')[0].strip().rstrip(","))  # the authors and the year
        lines.append(f"| [{', '.join(ledger.systems)}](#{anchor}) | {paper} | {len(ledger.items)} | {done} | "
                     f"{len(ledger.items) - done} |")  # fmt: skip
    return "\n".join(lines)


def page(all_ledgers: list[Ledger] | None = None) -> str:
    """The whole of docs/fidelity.md."""
    all_ledgers = ledgers() if all_ledgers is None else all_ledgers
    return "\n\n".join([HEADER.strip(), summary(all_ledgers), *(table(ledger) for ledger in all_ledgers)]) + "\n"
