"""Every module's arguments, its net's included, reach the command line with their descriptions, and the
hyperparameters a module saves stay primitive (checkpoints load with ``weights_only=True``)."""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

import pytest
import torch

import lit_models
from lit_models.cli import LitModelsCLI

MODULES = ["AlexNet", "VGG", "GoogLeNet", "ResNet", "DenseNet", "FCN", "RCNN", "SPPNet", "FastRCNN", "FasterRCNN",
           "YOLOv1", "YOLOClassifier", "Markov", "RNN", "LSTM", "GRU"]  # fmt: skip
# What a module hands its net itself: the output size, and GoogLeNet's auxiliary heads (on when aux_weight > 0).
SET_BY_MODULE = {"num_classes", "aux_logits"}


def arguments(function: Any, skip: set[str] = frozenset()) -> set[str]:
    parameters = inspect.signature(function).parameters.values()
    return {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD} - {"self", *skip}


def expected_arguments(module: type) -> set[str]:
    """The module's constructor arguments, and those its ``build_net`` (and R-CNN's ``build_staged_net``) take
    for the net, the net's own included."""
    wanted = arguments(module)
    if issubclass(module, lit_models.SequenceModule):  # its net is built from the data, with the module's arguments
        return wanted
    hooks = [module.build_net] + ([module.build_staged_net] if hasattr(module, "build_staged_net") else [])
    for hook in hooks:
        wanted |= arguments(hook, SET_BY_MODULE)
    return wanted | (net_arguments(typing.get_type_hints(hooks[-1])["return"]) - SET_BY_MODULE)


def net_arguments(net: type, optional_only: bool = False) -> set[str]:
    """A net's arguments and, where it hands ``**head_args`` to its base, the base's optional ones (the required
    ones the net passes itself)."""
    parameters = inspect.signature(net).parameters.values()
    names = {
        parameter.name
        for parameter in parameters
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD
        and not (optional_only and parameter.default is inspect.Parameter.empty)
    }
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        names |= net_arguments(net.__mro__[1], optional_only=True)
    return names


def documented_help(name: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``lit-models fit --model.help <name>``: each ``--model.<argument>`` with its description."""
    monkeypatch.setattr("sys.argv", ["lit-models"])
    with pytest.raises(SystemExit):
        LitModelsCLI(args=["fit", "--model.help", name], run=True)
    text = capsys.readouterr().out
    found = {}
    for match in re.finditer(r"^  --model\.(\w+)(?: [^\n]*)?\n((?:  {6,}[^\n]*\n)*)", text, re.M):
        if not match.group(1).endswith("help"):
            found[match.group(1)] = " ".join(match.group(2).split())
    return found


@pytest.mark.parametrize("name", MODULES)
def test_model_help_lists_every_argument_with_its_description(name, capsys, monkeypatch):
    listed = documented_help(name, capsys, monkeypatch)
    wanted = expected_arguments(getattr(lit_models, name))
    assert wanted - set(listed) == set(), f"{name}: arguments missing from --model.help"
    undocumented = sorted(arg for arg in wanted if listed[arg].startswith("(type:"))
    assert undocumented == [], f"{name}: arguments without a description"


TINY = {  # one module of each family, built with some of its net's arguments
    "ResNet": dict(num_classes=3, depth=18, small_input=True, width_mult=0.125),
    "FCN": dict(num_classes=3, variant="16s", backbone="resnet18", width_mult=0.125),
    "RCNN": dict(num_classes=3, backbone="resnet18", width_mult=0.125, representation_size=16, warp_size=64),
    "YOLOv1": dict(num_classes=3, backbone="resnet18", width_mult=0.125, image_size=64, grid_size=4),
    "LSTM": dict(num_classes=5, task="classification", input_size=2, hidden_size=8, bidirectional=True),
}


@pytest.mark.parametrize("name", TINY)
def test_net_arguments_are_saved_and_rebuild_the_module_from_a_weights_only_checkpoint(name, tmp_path):
    module = getattr(lit_models, name)(**TINY[name])
    assert {key: module.hparams[key] for key in TINY[name]} == TINY[name]
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, tmp_path / "m.ckpt")
    saved = torch.load(tmp_path / "m.ckpt", weights_only=True)
    rebuilt = getattr(lit_models, name)(**saved["hyper_parameters"])
    rebuilt.load_state_dict(saved["state_dict"])  # strict: the same net, parameter for parameter
