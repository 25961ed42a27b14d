"""The recipes shipped inside the package (``lit_models/configs``), found by name from any folder.

``lit-models fit --config quickstart`` and ``--config classification/resnet18_digits`` name a packaged recipe;
``--trainer tensorboard`` a packaged trainer overlay. A file of that name in the working folder wins, so a
copied and edited recipe is used as it is. ``lit-models recipes`` lists what is packaged.
"""

from __future__ import annotations

from pathlib import Path

from lit_models.errors import UsageError, did_you_mean

RECIPES = Path(__file__).resolve().parent / "configs"
# Command-line options whose value is a YAML file, and the recipe folder tried first for a bare name.
FILE_OPTIONS = {"--config": "", "-c": "", "--trainer": "trainer"}


def recipe_names() -> list[str]:
    """Every packaged recipe as ``folder/name`` (what ``--config`` takes), trainer overlays included; not the
    pieces under ``_shared/`` that recipes include (``config: ../_shared/NAME.yaml``)."""
    files = [p for p in RECIPES.rglob("*.yaml") if not p.relative_to(RECIPES).parts[0].startswith("_")]
    return sorted(str(path.relative_to(RECIPES).with_suffix("")) for path in files)


def find_recipe(value: str, folder: str = "") -> str:
    """The file ``value`` names: itself when it exists, else the packaged recipe of that name, else ``value``
    unchanged (so the parser reports the missing file as it always does)."""
    if Path(value).exists() or value.lstrip().startswith(("{", "[")):  # a file, or inline YAML
        return value
    name = value.removeprefix("configs/").removeprefix("lit_models/configs/")
    stems = [name, f"{folder}/{name}"] if folder else [name]
    for stem in stems:
        for candidate in (RECIPES / stem, RECIPES / f"{stem}.yaml"):
            if candidate.is_file():
                return str(candidate)
    return value


def existing_recipe(value: str, folder: str = "") -> str:
    """:func:`find_recipe`, but a name that is neither a file nor a packaged recipe is a UsageError that suggests
    the closest recipe, instead of the parser's "File does not exist" below its whole usage."""
    found = find_recipe(value, folder)
    if found != value or Path(value).exists() or value.lstrip().startswith(("{", "[")):
        return found
    names = [name.removeprefix(f"{folder}/") for name in recipe_names() if name.startswith(folder)]
    # A recipe's name without its folder is matched too: "resnet18_digts" is close to "resnet18_digits".
    spellings = {**{name.rpartition("/")[2]: name for name in names}, **{name: name for name in names}}
    what = "trainer overlay" if folder == "trainer" else "recipe"
    hint = did_you_mean(value.removesuffix(".yaml"), spellings) or ": `lit-models recipes` lists them"
    raise UsageError(f"no {what} {value!r}{hint}")


def resolve_recipe_arguments(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config`` / ``--trainer`` value that names a packaged recipe replaced by its path.

    Raises:
        UsageError: A value that is neither a file nor a packaged recipe (with the closest recipe's name).
    """
    resolved = list(argv)
    for index, arg in enumerate(resolved):
        option, equals, value = arg.partition("=")
        if option not in FILE_OPTIONS:
            continue
        if equals:
            resolved[index] = f"{option}={existing_recipe(value, FILE_OPTIONS[option])}"
        elif index + 1 < len(resolved):
            resolved[index + 1] = existing_recipe(resolved[index + 1], FILE_OPTIONS[option])
    return resolved


def recipe_label(path: str | Path) -> str:
    """How a user names a ``--config`` file again: a packaged recipe by its name (``quickstart``), any other file
    by its path."""
    path = Path(path)
    if path.resolve().is_relative_to(RECIPES):
        return str(path.resolve().relative_to(RECIPES).with_suffix(""))
    return str(path)


def describe_recipes() -> str:
    """The listing that ``lit-models recipes`` prints: each recipe's name and the first line of its comment."""
    lines = [f"Recipes packaged with lit-models ({RECIPES}); pass one as --config NAME:", ""]
    names = recipe_names()
    width = max(len(name) for name in names)
    for name in names:
        first = (RECIPES / f"{name}.yaml").read_text().splitlines()[0]
        about = first.lstrip("# ").strip() if first.startswith("#") else ""
        lines.append(f"  {name:<{width}}  {about}")
    lines += ["", "Trainer overlays go after a recipe: --trainer NAME (e.g. --trainer tensorboard)."]
    return "\n".join(lines)
