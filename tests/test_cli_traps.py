"""The command line sets no silent traps: a top-level --optimizer feeds the module's own factories, a num_classes the
data contradicts is an error, our errors end the command as its last lines, and every module runs on its DataModule
at the defaults, the data following the model where the two must agree."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_image_tree

from lit_models.cli import LitModelsCLI, check_shared_arguments
from lit_models.datamodules.sources.shapes import export_shapes

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


def cli(args: list[str], run: bool = False) -> LitModelsCLI:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["lit-models"])  # pytest's own arguments are not the CLI's
        return LitModelsCLI(args=args, run=run)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """One tiny folder per kind of data: an image-folder tree, VOC-layout 64-px scenes, a text file."""
    base = tmp_path_factory.mktemp("traps")
    text = base / "text.txt"
    text.write_text(TEXT)
    return {
        "images": make_image_tree(base / "images", {"train": 2, "val": 1}),
        "voc": export_shapes(base / "voc", num_train=3, num_val=2, size=64),
        "text": text,
    }


# ------------------------------------------------------------------------------------- --optimizer, --lr_scheduler

FCN_TINY = ["--model", "FCN", "--model.width_mult", "0.125", "--model.representation_size", "16",
            "--data", "SegmentationDataModule"]  # fmt: skip


def test_top_level_optimizer_and_scheduler_keep_the_bias_groups():
    built = cli([
        *FCN_TINY, "--model.bias_lr_mult", "2", "--model.bias_weight_decay", "false",
        "--optimizer", "AdamW", "--optimizer.lr", "0.001", "--optimizer.weight_decay", "0.01",
        "--lr_scheduler", "StepLR", "--lr_scheduler.step_size", "3",
    ])  # fmt: skip
    assert built.config.optimizer is None and built.config.lr_scheduler is None
    assert built.config.model.init_args.optimizer.class_path == "torch.optim.AdamW"
    configured = built.model.configure_optimizers()
    weights, biases = configured["optimizer"].param_groups
    assert isinstance(configured["optimizer"], torch.optim.AdamW)
    assert (weights["lr"], weights["weight_decay"]) == (0.001, 0.01)
    assert (biases["lr"], biases["weight_decay"]) == (0.002, 0.0)
    in_biases = {id(p) for p in biases["params"]}
    assert all(name.endswith("bias") == (id(p) in in_biases) for name, p in built.model.named_parameters())
    assert isinstance(configured["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)


def test_top_level_optimizer_replaces_the_configs_with_a_warning(tmp_path, caplog):
    config = tmp_path / "sgd.yaml"
    config.write_text(yaml.safe_dump({"model": {"init_args": {"optimizer": {
        "class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}}}}))  # fmt: skip
    with caplog.at_level("WARNING", logger="lit_models"):
        built = cli([*FCN_TINY, "--config", str(config), "--optimizer", "Adam", "--lr_scheduler", "ExponentialLR",
                     "--lr_scheduler.gamma", "0.5"])  # fmt: skip
    configured = built.model.configure_optimizers()
    assert type(configured["optimizer"]) is torch.optim.Adam
    assert "--optimizer torch.optim.Adam(" in caplog.text and "replaces model.optimizer torch.optim.SGD(" in caplog.text

    alone = cli([*FCN_TINY, "--lr_scheduler", "ExponentialLR", "--lr_scheduler.gamma", "0.5"])
    configured = alone.model.configure_optimizers()  # Lightning would ignore a scheduler given without --optimizer
    assert isinstance(configured["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ExponentialLR)


# -------------------------------------------------------------------------------------------- our errors, last


def bad_data(kind: str, tmp_path: Path) -> tuple[list[str], list[str]]:
    """Arguments that point a DataModule at data that is not there, and the lines its message must end with."""
    missing = tmp_path / "nowhere"
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        "ImageFolderDataModule": (
            ["--model", "ResNet", "--data", "ImageFolderDataModule", "--data.root", str(missing)],
            [f"data root {missing} does not exist or is not a folder. Pass --data.root a folder with train/<class>/* "
             "images (val/ and test/ optional), or leave it out for the embedded digits."],
        ),
        "SegmentationDataModule": (
            ["--model", "FCN", "--data", "SegmentationDataModule", "--data.root", str(missing)],
            [f"data root {missing} does not exist or is not a folder. Pass --data.root a VOC folder (JPEGImages/, "
             "SegmentationClass/, ImageSets/Segmentation/) or image/mask folder pairs (<split>/images/, "
             "<split>/masks/), or leave it out for the embedded shapes."],
        ),
        "DetectionDataModule-voc": (
            # A folder that exists: its missing VOC lists are found when the run reads them, not while building.
            ["--model", "YOLOv1", "--model.width_mult", "0.125", "--model.representation_size", "16",
             "--model.image_size", "64", "--model.grid_size", "4", "--data", "DetectionDataModule",
             "--data.root", str(empty), "--data.format", "voc", "--data.num_workers", "0",
             "--trainer.fast_dev_run", "true"],
            [f"{empty} has no training split: {empty}/ImageSets/Main/train.txt does not exist."],
        ),
        "DetectionDataModule-coco": (
            ["--model", "FasterRCNN", "--data", "DetectionDataModule", "--data.root", str(empty),
             "--data.format", "coco"],
            [f"  {empty}/annotations/instances_train<year>.json", f"  {empty}/train/_annotations.coco.json",
             f"  {empty}/train.json",
             "Name the files with --data.annotations '{train: path/to/train.json, val: path/to/val.json}' "
             "(and their image folders with --data.images if they are not beside them)."],
        ),
        "DetectionDataModule-missing": (
            ["--model", "FasterRCNN", "--data", "DetectionDataModule", "--data.root", str(missing)],
            [f"data root {missing} does not exist or is not a folder. Pass --data.root a VOC folder (Annotations/, "
             "JPEGImages/, ImageSets/Main/) or a COCO export (or name its files with --data.annotations), or leave "
             "both out for the embedded shapes."],
        ),
        "TextDataModule": (
            ["--model", "LSTM", "--data", "TextDataModule", "--data.path", str(missing)],
            [f"text path {missing} does not exist. Pass --data.path a UTF-8 text file or a folder of them, or leave "
             "it out for the embedded pydoc topics."],
        ),
        "ArrayDataModule": (
            ["--model", "GRU", "--data", "ArrayDataModule", "--data.path", str(missing)],
            [f"sequence file {missing} does not exist or is not a file. Pass --data.path an .npz file (arrays x, y, "
             "optionally lengths, x_test, y_test) or a .csv/.tsv/.txt file (one sequence per line: the label "
             "field(s), then the values)."],
        ),
    }  # fmt: skip
    return cases[kind]


BAD_DATA = ["ImageFolderDataModule", "SegmentationDataModule", "DetectionDataModule-voc", "DetectionDataModule-coco",
            "DetectionDataModule-missing", "TextDataModule", "ArrayDataModule"]  # fmt: skip


@pytest.mark.parametrize("kind", BAD_DATA)
def test_bad_data_ends_with_our_message(kind, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args, ending = bad_data(kind, tmp_path)
    with pytest.raises(SystemExit) as stopped:
        cli(["fit", *args], run=True)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Given value" not in err and "Namespace(" not in err and "Traceback" not in err
    lines = err.rstrip().split("\n")
    assert ending[-1] in lines[-1]
    for line in ending[:-1]:  # COCO: every path tried, one a line, before what to pass
        assert line in lines
    first = next(line for line in lines if line.startswith("error: "))
    assert first.startswith(f"error: {kind.split('-')[0]}: ")  # the DataModule that raised it is named


def test_the_real_command_ends_with_our_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lit_models", "fit", "--model", "ResNet", "--data", "ImageFolderDataModule",
         "--data.root", "nowhere"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith("error: ImageFolderDataModule: data root nowhere does not exist or is not a folder.")
    assert "Given value" not in result.stderr and "Traceback" not in result.stderr


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug, not a bad argument")

    monkeypatch.setattr("lit_models.datamodules.text.pydoc_topics.export_folder", broken)
    with pytest.raises(ValueError, match="a bug, not a bad argument"):  # jsonargparse's report, chained
        cli(["--model", "LSTM", "--data", "TextDataModule"])


# ---------------------------------------------------------------------------- every module on its DataModule

# Each module, its DataModule, and the size knobs of a version that runs in a second.
MODULES = {
    "AlexNet": ("ImageFolderDataModule", ["--model.width_mult", "0.125", "--model.representation_size", "32"]),
    "VGG": ("ImageFolderDataModule", ["--model.depth", "11", "--model.width_mult", "0.125",
                                      "--model.representation_size", "32"]),
    "GoogLeNet": ("ImageFolderDataModule", ["--model.width_mult", "0.125"]),
    "ResNet": ("ImageFolderDataModule", ["--model.depth", "18", "--model.width_mult", "0.125"]),
    "DenseNet": ("ImageFolderDataModule", ["--model.growth_rate", "4", "--model.num_init_features", "8"]),
    "FCN": ("SegmentationDataModule", ["--model.width_mult", "0.125", "--model.representation_size", "16"]),
    "RCNN": ("DetectionDataModule", ["--model.width_mult", "0.125", "--model.representation_size", "32",
                                     "--model.rois_per_image", "16", "--model.warp_size", "32",
                                     "--model.context_padding", "4", "--model.pool_size", "1",
                                     "--model.finetune_epochs", "1"]),
    "SPPNet": ("DetectionDataModule", ["--model.width_mult", "0.125", "--model.representation_size", "32",
                                       "--model.rois_per_image", "16", "--model.min_size", "128",
                                       "--model.finetune_epochs", "1"]),
    "FastRCNN": ("DetectionDataModule", ["--model.width_mult", "0.125", "--model.representation_size", "32",
                                         "--model.rois_per_image", "16", "--model.min_size", "128"]),
    "FasterRCNN": ("DetectionDataModule", ["--model.width_mult", "0.125", "--model.representation_size", "32",
                                           "--model.min_size", "64", "--model.max_size", "64"]),
    # No data.image_size: the data takes the model's.
    "YOLOv1": ("DetectionDataModule", ["--model.width_mult", "0.125", "--model.representation_size", "32",
                                       "--model.image_size", "64", "--model.grid_size", "4"]),
    "YOLOClassifier": ("ImageFolderDataModule", ["--model.width_mult", "0.0625"]),
    "Markov": ("TextDataModule", ["--model.window", "4", "--model.hidden_size", "8", "--model.embedding_dim", "4"]),
    "RNN": ("TextDataModule", ["--model.hidden_size", "8", "--model.embedding_dim", "4"]),
    "LSTM": ("TextDataModule", ["--model.hidden_size", "8", "--model.embedding_dim", "4"]),
    "GRU": ("TextDataModule", ["--model.hidden_size", "8", "--model.embedding_dim", "4"]),
}  # fmt: skip


def tiny_data(data: str, trees: dict[str, Path]) -> list[str]:
    if data == "TextDataModule":
        return ["--data.path", str(trees["text"]), "--data.seq_len", "8", "--data.batch_size", "2"]
    common = ["--data.num_workers", "0", "--data.batch_size", "2"]
    if data == "ImageFolderDataModule":
        return ["--data.root", str(trees["images"]), "--data.image_size", "64", *common]
    if data == "SegmentationDataModule":
        return ["--data.root", str(trees["voc"]), "--data.crop_size", "32", "--data.base_size", "64", *common]
    # The 64-px scenes searched as they are, at most 200 proposals each (for the detectors that use them).
    return ["--data.root", str(trees["voc"]), "--data.proposal_width", "null", "--data.max_proposals", "200", *common]


def no_weight_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full-size nets (1.3 billion parameters for the 15) take 25 s and 4 GB to initialise, and only their
    construction is under test: the initialisers leave the (untouched, so unallocated) memory as it is."""
    for name in ("kaiming_uniform_", "kaiming_normal_", "normal_", "uniform_", "constant_", "zeros_", "ones_",
                 "xavier_uniform_", "xavier_normal_", "trunc_normal_"):  # fmt: skip
        monkeypatch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)


PROPOSAL_DETECTORS = ("RCNN", "SPPNet", "FastRCNN")


@pytest.mark.parametrize("module", list(MODULES))
def test_every_module_builds_and_runs_on_its_data(module, trees, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data, sizes = MODULES[module]
    # Selective search over a dataset takes hours: the proposal detectors say so rather than start it unasked.
    proposals = ["--data.proposals", "fast"] if module in PROPOSAL_DETECTORS else []
    with monkeypatch.context() as patch:
        no_weight_init(patch)
        # What users type first: everything at its default (the embedded data, built without reading it).
        if proposals:
            with pytest.raises(SystemExit):
                cli(["--model", module, "--data", data])
            last = capsys.readouterr().err.rstrip().split("\n")[-1]
            assert last.startswith(f"error: {module} classifies region proposals, but data.proposals is null: set ")
        built = cli(["--model", module, "--data", data, *proposals])
    model, datamodule = built.model, built.datamodule
    shared = (model.hparams_initial.keys() & datamodule.hparams_initial.keys()) - {"_class_path", "_instantiator"}
    assert all(model.hparams_initial[key] == datamodule.hparams_initial[key] for key in shared)
    if module == "YOLOv1":
        assert datamodule.hparams.image_size == model.hparams.image_size == 448
    del built, model, datamodule

    # And a run of the same pair, tiny, through every step of fit.
    args = ["fit", "--model", module, *sizes, "--data", data, *tiny_data(data, trees), *proposals,
            "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false"]  # fmt: skip
    ran = cli(args, run=True)
    assert ran.trainer.state.finished and np.isfinite(float(ran.trainer.callback_metrics["train/loss"]))


def test_proposals_for_a_detector_that_does_not_read_them_are_a_warning(caplog):
    with caplog.at_level("WARNING", logger="lit_models"):
        cli(["--model", "FasterRCNN", *MODULES["FasterRCNN"][1], "--data", "DetectionDataModule",
             "--data.proposals", "fast"])  # fmt: skip
    assert "FasterRCNN does not read region proposals: data.proposals=fast computes them for nothing" in caplog.text


def test_an_argument_that_model_and_data_both_take_must_agree():
    # Lightning would stop at its first log of hyperparameters; a module's None is taken from the data in setup.
    with pytest.raises(ValueError, match=r"disagree: --model.size 1 but --data.size 2\. Lightning logs both"):
        check_shared_arguments({"size": 1, "task": None}, {"size": 2, "task": "regression"})
    check_shared_arguments({"size": 2, "task": None}, {"size": 2, "task": "regression"})
    with pytest.raises(ValueError, match=r"--model.size 2 but --data.size 2.0"):  # Lightning's test: types too
        check_shared_arguments({"size": 2}, {"size": 2.0})


def test_a_num_classes_the_data_contradicts_is_an_error(trees, tmp_path, monkeypatch, capsys):
    """The link from data.num_classes would replace it silently: 3 classes in the folder, whatever was asked."""
    monkeypatch.chdir(tmp_path)
    data, sizes = MODULES["ResNet"]
    args = ["--model", "ResNet", *sizes, "--data", data, *tiny_data(data, trees)]
    config = tmp_path / "five.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "ResNet", "init_args": {"num_classes": 5}}}))
    for given in (["--model.num_classes", "5"], ["--model.init_args.num_classes=5"], ["--config", str(config)],
                  ["--model.num_classes", "1000"]):  # fmt: skip
        with pytest.raises(SystemExit) as stopped:
            cli([*args, *given])
        asked = given[-1].rpartition("=")[2] if given[0] != "--config" else "5"
        assert stopped.value.code == 2
        assert capsys.readouterr().err.rstrip().split("\n")[-1] == (
            f"error: --model.num_classes {asked} but the data has 3 classes: the model's num_classes follows the "
            "data; leave it out, or point --data at data with that many classes."
        )
    assert cli([*args, "--model.num_classes", "3"]).model.num_classes == 3  # the data's number: no contradiction
    assert cli(args).model.num_classes == 3


def test_data_that_contradicts_the_model_names_both(trees, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data, sizes = MODULES["YOLOv1"]
    with pytest.raises(SystemExit):
        cli(["--model", "YOLOv1", *sizes, "--data", data, *tiny_data(data, trees), "--data.image_size", "48"])
    last = capsys.readouterr().err.rstrip().split("\n")[-1]
    assert last == (
        "error: data.image_size is 48 but model.image_size is 64: YOLO v1's grid and fully connected head take one "
        "input size. Set --data.image_size 64, or both to another size."
    )
