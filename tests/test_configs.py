"""Every YAML under configs/ parses and instantiates, with a head as wide as the data's class list; what the recipes
share (configs/_shared/, included with `config: ../_shared/NAME.yaml`) reaches each recipe that includes it."""

import signal
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, stand_ins
from pytorch_lightning.plugins.environments import SLURMEnvironment

from lit_models.chains import chain_text
from lit_models.cli import LitModelsCLI
from lit_models.optim import WarmupCosineLR
from lit_models.recipes import resolve_recipe_arguments

CONFIGS = REPO / "configs"
# Recipes: not the trainer overlays, nor the pieces under _shared/ that recipes include, nor chains of recipes
# (tests/test_stages.py builds each of their stages).
TASK_CONFIGS = sorted(
    p
    for p in CONFIGS.rglob("*.yaml")
    if p.relative_to(CONFIGS).parts[0] not in ("trainer", "_shared") and chain_text(p) is None
)
TRAINER_CONFIGS = sorted((CONFIGS / "trainer").glob("*.yaml"))
SHARED = sorted((CONFIGS / "_shared").glob("*.yaml"))
MNIST_MEAN, MNIST_STD = [0.131] * 3, [0.308] * 3


def instantiate(args: list[str]) -> LitModelsCLI:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["lit-models"])  # pytest's own arguments are not the CLI's
        return LitModelsCLI(args=args, run=False)


def included(config: Path) -> Path | None:
    """The shared piece a recipe includes (its `config:` line), if any."""
    include = yaml.safe_load(config.read_text()).get("config")
    return (config.parent / include).resolve() if include else None


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"data": {"init_args": {"batch_size": 8}}} -> {"data.init_args.batch_size": 8}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_cosine_horizon(cli: LitModelsCLI) -> None:
    """A cosine schedule ends with the run: its horizon is the trainer's max_epochs, never a number kept by hand."""
    scheduler = cli.config["model.init_args.lr_scheduler"]
    if scheduler is None or "Cosine" not in scheduler["class_path"]:
        return
    assert scheduler["class_path"] == "lit_models.optim.WarmupCosineLR" and scheduler["init_args.T_max"] is None
    cli.model.trainer = cli.trainer  # as fit attaches it before configure_optimizers
    configured = cli.model.configure_optimizers()
    horizon = configured["lr_scheduler"]["scheduler"]
    assert isinstance(horizon, WarmupCosineLR) and horizon.T_max == cli.trainer.max_epochs


def heads(model: torch.nn.Module, width: int) -> list[torch.nn.Module]:
    """Layers that output class scores: classifiers' Linear layers, segmenters' 1x1 score convolutions, and YOLO's
    grid layer (B boxes and the width - 1 foreground classes per cell; for all S x S cells when fully connected)."""
    if hasattr(model, "grid_size"):
        cell = 5 * model.boxes_per_cell + width - 1
        width = cell if model.head_kind == "conv" else model.grid_size**2 * cell
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == width]
    score = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    return linear + [m for m in score if m.out_channels == width]


@pytest.mark.parametrize("config", TASK_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_task_config_instantiates(config, tree, voc_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = config.read_text()
    assert "seed_everything: " in text and text.lstrip().startswith("#"), "every config: a seed and a citation"
    args = ["--config", str(config)]
    cli = instantiate(args + stand_ins(text, tree, voc_tree))
    assert isinstance(cli.config["seed_everything"], int)
    assert cli.config["trainer.logger.init_args.name"] == config.stem, "runs/<recipe>/: the run is named after it"
    if (shared := included(config)) is not None:  # the include holds, except where the recipe changes a value
        overrides = {key for key in yaml.safe_load(text) if "." in key}
        own_blocks = {key for key in yaml.safe_load(text) if "." not in key}
        assert not own_blocks & set(yaml.safe_load(shared.read_text())), (
            f"{config.name} repeats a block of {shared.name}, which would replace all of it: change single values "
            "after the include (`data.init_args.batch_size: 128`)"
        )
        for key, value in flatten(yaml.safe_load(shared.read_text())).items():
            got = list(cli.config[key]) if isinstance(cli.config[key], tuple) else cli.config[key]  # typed tuples
            assert key in overrides or got == value, f"{config.name}: {key} is {got}, {shared.name} says {value}"
    if cli.config["data.class_path"].endswith("ImageFolderDataModule") and cli.config["data.init_args.root"] is None:
        digits = cli.config["data.init_args"]  # the embedded MNIST digits: their statistics, no mirrored digits
        assert (list(digits.mean), list(digits.std), digits.preset, digits.hflip) == (
            MNIST_MEAN,
            MNIST_STD,
            "small",
            False,
        )
    check_cosine_horizon(cli)
    num_classes = cli.datamodule.num_classes
    assert cli.model.num_classes == num_classes
    if cli.model.net is None:  # a sequence model takes its task and input from the data when the run sets up
        cli.model.build(cli.datamodule.task, cli.datamodule.input_size)
    assert heads(cli.model.net, num_classes), f"{config.name}: no classifier head of width {num_classes}"
    assert not heads(cli.model.net, 1000) or num_classes == 1000


@pytest.mark.parametrize("shared", SHARED, ids=lambda p: p.name)
def test_each_shared_piece_is_included_and_says_it_is_no_recipe(shared):
    text = shared.read_text()
    assert text.startswith("#") and "Not a recipe" in text, "a first comment says what includes it"
    assert any(included(recipe) == shared.resolve() for recipe in TASK_CONFIGS), f"no recipe includes {shared.name}"


def test_an_included_data_block_is_overridden_from_the_command_line_in_any_folder(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the include is found relative to the recipe, not the working folder
    args = ["--config", "classification/alexnet_digits", "--data.init_args.root", str(tree),
            "--data.init_args.batch_size", "8", "--trainer.max_epochs", "3"]  # fmt: skip
    cli = instantiate(resolve_recipe_arguments(args))  # by name, as `lit-models` resolves it
    data = cli.datamodule.hparams
    assert (data.root, data.batch_size, data.image_size) == (str(tree), 8, 64)  # the recipe's own 64 px stays
    assert (list(data.mean), data.hflip, data.rotation) == (MNIST_MEAN, False, 12)  # and the shared block
    assert cli.datamodule.num_classes == 3
    cli.model.trainer = cli.trainer
    assert cli.model.configure_optimizers()["lr_scheduler"]["scheduler"] is not None
    quickstart = instantiate(resolve_recipe_arguments(["--config", "quickstart", "--trainer.max_epochs", "3"]))
    check_cosine_horizon(quickstart)  # a 3-epoch cosine
    assert quickstart.trainer.max_epochs == 3


@pytest.mark.parametrize("trainer_config", TRAINER_CONFIGS, ids=lambda p: p.name)
def test_trainer_overlays_instantiate(trainer_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert trainer_config.read_text().startswith("#"), "every overlay says what it is for in a first comment"
    args = ["--config", str(REPO / "configs" / "quickstart.yaml"), "--trainer", str(trainer_config)]
    if "gpu" in trainer_config.name or "slurm" in trainer_config.name:  # no GPU here: the rest of it on CPU
        args += ["--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    if "slurm" in trainer_config.name:  # as srun starts the second of 2 tasks on one node
        for name, value in {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1",
                            "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_JOB_ID": "7",
                            "SLURM_JOB_NAME": "lit-models", "SLURM_NODELIST": "gpu01"}.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        for name in ("MASTER_ADDR", "MASTER_PORT"):  # SLURMEnvironment writes them: monkeypatch must undo that,
            monkeypatch.setenv(name, "")  # or later DDP tests rendezvous at "gpu01"
            monkeypatch.delenv(name)
    cli = instantiate(args)
    if trainer_config.name == "tensorboard.yaml":  # replaces the recipe's logger, keeping its run name
        assert type(cli.trainer.logger).__name__ == "TensorBoardLogger"
        assert (cli.trainer.logger.name, cli.trainer.logger.save_dir) == ("quickstart", "runs")
    if trainer_config.name == "rich.yaml":
        kinds = {type(callback).__name__ for callback in cli.trainer.callbacks}
        assert {"RichProgressBar", "RichModelSummary"} <= kinds
    if "ddp" in trainer_config.name or "slurm" in trainer_config.name:
        assert type(cli.trainer.strategy).__name__ == "DDPStrategy"
        assert cli.trainer.num_devices == 2
    if "slurm" in trainer_config.name:
        environment = cli.trainer.strategy.cluster_environment
        assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue
        assert environment.requeue_signal == signal.SIGUSR1
        assert (environment.global_rank(), environment.local_rank(), environment.main_address) == (1, 1, "gpu01")


def test_whole_batch_limits_are_batch_counts_and_fractions_stay_fractions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    limits = {"limit_train_batches": "1", "limit_val_batches": "0.5", "limit_test_batches": "1.0",
              "limit_predict_batches": "3"}  # fmt: skip
    args = ["--config", str(REPO / "configs" / "quickstart.yaml")]
    options = [item for key, value in limits.items() for item in (f"--trainer.{key}", value)]
    trainer = instantiate(args + options).trainer
    given = {key: getattr(trainer, key) for key in limits}
    assert given == {"limit_train_batches": 1, "limit_val_batches": 0.5, "limit_test_batches": 1.0,
                     "limit_predict_batches": 3}  # fmt: skip
    assert [type(given[key]) for key in limits] == [int, float, float, int]  # 1 is one batch; 1.0 every batch
    assert type(instantiate([*args, "--trainer.overfit_batches", "1"]).trainer.overfit_batches) is int
