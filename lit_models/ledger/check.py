"""Whether the ledgers tell the truth, and whether the recipes' comments do.

* A ``recipe:`` binding holds in that recipe's resolved configuration: the recipe with its includes and every
  default filled in, as ``lit-models fit --config NAME --print_config`` shows it (parsed, nothing built).
* A ``code:`` binding imports.
* A recipe's comment that uses an item's ``claims`` phrase as something the recipe does is backed: the item is bound
  to that recipe, or the recipe's configuration holds one of the item's bindings; it is an error when the item is
  ``not_reproduced``. A sentence that says "not reproduced" about an item the ledger binds to that very recipe is an
  error too.

A phrase is no claim where the comment says the recipe does otherwise: in a sentence with "not reproduced", "not
offered" or "differences:"; in a clause with "no", "not", "instead of", "rather than", "replaces", "unlike",
"without", "compressed" or a dash that corrects it ("weight decay 1e-4 — 5e-4 here"); in a clause that names
another recipe, or reports the paper ("the paper: ...", "(the paper's ...)"); in a quoted title.
"""

from __future__ import annotations

import fnmatch
import importlib
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from lit_models.ledger import Item, Ledger, ledgers
from lit_models.recipes import RECIPES

# Sentence-wide: the sentence says the recipe does not do what it names ...
NOT_DONE = re.compile(r"\bnot (?:reproduced|offered|implemented)\b")
# ... or does it otherwise.
DIFFERS = re.compile(r"\bdifferences?:|\bdeviations?:")
# Clause-wide: what the clause names is the paper's, or what the recipe does not do.
NOT_CLAIMED = re.compile(
    r"\binstead\b|\brather than\b|\bin place of\b|\breplac(?:es|ed|ing)\b|\bunlike\b|\bwithout\b|\bnot?\b|n't\b"
    r"|\bcompressed\b|—"
    r"|\bthe paper(?:'s)?:|\bpaper:|\bthe paper (?:uses|used|gives|trains|fine-tunes|solves|tests|samples|reports|"
    r"has|keeps|also)\b"
)
# Abbreviations whose full stop ends no sentence.
ABBREVIATIONS = re.compile(r"\b(?:e\.g|i\.e|et al|vs|cf|Fig|Eq|approx)\.", re.IGNORECASE)
COMMANDS = ("lit-models ", "python ", "sbatch ", "make ")


@dataclass(frozen=True)
class Mention:
    """A claims phrase found in a recipe's comment: in a claim, or in a statement that the recipe does not do it."""

    phrase: str
    text: str  # the clause it was found in
    claimed: bool  # said as something the recipe does
    not_done: bool  # in a sentence that says "not reproduced" (or the like)


@dataclass(frozen=True)
class Resolved:
    """A recipe's resolved configuration: one per stage of a chain recipe ("" for a plain recipe)."""

    name: str
    path: Path
    stages: dict[str, Namespace]
    init_from: dict[str, str | None]

    @property
    def systems(self) -> set[str]:
        """The registered module names the recipe trains (``AlexNet``, ``FCN``)."""
        return {str(config["model.class_path"]).rpartition(".")[2] for config in self.stages.values()}

    def value(self, key: str) -> Any:
        """The value at a dotted ``key`` as plain YAML data; in a chain recipe ``STAGE/key`` is one stage's, and a
        plain ``key`` the value every stage holds.

        Raises:
            KeyError: No such key, or stages that differ in it.
        """
        stage, slash, rest = key.partition("/")
        if slash:
            if stage not in self.stages:
                raise KeyError(f"no stage {stage!r} (stages: {sorted(self.stages)})")
            return self.stage_value(stage, rest)
        values = [self.stage_value(name, key) for name in self.stages]
        if any(not same(values[0], value) for value in values[1:]):
            raise KeyError(f"its stages differ in {key} ({values}): name one as STAGE/{key}")
        return values[0]

    def stage_value(self, stage: str, key: str) -> Any:
        if key == "init_from":
            return self.init_from[stage]
        node: Any = self.stages[stage]
        for part in key.split("."):
            if isinstance(node, (Namespace, dict)) and part in node:
                node = node[part]
            else:
                raise KeyError(key)
        return plain(node)


def plain(value: Any) -> Any:
    """Namespaces as dicts and tuples as lists, all the way down: what the YAML of a binding reads as."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def same(expected: Any, actual: Any) -> bool:
    """YAML values equal, numbers up to float rounding (``5.0e-4`` is ``0.0005``)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-15)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(same(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(same(expected[k], actual[k]) for k in expected)
    return expected == actual


def recipe_files() -> dict[str, Path]:
    """Every packaged recipe (chains included; not the trainer overlays nor the ``_shared`` pieces) by name."""
    found = {}
    for path in sorted(RECIPES.rglob("*.yaml")):
        parts = path.relative_to(RECIPES).parts
        if parts[0] not in ("trainer", "_shared"):
            found[str(path.relative_to(RECIPES).with_suffix(""))] = path
    return found


def matching(pattern: str) -> list[str]:
    """The packaged recipe names that ``pattern`` (a name or an fnmatch pattern) names."""
    return [name for name in recipe_files() if fnmatch.fnmatchcase(name, pattern)]


@cache
def recipe_parser() -> Any:
    """A LitModelsCLI that builds its parser once and nothing else; :func:`parse_recipe` parses with it."""
    from lit_models.cli import LitModelsCLI  # imports Lightning: only when a recipe is resolved

    class Parsed(LitModelsCLI):
        def parse_arguments(self, parser: Any, args: Any) -> None:
            self.config = Namespace()  # building the parser parses nothing; parse_recipe parses each recipe

        def _set_seed(self) -> None:  # parsing must not seed the caller's generators
            pass

        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

        def after_instantiate_classes(self) -> None:
            pass

    return Parsed(run=False)


def parse_recipe(arguments: list[str]) -> Namespace:
    """The configuration ``lit-models fit`` would build from ``arguments``, parsed and defaulted, nothing built."""
    from lit_models.cli import LitModelsCLI

    cli = recipe_parser()
    argv, sys.argv = sys.argv, sys.argv[:1]  # the recipe alone, not the calling command's own arguments
    try:
        LitModelsCLI.parse_arguments(cli, cli.parser, arguments)
    except SystemExit:  # the parser has printed why
        raise ValueError(f"lit-models fit {' '.join(arguments)} does not parse (the message above says why)") from None
    finally:
        sys.argv = argv
    LitModelsCLI.before_instantiate_classes(cli)  # the model's data arguments, as fit applies them
    return cli.config


@cache
def resolve(path: Path) -> Resolved:
    """The resolved configuration of the recipe file at ``path`` (a chain recipe: of each stage)."""
    from lit_models.chains import chain_text, option_pairs, read_chain
    from lit_models.recipes import recipe_label

    if chain_text(path) is None:
        return Resolved(recipe_label(path), path, {"": parse_recipe(["--config", str(path)])}, {"": None})
    chain = read_chain(path)
    stages = {stage.name: parse_recipe(["--config", stage.config, *option_pairs(stage.args)]) for stage in chain.stages}
    return Resolved(recipe_label(path), path, stages, {stage.name: stage.init_from for stage in chain.stages})


def resolve_code(dotted: str) -> Any:
    """The object at a dotted path (``lit_models.nets.alexnet.AlexNet.initialise``).

    Raises:
        ImportError: No module of that path holds it.
    """
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                found = getattr(found, attribute)
        except AttributeError:
            break
        return found
    raise ImportError(f"nothing at {dotted!r}: no module of that path defines it")


def holds(item: Item, resolved: Resolved) -> bool:
    """Whether the recipe's configuration holds every value of one of the item's recipe bindings."""
    for values in item.recipe.values():
        try:
            if all(same(expected, resolved.value(key)) for key, expected in values.items()):
                return True
        except KeyError:
            continue
    return False


def binding_problems(ledger: Ledger) -> list[str]:
    """What in ``ledger``'s ``recipe:`` and ``code:`` bindings is not so, each naming the file, item and value."""
    problems = []
    for item in ledger.items:
        where = f"{ledger.path.name}: {item.what!r}"
        for dotted in item.code:
            try:
                resolve_code(dotted)
            except ImportError as error:
                problems.append(f"{where}: code {error}")
        for pattern, values in item.recipe.items():
            names = matching(pattern)
            if not names:
                problems.append(f"{where}: no packaged recipe is named {pattern!r} (`lit-models recipes` lists them)")
            for name in names:
                resolved = resolve(recipe_files()[name])
                if not resolved.systems & set(ledger.systems):
                    problems.append(f"{where}: {name} trains {sorted(resolved.systems)}, none of {ledger.systems}")
                for key, expected in values.items():
                    try:
                        actual = resolved.value(key)
                    except KeyError as error:
                        problems.append(f"{where}: {name} has no {key} ({error.args[0]})")
                        continue
                    if not same(expected, actual):
                        problems.append(f"{where}: {name} has {key}: {actual!r}, the ledger says {expected!r}")
    return problems


def comment(path: Path) -> str:
    """A recipe's comment: its full-line comments joined, without the command lines it shows."""
    lines = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text.startswith("#"):
            continue
        text = text.lstrip("#").strip()
        if not text.startswith(COMMANDS):
            lines.append(text)
    return " ".join(lines)


def split_top_level(text: str, separators: str) -> list[str]:
    """``text`` cut at ``separators`` outside brackets: "S in [256, 512], flips" -> ["S in [256, 512]", " flips"]."""
    pieces, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}" and depth > 0
        if depth == 0 and char in separators:
            pieces.append(text[start:index])
            start = index + 1
    return [*pieces, text[start:]]


def clauses(sentence: str, others: re.Pattern) -> list[tuple[str, bool]]:
    """A sentence's clauses (cut at commas and semicolons), and each of its parentheticals as a clause of its own,
    with whether what it names is claimed: not where the clause names another recipe (``others``) or says the
    recipe does otherwise (``NOT_CLAIMED``); a parenthetical inherits its clause's negation, or reports the paper."""

    def negated(text: str) -> bool:
        return bool(NOT_CLAIMED.search(text.lower()) or others.search(text))

    parentheticals: list[str] = []

    def hold(match: re.Match) -> str:
        parentheticals.append(match.group(1))
        return f" \x00{len(parentheticals) - 1}\x00 "

    outer = re.sub(r"\(((?:[^()]|\([^()]*\))*)\)", hold, sentence)
    found = []
    for clause in split_top_level(outer, ",;"):
        text = re.sub(r"\x00\d+\x00", "", clause)
        found.append((text, negated(text)))
        for index in re.findall(r"\x00(\d+)\x00", clause):
            inner = parentheticals[int(index)]
            reports_paper = re.match(r"\s*(?:the )?paper\b", inner.lower()) is not None
            for piece in split_top_level(inner, ",;"):
                found.append((piece, negated(text) or reports_paper or negated(piece)))
    return found


@cache
def recipe_names_pattern(name: str) -> re.Pattern:
    """Any packaged recipe's name but ``name``'s: a clause that names one is about that recipe."""
    stems = sorted({Path(other).name for other in recipe_files()} - {Path(name).name}, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, stems)) + r")(?![\w-])")


def mentions(text: str, phrases: Iterable[str], name: str = "") -> list[Mention]:
    """Where each of ``phrases`` occurs in the comment ``text`` of the recipe ``name`` (whole words, any case), and
    how it is said."""
    patterns = {p: re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, p.split())) + r"(?!\w)", re.I) for p in phrases}
    text = re.sub(r'"[^"]*"', '""', text)  # a quoted title names the paper, not what the recipe does
    protected = ABBREVIATIONS.sub(lambda m: m.group(0).replace(".", "\x01"), text)
    found = []
    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z§(\"'])", protected):
        sentence = sentence.replace("\x01", ".")
        not_done = bool(NOT_DONE.search(sentence.lower()))
        differs = not_done or bool(DIFFERS.search(sentence.lower()))
        for clause, negated in clauses(sentence, recipe_names_pattern(name)):
            for phrase, pattern in patterns.items():
                if pattern.search(clause):
                    found.append(Mention(phrase, clause.strip(), not (negated or differs), not_done))
    return found


def comment_problems(path: Path, all_ledgers: Iterable[Ledger]) -> list[str]:
    """What the comment of the recipe at ``path`` claims that its ledger or its configuration contradicts."""
    resolved = resolve(path)
    items = [
        (ledger, item) for ledger in all_ledgers if resolved.systems & set(ledger.systems) for item in ledger.items
    ]
    found = mentions(comment(path), {phrase for _, item in items for phrase in item.claims}, resolved.name)
    problems = []
    for ledger, item in items:
        bound_here = any(fnmatch.fnmatchcase(resolved.name, pattern) for pattern in item.recipe)
        for mention in (m for m in found if m.phrase in item.claims):
            said = f"{resolved.name}: its comment says {mention.phrase!r} (in {mention.text!r})"
            if mention.claimed and not item.reproduced:
                problems.append(f"{said}, but {ledger.path.name} marks {item.what!r} not reproduced: "
                                f"{item.not_reproduced}")  # fmt: skip
            elif mention.claimed and item.recipe and not bound_here and not holds(item, resolved):
                wanted = "; or ".join(", ".join(f"{k}: {v!r}" for k, v in values.items())
                                      for values in item.recipe.values())  # fmt: skip
                problems.append(f"{said}, but its configuration holds none of {ledger.path.name}'s bindings of "
                                f"{item.what!r} ({wanted})")  # fmt: skip
            elif mention.not_done and bound_here and item.reproduced:
                problems.append(f"{said} as not done, but {ledger.path.name} binds {item.what!r} to this recipe")
    return problems


def problems(all_ledgers: list[Ledger] | None = None) -> list[str]:
    """Every binding that does not hold and every recipe comment that claims what is not so."""
    all_ledgers = ledgers() if all_ledgers is None else all_ledgers
    found = [problem for ledger in all_ledgers for problem in binding_problems(ledger)]
    for path in recipe_files().values():
        found += comment_problems(path, all_ledgers)
    return found
