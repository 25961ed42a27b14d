"""LightningCLI in subclass mode for every family's modules and DataModules: ``lit-models fit|validate|test`` and
``lit-models predict --config``. The command table (:mod:`lit_models.commands`) sends those here."""

from __future__ import annotations

import inspect
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_only

from lit_models import registry
from lit_models.chains import Chain, chain_text, evaluate_chain, fit_chain, read_chain, take_option
from lit_models.checkpoint_file import read_checkpoint, saved_arguments, saved_class
from lit_models.class_names import ClassNamesMismatchError
from lit_models.cli_parser import LitModelsParser, import_class, read_whole_numbers_as_int
from lit_models.datamodules.files import DataError
from lit_models.errors import UsageError, errors_as_messages
from lit_models.pictures import TrainingPictures
from lit_models.preemption import CheckpointOnSigterm
from lit_models.quiet import quiet_libraries, quiet_model_summary
from lit_models.recipes import recipe_label, resolve_recipe_arguments
from lit_models.run_report import RunReport
from lit_models.run_safety import RunError, RunSafety, claim_run_folders
from lit_models.runs import CheckpointNotFoundError, logger_runs, resolve_checkpoint_alias, run_of_checkpoint
from lit_models.stages import InitError, initialise
from lit_models.torchrun import follow_launch
from lit_models.version import version_line

log = logging.getLogger(__name__)

# Every family's modules and DataModules, known to --model / --data by their short names.
registry.import_all()


def route_optimizers(config: Namespace) -> None:
    """Hand LightningCLI's top-level ``--optimizer`` / ``--lr_scheduler`` to the module's own factories.

    Left to Lightning they would replace the module's ``configure_optimizers`` and silently drop what it adds: the
    bias parameter groups of the Caffe-era recipes (``bias_lr_mult``, ``bias_weight_decay``), ReduceLROnPlateau's
    monitor, and a scheduler given without an optimizer. As ``model.optimizer`` / ``model.lr_scheduler`` they
    pass through it, replacing what a config set there; a module without these arguments keeps Lightning's way.
    """
    model_args = config.get("model.init_args")
    for key in ("optimizer", "lr_scheduler"):
        given = config.get(key)
        if given is None or not isinstance(model_args, Namespace) or key not in model_args:
            continue
        replaced = model_args[key]
        if replaced is not None and replaced != given:
            log.warning("--%s %s replaces model.%s %s: --%s is the module's --model.%s.", key,
                        describe_class_config(given), key, describe_class_config(replaced), key, key)  # fmt: skip
        model_args[key] = given
        config[key] = None


def describe_class_config(config: Namespace) -> str:
    """``torch.optim.SGD(lr=0.1, momentum=0.9)``, for messages."""
    arguments = config.get("init_args") or Namespace()
    return f"{config.class_path}({', '.join(f'{k}={v!r}' for k, v in vars(arguments).items())})"


def class_arguments(config: Namespace, key: str) -> tuple[type, Namespace] | None:
    """The class and arguments of ``config.<key>`` (``model``, ``data``), where it is a class given with them."""
    given = config.get(key)
    if not (isinstance(given, Namespace) and isinstance(given.get("init_args"), Namespace)):
        return None
    return import_class(given.class_path), given.init_args


def data_follows_model(config: Namespace) -> None:
    """Set the data arguments the model needs (its ``data_arguments``) before either is built, so that both save
    the same values as hyperparameters (``--model YOLOv1 --data DetectionDataModule`` resizes to 448 px)."""
    model, data = class_arguments(config, "model"), class_arguments(config, "data")
    hook = getattr(model[0], "data_arguments", None) if model else None
    if hook is None or data is None:
        return
    for key, value in hook(model[1].as_dict(), data[1].as_dict()).items():
        data[1][key] = value


def check_shared_arguments(model_args: dict[str, Any], data_args: dict[str, Any]) -> None:
    """Raise ValueError where an argument that both the model and the data take has two values: Lightning logs
    both as one set of hyperparameters and stops at its first log. A module's None is left out: it takes that
    value from the data in ``setup`` (a sequence module's ``task``)."""
    clashes = []
    for key in sorted(model_args.keys() & data_args.keys()):
        ours, theirs = model_args[key], data_args[key]
        # Lightning's own test: a different type is a clash even when the values compare equal.
        if ours is not None and (type(ours) is not type(theirs) or ours != theirs):
            clashes.append(f"--model.{key} {ours!r} but --data.{key} {theirs!r}")
    if clashes:
        raise ValueError(
            f"the model and the data disagree: {'; '.join(clashes)}. Lightning logs both as one set of "
            "hyperparameters: give them the same value."
        )


def given_num_classes(config: Namespace, named: bool) -> int | None:
    """The model's ``num_classes`` where the user set one: ``named`` on the command line, or in a file (a value other
    than the class's default). The link from the data replaces it silently, so the CLI compares the two."""
    model = class_arguments(config, "model")
    if model is None or model[1].get("num_classes") is None:
        return None
    if named:
        return model[1].num_classes
    for klass in model[0].__mro__:  # the class that takes num_classes itself, maybe through **kwargs handed on
        parameter = inspect.signature(klass.__init__).parameters.get("num_classes")
        if parameter is not None:
            return None if model[1].num_classes == parameter.default else model[1].num_classes
    return None


# Options that leave a run's model and data as its recipe makes them.
OUTSIDE_MODEL_AND_DATA = ("--config", "-c", "--trainer", "--ckpt_path", "--plots", "--prediction_writer")


def rerun_config(args: list[str]) -> str | None:
    """The ``--config`` arguments that repeat this run's model and data (``--config quickstart``), where the command
    line changed nothing else of them; None otherwise (the run's own config.yaml then repeats it)."""
    words = args[1:] if args and not args[0].startswith("-") else args  # after the subcommand
    configs, index = [], 0
    while index < len(words):
        option, equals, value = words[index].partition("=")
        if not option.startswith(OUTSIDE_MODEL_AND_DATA):
            return None
        if not equals:
            index += 1
            value = words[index] if index < len(words) else ""
        if option in ("--config", "-c"):
            configs.append(f"--config {recipe_label(value)}")
        index += 1
    return " ".join(configs) or None


def progress_bar_only_on_a_terminal(config: Namespace) -> None:
    """Output redirected to a file gets RunReport's line per epoch, not a progress bar redrawn into it: unless the
    configuration chose (``enable_progress_bar``, or a progress bar among the callbacks, as ``--trainer rich``)."""
    trainer = config.get("trainer")
    if sys.stdout.isatty() or not isinstance(trainer, Namespace) or trainer.get("enable_progress_bar") is not None:
        return
    chosen = [str(getattr(callback, "class_path", callback)) for callback in trainer.get("callbacks") or []]
    if not any("ProgressBar" in name for name in chosen):
        trainer["enable_progress_bar"] = False


class LitModelsCLI(LightningCLI):
    """LightningCLI in subclass mode (``--model ResNet --data ImageFolderDataModule``) with the links, checks and
    callbacks of docs/architecture.md ("CLI"); its keyword arguments are LightningCLI's (``args``, ``run``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_class=LitModelsParser,
            parser_kwargs={"prog": "lit-models", **kwargs.pop("parser_kwargs", {})},
            # SLURM requeues reuse the run folder: rewriting its config.yaml must not fail.
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                # Persistent (not config entries): a run stopped by SIGTERM saves its step and exits 143; a NaN
                # loss or a failed checkpoint write stops it with what was kept.
                "callbacks": [CheckpointOnSigterm(), RunSafety()],
                "logger": {
                    "class_path": "pytorch_lightning.loggers.CSVLogger",
                    "init_args": {"save_dir": "runs"},
                },
            },
            **kwargs,
        )

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        parser.add_argument("--version", action="version", version=version_line())
        parser.epilog = "Packaged recipes: `lit-models recipes` lists them; `--config NAME` runs one from any folder."
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        read_whole_numbers_as_int(parser)
        # In subclass mode the target must be spelled model.init_args.*; every family calls its output size
        # num_classes, so this one link serves all of them.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        # Lightning's own top-level optimizer arguments, added here to say in --help where they go (route_optimizers).
        parser.add_optimizer_args()
        parser.add_lr_scheduler_args()
        helps = {
            "optimizer": "Given to the module as --model.optimizer (replacing a configured one), so its bias "
            "parameter groups are kept.",
            "lr_scheduler": "Given to the module as --model.lr_scheduler (replacing a configured one), which steps it "
            "each epoch and gives ReduceLROnPlateau its monitor.",
        }
        for action in parser._actions:
            action.help = helps.get(action.dest, action.help)
        # Each family writes predictions its own way (a CSV of classes, mask images, ...): the writer class comes
        # from the model (its ``prediction_writer``), these arguments from the command line.
        parser.add_argument(
            "--prediction_writer.output",
            type=str | None,
            default=None,
            help="predict: where to write (a CSV file or a folder, by family; also --output); default: in the run's "
            "folder",
        )
        parser.add_argument(
            "--prediction_writer.overwrite",
            type=bool,
            default=False,
            help="predict: replace existing prediction files instead of stopping (also --overwrite)",
        )
        parser.add_argument(
            "--prediction_writer.draw_score",
            type=float | None,
            default=None,
            help="predict: detectors: the lowest score drawn on the images (also --draw_score); default: the "
            "model's draw_score (0.3)",
        )
        parser.add_argument(
            "--init_from",
            type=str | None,
            default=None,
            help="fit: initialise the model from an earlier stage's checkpoint through the parameter mapping its "
            "module declares (FCN-16s from FCN-32s, YOLOv1 from YOLOClassifier); skipped when resuming (--ckpt_path)",
        )
        parser.add_argument(
            "--stage",
            type=str | None,
            default=None,
            help="fit: this run's place in a chain recipe, CHAIN/STAGE, recorded in its checkpoints (chain recipes set "
            "it)",
        )
        parser.add_argument(
            "--plots",
            type=bool,
            default=True,
            help="draw pictures into the run folder and the logger: evaluation samples with prediction and truth "
            "each validation epoch, loss curves after fit, the test confusion matrix, the predict grid",
        )
        parser.add_argument(
            "--plots_samples", type=int, default=8, help="evaluation samples drawn each epoch (with --plots true)"
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        given = (sys.argv[1:] if args is None else args) if not isinstance(args, (dict, Namespace)) else []
        self.rerun_config = rerun_config(given) if given else None
        named = any(arg.partition("=")[0] in ("--model.num_classes", "--model.init_args.num_classes") for arg in given)
        # Before Lightning merges a --ckpt_path file's hyperparameters in: what the user set, not the checkpoint.
        config = self.config.get(str(self.config.get("subcommand")), self.config)
        self.given_num_classes = given_num_classes(config, named)

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        route_optimizers(config)
        progress_bar_only_on_a_terminal(config)
        with errors_as_messages():
            follow_launch(config.trainer)
            data_follows_model(config)
            model, data = class_arguments(config, "model"), class_arguments(config, "data")
            if model and data and config.trainer.get("logger") is not False:
                check_shared_arguments(model[1].as_dict(), data[1].as_dict())

    def instantiate_classes(self) -> None:
        with errors_as_messages():
            super().instantiate_classes()
            self.check_pair()

    def check_pair(self) -> None:
        """Raise ValueError where the built model cannot run on the built data, before anything runs."""
        data_classes = getattr(self.datamodule, "num_classes", None)
        if self.given_num_classes is not None and data_classes is not None and self.given_num_classes != data_classes:
            raise ValueError(
                f"--model.num_classes {self.given_num_classes} but the data has {data_classes} classes: the model's "
                "num_classes follows the data; leave it out, or point --data at data with that many classes."
            )
        spec = getattr(self.datamodule, "spec", None)
        if spec is not None and hasattr(self.model, "use_data"):
            self.model.use_data(spec)  # the model's checks on this data (check_data, the checkpoint's class names)

    def _run_subcommand(self, subcommand: str) -> None:
        # Data that turns out bad once read (a missing split, an unreadable image, a checkpoint trained on other
        # classes), no run to take --ckpt_path from, predictions already there, a NaN loss or a full disk end the run
        # with their message; every other exception keeps its traceback.
        with errors_as_messages((DataError, ClassNamesMismatchError, UsageError, FileExistsError, InitError, RunError)):
            super()._run_subcommand(subcommand)

    def _parse_ckpt_path(self) -> None:
        """Lightning's merge of a ``--ckpt_path`` file's model and arguments into the configuration, with the file
        read as data first (docs/cli.md, "What a checkpoint may build"): Lightning's own would import whatever
        class the file names."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not path or not Path(path).is_file():
            return
        with errors_as_messages((DataError,)):
            saved = read_checkpoint(path)
            model = saved_class(saved, "model", path)
            arguments = saved_arguments(saved, "model", model, path)
        merged = {"class_path": f"{model.__module__}.{model.__name__}", "init_args": arguments}
        self.config = self.parser.parse_object({subcommand: {"model": merged}}, self.config)

    def _resolve_ckpt_path(self) -> None:
        """Turn ``--ckpt_path last|best`` into a file of an earlier run, and evaluate into that run's folder; the
        file is read as data before Lightning opens it."""
        config = self.config_init[self.subcommand]
        alias = config.get("ckpt_path")
        # Within one process Lightning knows these; a fresh `test` process finds them on disk.
        own = [cb for cb in self.trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
        if alias in ("last", "best") and not (alias == "best" and any(cb.best_model_path for cb in own)):
            try:
                config["ckpt_path"] = resolve_checkpoint_alias(alias, self.trainer)
            except CheckpointNotFoundError as error:
                if self.subcommand == "fit":  # as Lightning does: `fit --ckpt_path last` before any run starts afresh
                    config["ckpt_path"] = None
                    return
                fit = f"lit-models fit {self.rerun_config or '<the same options>'}"
                raise UsageError(f"{error} Train first ({fit}), or pass --ckpt_path a checkpoint file.") from None
        if config["ckpt_path"] and Path(config["ckpt_path"]).is_file():
            read_checkpoint(config["ckpt_path"])
        if self.subcommand != "fit" and config["ckpt_path"]:
            self._log_into_run(config["ckpt_path"])

    def _log_into_run(self, checkpoint: str) -> None:
        """Log an evaluation of a run's checkpoint into that run's folder (``version_3/test/``), beside what its
        fit wrote, instead of a new ``version_N``. A logger version the user gave is kept."""
        logger_config = self.config[self.subcommand].trainer.get("logger")
        if not isinstance(logger_config, Namespace) or not isinstance(logger_config.get("init_args"), Namespace):
            return
        run = run_of_checkpoint(checkpoint, logger_runs(self.trainer))
        if run is None or logger_config.init_args.get("version", "absent") is not None:
            return
        arguments = {**logger_config.init_args.as_dict(), "version": f"{run.name}/{self.subcommand}"}
        self.trainer.logger = import_class(logger_config.class_path)(**arguments)

    def _add_callbacks(self) -> None:
        """TrainingPictures, unless --plots false, and RunReport, each unless the configuration has one."""
        config = self.config_init[self.subcommand]
        present = {type(cb) for cb in self.trainer.callbacks}
        if config["plots"] and TrainingPictures not in present:
            self.trainer.callbacks.append(TrainingPictures(samples=config["plots_samples"]))
        if RunReport not in present:
            self.trainer.callbacks.append(RunReport(config=self.rerun_config))

    def before_fit(self) -> None:
        self._resolve_ckpt_path()
        self._start_stage()
        claim_run_folders(self.trainer)  # once nothing before the run can fail: no empty folder left behind
        self._add_callbacks()
        quiet_model_summary(self.trainer)

    def _start_stage(self) -> None:
        """Record the run's place in a chain and, unless it resumes, initialise it from ``--init_from``."""
        config = self.config_init[self.subcommand]
        if config["stage"]:
            chain, _, stage = config["stage"].rpartition("/")
            self.model.chain_stage = {"chain": chain, "stage": stage}
        if config["init_from"] and not config.get("ckpt_path"):
            with errors_as_messages((InitError, DataError)):
                source = initialise(self.model, config["init_from"])
            log.info("Initialised %s from %s.", type(self.model).__name__, source.describe())

    def before_validate(self) -> None:
        self._refuse_fit_options()
        self._resolve_ckpt_path()
        claim_run_folders(self.trainer)
        self._add_callbacks()

    def _refuse_fit_options(self) -> None:
        config = self.config_init[self.subcommand]
        for option in ("init_from", "stage"):
            if config.get(option):
                raise UsageError(
                    f"--{option} is for fit; {self.subcommand} takes the trained weights from --ckpt_path."
                )

    before_test = before_validate

    def before_predict(self) -> None:
        self._refuse_fit_options()
        self._resolve_ckpt_path()
        claim_run_folders(self.trainer)
        writer = getattr(self.model, "prediction_writer", None)
        if writer is not None:
            options = self.config_init[self.subcommand]
            grid = {} if options["plots"] else {"grid": 0}  # the classification writer's picture grid
            self.trainer.callbacks.append(writer(**options["prediction_writer"], **grid))


def build_recipe(recipe: str, *overrides: str) -> LitModelsCLI:
    """A recipe's model, DataModule and trainer (``.model``, ``.datamodule``, ``.trainer``), built as ``fit`` builds
    them, with command-line ``overrides`` (``"--data.root", "photos/"``), without running anything."""
    arguments = resolve_recipe_arguments(["--config", recipe, *overrides])
    if chain_text(arguments[1]) is not None:
        stages = ", ".join(f"{stage.name}: {recipe_label(stage.config)}" for stage in read_chain(arguments[1]).stages)
        raise UsageError(f"{recipe} is a chain of recipes ({stages}); name one of its stages' recipes here.")
    argv, sys.argv = sys.argv, sys.argv[:1]  # the recipe alone, not the calling command's own arguments
    try:
        return LitModelsCLI(args=arguments, run=False)
    finally:
        sys.argv = argv


def recipe(name: str, **overrides: dict[str, Any]) -> tuple[LightningModule, LightningDataModule, Trainer]:
    """A recipe's model, DataModule and trainer, built as ``lit-models fit --config NAME`` builds them, for notebooks
    and scripts: ``model, data, trainer = lit_models.recipe("quickstart", trainer={"max_epochs": 3},
    data={"root": "photos/"})``, then ``trainer.fit(model, datamodule=data)``.

    Args:
        name: A packaged recipe (``quickstart``, ``classification/resnet18_digits``) or a YAML file.
        overrides: Per group (``model``, ``data``, ``trainer``, ``seed_everything``), the settings to change, as
            ``--group.key value`` would on the command line.
    """
    arguments = []
    for group, settings in overrides.items():
        items = settings.items() if isinstance(settings, dict) else [(None, settings)]
        for key, value in items:
            option = f"--{group}" if key is None else f"--{group}.{key}"
            arguments += [option, value if isinstance(value, str) else json.dumps(value)]
    cli = build_recipe(name, *arguments)
    return cli.model, cli.datamodule, cli.trainer


def show_package_logs() -> None:
    """lit-models' own INFO messages (region proposal progress and recall, skipped files) on stderr, as
    Lightning shows its own; other libraries' loggers keep their levels. Under DDP the other ranks show only
    warnings: their information repeats rank 0's."""
    package = logging.getLogger("lit_models")
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(lambda record: rank_zero_only.rank == 0 or record.levelno >= logging.WARNING)
        package.addHandler(handler)
        package.setLevel(logging.INFO)


def run(argv: list[str]) -> LitModelsCLI | None:
    """LightningCLI's ``fit``, ``validate``, ``test`` or ``predict`` (``argv`` starts with it), with packaged
    recipes found by name; a chain recipe runs its stages (:mod:`lit_models.chains`). Returns the CLI of a single
    recipe's run."""
    show_package_logs()
    quiet_libraries()
    with errors_as_messages((UsageError,)):
        argv = resolve_recipe_arguments(argv)
        chain = chain_of(argv)
        if chain is not None:
            command, rest = argv[0], remove_config(argv[1:])
            return fit_chain(chain, rest, run) if command == "fit" else evaluate_chain(command, chain, rest, run)
    argv_before, sys.argv = sys.argv, [sys.argv[0], *argv]  # LightningCLI reads sys.argv for its own checks
    try:
        cli = LitModelsCLI()
    finally:
        sys.argv = argv_before
    # Lightning leaves the DDP process group alive. Left to interpreter exit, gloo's worker threads can outlive it
    # and abort the process ("terminate called without an active exception") after a run that succeeded.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return cli


def chain_of(argv: list[str]) -> Chain | None:
    """The chain recipe that ``argv``'s ``--config`` names, if it names one (then it is the only config)."""
    configs = [value for option, value in zip(argv, argv[1:], strict=False) if option in ("--config", "-c")]
    configs += [word.partition("=")[2] for word in argv if word.startswith(("--config=", "-c="))]
    chains = [path for path in configs if chain_text(path) is not None]
    if not chains:
        return None
    if len(configs) > 1:
        raise UsageError(f"{chains[0]} is a chain recipe: give it alone (its stages name their own recipes); "
                         "options after it apply to every stage.")  # fmt: skip
    return read_chain(chains[0])


def remove_config(argv: list[str]) -> list[str]:
    for option in ("--config", "-c"):
        argv = take_option(argv, option)[0]
    return argv


def main() -> None:
    """The ``lit-models`` console script."""
    from lit_models.commands import main as commands_main

    commands_main()
