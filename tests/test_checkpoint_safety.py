"""A checkpoint is data: files crafted to run code, or to make a module of terabytes, are refused with a message
naming the file and the key, before any import or allocation, by ``lit_models.load`` and by every command that
opens a checkpoint (docs/cli.md, "What a checkpoint may build")."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import make_image_tree, run_cli

import lit_models
from lit_models import ImageFolderDataModule, ResNet, registry
from lit_models.checkpoint_file import LIGHTNING_INSTANTIATORS
from lit_models.commands import run_ours
from lit_models.datamodules.files import DataError
from lit_models.detection import rescoring

FOREIGN = "this_module_runs_on_import"
# The reviewer's module: importing it leaves a file behind, so a test sees whether it ran.
FOREIGN_SOURCE = """from pathlib import Path
Path(__file__).with_name("it_ran").write_text("imported")
class Anything: ...
"""
CLI = LIGHTNING_INSTANTIATORS[0]

# Each crafted file: what it changes in a checkpoint lit-models wrote, and the message it gets.
NAMES_FOREIGN_CODE = {
    "model": (lambda c: c["lit_models"].update(model=f"{FOREIGN}.Anything"),
              rf"the model '{FOREIGN}.Anything' is not one of lit-models' \(AlexNet, .*nothing was imported"),
    "data": (lambda c: c["lit_models"].update(data=f"{FOREIGN}.Anything"),
             rf"the data '{FOREIGN}.Anything' is not one of lit-models'"),
    "instantiator": (lambda c: c["hyper_parameters"].update(_instantiator=f"{FOREIGN}.Anything"),
                     rf"hyper_parameters\['_instantiator'\] names '{FOREIGN}.Anything', not LightningCLI's"),
    # Lightning's own instantiator, trusted by Lightning, hands `optimizer` to jsonargparse, which imports it.
    "optimizer": (lambda c: c["hyper_parameters"].update(optimizer={"class_path": f"{FOREIGN}.Anything"}),
                  r"hyper_parameters: optimizer is \{'class_path': .*a factory, which no checkpoint carries"),
    "class_path": (lambda c: c["hyper_parameters"].update(_class_path=f"{FOREIGN}.Anything"),
                   rf"hyper_parameters\['_class_path'\] '{FOREIGN}.Anything' is not one of lit-models'"),
    "data_class_path": (lambda c: c["datamodule_hyper_parameters"].update(_class_path=f"{FOREIGN}.Anything"),
                        r"datamodule_hyper_parameters\['_class_path'\] .* is not one of lit-models'"),
}  # fmt: skip
BAD_ARGUMENTS = {
    "a string for an int": (lambda c: c["hyper_parameters"].update(num_classes="3"),
                            r"hyper_parameters: num_classes is '3' \(str\), where ResNet takes int"),
    "a list for text": (lambda c: c["hyper_parameters"].update(weights=["IMAGENET1K_V1"]),
                        r"weights is \['IMAGENET1K_V1'\] \(list\), where ResNet takes str \| None"),
    "a list for a mapping": (lambda c: c.update(datamodule_hyper_parameters=[16, 2]),
                             r"datamodule_hyper_parameters is a list, not a mapping of argument names to values"),
    "a list for the data's description": (lambda c: c["lit_models"].update(data_spec=[16]),
                                          r"data_spec is a list, not a mapping of argument names to values"),
    "an unknown key": (lambda c: c["hyper_parameters"].update(shards=4),
                       r"hyper_parameters has 'shards', which ResNet does not take \(bias_lr_mult"),
    "a huge num_classes": (lambda c: c["hyper_parameters"].update(num_classes=10**12),
                           r"num_classes is 1000000000000, outside 1..1,000,000"),
    "a huge image_size": (lambda c: c["datamodule_hyper_parameters"].update(image_size=10**9),
                          r"datamodule_hyper_parameters: image_size is 1000000000, outside 1..8,192"),
    "a huge data_spec": (lambda c: c["lit_models"]["data_spec"].update(image_size=10**9),
                         r"data_spec: image_size is 1000000000, outside 1..8,192"),
    "a net of terabytes": (lambda c: c["hyper_parameters"].update(depth=152, width_mult=64.0),
                           r"make a ResNet far larger than the weights the file holds \(.* MiB of tensors asked"),
    "weights of other shapes": (lambda c: c["hyper_parameters"].update(depth=34),
                                r"its weights do not fit the ResNet its hyper_parameters describe"),
    "classes other than num_classes": (lambda c: c["class_names"].append("fourth"),
                                       r"num_classes is 3 but class_names has 4 names"),
    "a model of another class": (lambda c: c["lit_models"].update(model="VGG"),
                                 r"hyper_parameters\['_class_path'\] names 'lit_models.ResNet' but .* is VGG"),
}  # fmt: skip


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny classifier's checkpoint as LightningCLI's ``fit`` writes it (its classes' paths and instantiator
    recorded beside their arguments), and the folder of its images."""
    root = make_image_tree(tmp_path_factory.mktemp("safety") / "images", {"train": 1, "val": 1})
    data = ImageFolderDataModule(str(root), image_size=16, batch_size=2, num_workers=0)
    model = ResNet(num_classes=3, depth=18, small_input=True, width_mult=0.125)
    model.use_data(data.spec)
    model.prediction_source = data
    saved = {
        "state_dict": model.state_dict(),
        "hyper_parameters": {"_class_path": "lit_models.ResNet", **model.hparams, "_instantiator": CLI},
        "datamodule_hyper_parameters": {"_class_path": "lit_models.ImageFolderDataModule", **data.hparams,
                                        "_instantiator": CLI},
        "pytorch-lightning_version": pl.__version__,
    }  # fmt: skip
    model.on_save_checkpoint(saved)
    return {"saved": saved, "images": root}


@pytest.fixture
def foreign_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The reviewer's module, importable from the working folder; yields the file its import would write."""
    (tmp_path / f"{FOREIGN}.py").write_text(FOREIGN_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "it_ran"
    sys.modules.pop(FOREIGN, None)


def crafted(written: dict, change, path: Path) -> Path:
    saved = copy.deepcopy(written["saved"])
    change(saved)
    torch.save(saved, path)
    return path


def test_a_checkpoint_as_lightning_cli_writes_it_loads_and_predicts(written, tmp_path):
    checkpoint = crafted(written, lambda saved: None, tmp_path / "model.ckpt")
    module = lit_models.load(checkpoint, device="cpu")
    assert isinstance(module, ResNet) and module.hparams["weights"] is None
    assert torch.equal(module.state_dict()["net.fc.weight"], written["saved"]["state_dict"]["net.fc.weight"])
    assert len(module.predict(str(written["images"] / "val"))) == 3


@pytest.mark.parametrize("case", NAMES_FOREIGN_CODE)
def test_code_a_checkpoint_names_is_never_imported_by_load(case, written, foreign_module, tmp_path):
    change, message = NAMES_FOREIGN_CODE[case]
    checkpoint = crafted(written, change, tmp_path / "crafted.ckpt")
    with pytest.raises(DataError, match=rf"{checkpoint}: .*{message}"):
        lit_models.load(checkpoint, device="cpu")
    assert not foreign_module.exists() and FOREIGN not in sys.modules


@pytest.mark.parametrize("case", ["model", "optimizer"])
def test_code_a_checkpoint_names_is_never_imported_by_a_command(case, written, foreign_module, tmp_path):
    change, message = NAMES_FOREIGN_CODE[case]
    checkpoint = str(crafted(written, change, tmp_path / "crafted.ckpt"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model: {class_path: lit_models.ResNet, init_args: {depth: 18, small_input: true, width_mult: 0.125}}\n"
        f"data: {{class_path: lit_models.ImageFolderDataModule, init_args: {{root: {written['images']}, "
        "image_size: 16, batch_size: 2, num_workers: 0}}\n"
        "trainer: {max_steps: 1, logger: false, enable_checkpointing: false, enable_progress_bar: false}\n"
    )
    commands = [
        ("predict", checkpoint, str(written["images"])),
        ("export", checkpoint),
        ("summary", checkpoint),
        ("benchmark", checkpoint, "--iterations", "1"),
        ("validate", "--config", str(recipe), "--ckpt_path", checkpoint),
        ("fit", "--config", str(recipe), "--init_from", checkpoint),
    ]
    for command in commands:
        with pytest.raises(AssertionError, match=rf"\nerror: .*crafted.ckpt: .*{message}"):
            run_cli(*command, cwd=tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_ours(rescoring.main, ["--fast_rcnn", checkpoint, "--yolo", checkpoint])
    assert stop.value.code == 2
    assert not foreign_module.exists() and FOREIGN not in sys.modules


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_saved_arguments_are_checked_before_anything_is_built(case, written, tmp_path):
    change, message = BAD_ARGUMENTS[case]
    checkpoint = crafted(written, change, tmp_path / "crafted.ckpt")
    started = time.perf_counter()
    with pytest.raises(DataError, match=rf"{checkpoint}: .*{message}"):
        lit_models.load(checkpoint, device="cpu")
    assert time.perf_counter() - started < 5, "refused before the size was allocated"


def test_bad_arguments_end_a_command_with_their_message(written, tmp_path):
    change, message = BAD_ARGUMENTS["a huge num_classes"]
    checkpoint = str(crafted(written, change, tmp_path / "crafted.ckpt"))
    with pytest.raises(AssertionError, match=rf"\nerror: .*crafted.ckpt: .*{message}"):
        run_cli("predict", checkpoint, str(written["images"]), cwd=tmp_path)


def test_what_is_no_checkpoint_is_refused_before_anything_is_unpickled(written, foreign_module, tmp_path):
    whole = tmp_path / "whole.ckpt"
    torch.save(written["saved"], whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{truncated} is not a readable PyTorch checkpoint"):
        lit_models.load(truncated)
    # A plain pickle whose loading would import the reviewer's module: weights_only refuses it unread.
    pickled = tmp_path / "pickled.ckpt"
    pickled.write_bytes(f"c{FOREIGN}\nAnything\n.".encode())
    with pytest.raises(DataError, match=rf"{pickled} is not a readable PyTorch checkpoint"):
        lit_models.load(pickled)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "state.ckpt")
    with pytest.raises(DataError, match="was not written by lit-models"):
        lit_models.load(tmp_path / "state.ckpt")
    with pytest.raises(AssertionError, match=r"\nerror: .*truncated.ckpt is not a readable PyTorch checkpoint"):
        run_cli("export", str(truncated), cwd=tmp_path)
    assert not foreign_module.exists() and FOREIGN not in sys.modules


class MyResNet(ResNet):
    """A module of the user's own."""


def test_a_class_of_your_own_is_built_once_registered(written, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "REGISTERED_MODELS", {})
    model = MyResNet(num_classes=3, depth=18, small_input=True, width_mult=0.125)
    saved = copy.deepcopy(written["saved"])
    saved["hyper_parameters"] = dict(model.hparams)
    saved["state_dict"] = model.state_dict()
    saved["lit_models"]["model"] = "MyResNet"
    torch.save(saved, tmp_path / "mine.ckpt")
    with pytest.raises(DataError, match=r"the model 'MyResNet' is not one of .*lit_models.register\(YourClass\)"):
        lit_models.load(tmp_path / "mine.ckpt", device="cpu")
    assert lit_models.register(MyResNet) is MyResNet
    assert type(lit_models.load(tmp_path / "mine.ckpt", device="cpu")) is MyResNet
    with pytest.raises(TypeError, match="a class named 'ResNet' is already known"):
        lit_models.register(type("ResNet", (ResNet,), {}))
    with pytest.raises(TypeError, match="register takes a subclass of lit-models' TaskModule"):
        lit_models.register(torch.nn.Linear)
