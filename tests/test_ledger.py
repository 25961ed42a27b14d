"""The fidelity ledgers (lit_models/ledger/) tell the truth, and so do the recipes' comments: every binding holds in
its recipe's resolved configuration, every bound object imports, no comment claims what its ledger marks not
reproduced or what its configuration does not hold, and docs/fidelity.md is the page the ledgers write."""

import fnmatch
import re

import pytest
from conftest import REPO

from lit_models.ledger import KINDS, LEDGERS, LedgerError, ledgers, load_ledger
from lit_models.ledger.check import (
    binding_problems,
    comment_problems,
    mentions,
    recipe_files,
    resolve,
    resolve_code,
)
from lit_models.ledger.page import page

SYSTEMS = {"AlexNet", "VGG", "GoogLeNet", "ResNet", "DenseNet", "FCN", "RCNN", "SPPNet", "FastRCNN", "FasterRCNN",
           "YOLOv1", "Markov", "RNN", "LSTM", "GRU"}  # fmt: skip
LEDGER_NAMES = [ledger.name for ledger in ledgers()]


def test_every_system_has_a_ledger_with_every_kind_of_item():
    covered = {system: ledger for ledger in ledgers() for system in ledger.systems}
    assert covered.keys() >= SYSTEMS
    for ledger in ledgers():
        assert ledger.kinds() == set(KINDS), f"{ledger.path.name} lacks {set(KINDS) - ledger.kinds()} items"
    for name, path in recipe_files().items():  # no recipe escapes the comment check
        assert resolve(path).systems <= covered.keys(), f"{name}: no ledger governs {resolve(path).systems}"


@pytest.mark.parametrize("name", LEDGER_NAMES)
def test_bindings_hold_in_the_resolved_recipes(name):
    assert binding_problems(load_ledger(LEDGERS / f"{name}.yaml")) == []


@pytest.mark.parametrize("recipe", sorted(recipe_files()))
def test_recipe_comment_claims_nothing_its_ledger_or_config_contradicts(recipe):
    assert comment_problems(recipe_files()[recipe], ledgers()) == []


def test_a_contradicting_comment_is_caught(tmp_path):
    source = (REPO / "configs" / "classification" / "vgg16_imagenet.yaml").read_text()
    body = source[source.index("seed_everything:") :]
    honest = tmp_path / "honest.yaml"
    honest.write_text("# VGG-16 with dropout 0.5 and scale jittering. Not reproduced: multi-crop evaluation.\n" + body)
    assert comment_problems(honest, ledgers()) == []
    claims = tmp_path / "claims.yaml"
    claims.write_text("# VGG-16 with multi-crop evaluation, and dropout 0.5 after fc6 and fc7.\n" + body)
    claims.write_text(claims.read_text().replace("batch_norm: false", "batch_norm: false\n    dropout: 0.3"))
    found = comment_problems(claims, ledgers())
    assert len(found) == 2, found
    crops, dropout = sorted(found, key=lambda problem: "dropout" in problem)
    assert "'multi-crop'" in crops and "not reproduced" in crops  # the ledger says it is not done
    assert "'dropout 0.5'" in dropout and "model.init_args.dropout: 0.5" in dropout  # the config says otherwise


def test_how_a_phrase_is_said():
    def said(text: str) -> list[tuple[bool, bool]]:
        return [(m.claimed, m.not_done) for m in mentions(text, ["scale jittering"])]

    assert said("Augmentation: scale jittering and flips.") == [(True, False)]
    assert said("Not reproduced: the flips and scale jittering (too slow).") == [(False, True)]
    assert said("Random crops instead of scale jittering.") == [(False, False)]
    assert said('As in "Scale jittering for all", a paper title.') == []
    assert said("Crops (the paper: scale jittering), flips.") == [(False, False)]
    assert said("No scale jittering here.") == [(False, False)]
    assert said("Crops; scale jittering as classification/vgg16_imagenet does it.") == [(False, False)]


def test_malformed_ledgers_name_the_file_and_item(tmp_path):
    header = "paper: P\nsystems: [VGG]\nitems:\n"
    item = "  - {what: W, where: §1, kind: training"
    cases = {
        "neither.yaml": (item + "}\n", "not both and not neither"),
        "both.yaml": (item + ", code: x.y, not_reproduced: why}\n", "not both and not neither"),
        "kind.yaml": ("  - {what: W, where: §1, kind: tricks, code: x.y}\n", "`kind` must be one of"),
        "unknown.yaml": (item + ", code: x.y, page: 3}\n", "unknown keys ['page']"),
        "twice.yaml": (item + ", code: x.y}\n" + item + ", code: x.z}\n", "repeated: ['W']"),
        "keys.yaml": (item + ", recipe: {classification/vgg16_imagenet: [1]}}\n", "must map config keys"),
    }
    for name, (items, message) in cases.items():
        path = tmp_path / name
        path.write_text(header + items)
        with pytest.raises(LedgerError, match=re.escape(message)) as error:
            load_ledger(path)
        assert name in str(error.value)
    (tmp_path / "bare.yaml").write_text("items: []\n")
    with pytest.raises(LedgerError, match="exactly"):
        load_ledger(tmp_path / "bare.yaml")


def test_bindings_that_do_not_hold_are_reported(tmp_path):
    path = tmp_path / "wrong.yaml"
    bindings = {
        "B": "{classification/vgg16_imagenet: {model.init_args.depth: 19}}",
        "C": "{classification/no_such_*: {trainer.max_epochs: 1}}",
        "D": "{classification/alexnet_imagenet: {trainer.max_epochs: 90}}",
        "E": "{classification/vgg16_imagenet: {model.init_args.nope: 1}}",
    }
    lines = [
        "paper: P",
        "systems: [VGG]",
        "items:",
        "  - {what: A, where: §1, kind: training, code: lit_models.nets.vgg.Nothing}",
    ]
    lines += [f"  - {{what: {what}, where: §1, kind: training, recipe: {bound}}}" for what, bound in bindings.items()]
    path.write_text("\n".join(lines))
    found = binding_problems(load_ledger(path))
    assert len(found) == 5, found
    assert "nothing at 'lit_models.nets.vgg.Nothing'" in found[0]
    assert "model.init_args.depth: 16, the ledger says 19" in found[1]
    assert "no packaged recipe is named 'classification/no_such_*'" in found[2]
    assert "trains ['AlexNet'], none of ('VGG',)" in found[3]
    assert "has no model.init_args.nope" in found[4]
    assert resolve_code("lit_models.nets.vgg.VGG.forward").__name__ == "forward"


def test_chain_recipes_resolve_stage_by_stage():
    staged = resolve(recipe_files()["segmentation/fcn_staged_shapes"])
    assert staged.value("fcn16s/init_from") == "fcn32s" and staged.value("fcn32s/init_from") is None
    assert staged.value("fcn8s/model.init_args.variant") == "8s"
    assert staged.value("model.init_args.backbone") == "resnet18"  # every stage holds it
    with pytest.raises(KeyError, match="differ"):
        staged.value("model.init_args.variant")


def test_the_docs_page_is_the_ledgers_page():
    assert (REPO / "docs" / "fidelity.md").read_text() == page(), "run: python -m lit_models.ledger > docs/fidelity.md"


def test_the_ledgers_ship_in_the_wheel():
    section = (REPO / "pyproject.toml").read_text().partition("[tool.setuptools.package-data]")[2]
    patterns = re.findall(r'"([^"]+)"', re.search(r"^lit_models = \[(.*)\]$", section, re.M).group(1))
    for path in LEDGERS.glob("*.yaml"):
        relative = str(path.relative_to(REPO / "lit_models"))
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), f"{relative} is not package data"
