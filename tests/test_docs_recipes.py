"""The README and docs name only recipes that exist: every `--config NAME`, `--trainer NAME`, `lit-models check NAME`,
`configs/...` path and `family/recipe` name they give resolves to a packaged recipe or trainer overlay."""

import itertools
import re
from pathlib import Path

import pytest
from conftest import REPO

from lit_models.recipes import RECIPES, find_recipe

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FAMILIES = "classification|detection|segmentation|sequence|trainer"
NAMED = [
    (re.compile(r"--config[ =]([^\s`|)\"']+)"), ""),
    (re.compile(r"--trainer[ =]([^\s`|)\"']+)"), "trainer"),
    (re.compile(r"lit-models check ([^\s`|)]+)"), ""),
    # a path in a clone (`configs` links to lit_models/configs), or a name in prose: `detection/yolov1_shapes`
    (re.compile(r"(?<![\w/.-])(configs/[\w/{},.-]+\.(?:yaml|sbatch))"), ""),
    (re.compile(rf"(?<![\w/.<-])((?:{FAMILIES})/[\w{{}},]+)(?![\w/.])"), ""),
]


def expand(name: str) -> list[str]:
    """`fcn{32s,16s,8s}_shapes` -> the three names it stands for."""
    parts = re.split(r"\{([^}]*)\}", name)
    choices = [[part] if index % 2 == 0 else part.split(",") for index, part in enumerate(parts)]
    return ["".join(pieces) for pieces in itertools.product(*choices)]


def placeholder(name: str) -> bool:
    """RECIPE, NAME, CONFIG, "$config", <arch>: what a reader replaces."""
    return name.isupper() or name.startswith(("$", "<")) or "|" in name


def named_recipes() -> list[tuple[str, str, str]]:
    """(doc, name as written, folder tried first) for every recipe name in the docs."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for pattern, folder in NAMED:
            for match in pattern.finditer(text):
                found += [(doc.name, name, folder) for name in expand(match.group(1)) if not placeholder(name)]
    return sorted(set(found))


def test_the_docs_name_recipes():  # the patterns still find what the docs hold
    names = {name for _, name, _ in named_recipes()}
    assert {"quickstart", "classification/resnet18_digits", "tensorboard", "configs/quickstart.yaml"} <= names


@pytest.mark.parametrize("doc, name, folder", named_recipes(), ids=lambda v: v if isinstance(v, str) else "")
def test_named_recipe_exists(doc, name, folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # names resolve from any folder, as `lit-models` resolves them
    found = Path(find_recipe(name, folder))
    assert found.is_file() and found.resolve().is_relative_to(RECIPES), f"{doc} names {name!r}: no such recipe"
    assert "_shared" not in found.parts, f"{doc} names {name!r}, a piece that recipes include, not a recipe"
    if name.startswith("configs/"):  # the same path in a clone, through the `configs` link
        assert (REPO / name).is_file()
