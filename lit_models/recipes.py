"""The recipes shipped inside the package (``lit_models/configs``), found by name from any folder.

``lit-models fit --config quickstart`` and ``--config classification/resnet18_digits`` name a packaged recipe;
``--trainer tensorboard`` a packaged trainer overlay. A file of that name in the working folder wins, so a
copied and edited recipe is used as it is. ``lit-models recipes`` lists what is packaged.
"""

from __future__ import annotations

from pathlib import Path

RECIPES = Path(__file__).resolve().parent / "configs"
# Command-line options whose value is a YAML file, and the recipe folder tried first for a bare name.
FILE_OPTIONS = {"--config": "", "-c": "", "--trainer": "trainer"}


def recipe_names() -> list[str]:
    """Every packaged recipe as ``folder/name`` (what ``--config`` takes), trainer overlays included."""
    files = [*RECIPES.rglob("*.yaml")]
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


def resolve_recipe_arguments(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config`` / ``--trainer`` value that names a packaged recipe replaced by its path."""
    resolved = list(argv)
    for index, arg in enumerate(resolved):
        option, equals, value = arg.partition("=")
        if option not in FILE_OPTIONS:
            continue
        if equals:
            resolved[index] = f"{option}={find_recipe(value, FILE_OPTIONS[option])}"
        elif index + 1 < len(resolved):
            resolved[index + 1] = find_recipe(resolved[index + 1], FILE_OPTIONS[option])
    return resolved


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
