"""The ``lit-models`` command: LightningCLI in subclass mode for every family's modules and DataModules."""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import operator
import os
import sys
import traceback
import typing
from collections.abc import Iterator
from pathlib import Path

import torch
from jsonargparse import Namespace
from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

# Imported so every family's modules and DataModules are known to --model/--data short names.
import lit_models.classification  # noqa: F401
import lit_models.datamodules.detection  # noqa: F401
import lit_models.datamodules.image_folder  # noqa: F401
import lit_models.datamodules.segmentation  # noqa: F401
import lit_models.datamodules.sequence  # noqa: F401
import lit_models.detection  # noqa: F401
import lit_models.segmentation  # noqa: F401
import lit_models.sequence  # noqa: F401
from lit_models import __version__
from lit_models.class_names import ClassNamesMismatchError
from lit_models.datamodules.files import DataError
from lit_models.pictures import TrainingPictures
from lit_models.preemption import CheckpointOnSigterm
from lit_models.quiet import quiet_libraries
from lit_models.recipes import describe_recipes, resolve_recipe_arguments
from lit_models.runs import recorded_best, run_versions

log = logging.getLogger(__name__)


def checkpoint_folders(trainer: Trainer) -> list[Path]:
    """Folders that may hold this configuration's checkpoints, newest run first.

    With an explicit ModelCheckpoint ``dirpath`` that folder; otherwise every ``version_*/checkpoints`` of the
    logger's run folder, because a new ``test`` process has a new version number of its own.
    """
    fixed = [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
    if fixed or trainer.logger is None or trainer.logger.save_dir is None:
        return fixed
    runs = Path(trainer.logger.save_dir) / str(trainer.logger.name)
    return [version / "checkpoints" for version in run_versions(runs)]


def requeue_checkpoint(trainer: Trainer) -> Path | None:
    """The newest ``hpc_ckpt_<n>.ckpt``: what Lightning saves into ``default_root_dir`` when SLURM signals a requeue
    (configs/trainer/slurm.yaml)."""
    found = sorted(Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def resolve_checkpoint_alias(alias: str, trainer: Trainer) -> str:
    """Turn ``last`` / ``best`` into a file from an earlier ``fit`` of the same configuration. ``last`` is the run's
    last.ckpt, or SLURM's requeue checkpoint when that is newer (Lightning itself takes it only without a
    ``ckpt_path``)."""
    requeued = requeue_checkpoint(trainer) if alias == "last" else None
    for folder in checkpoint_folders(trainer):
        lasts = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not lasts:
            continue
        if alias == "last":
            newer = requeued is not None and requeued.stat().st_mtime > lasts[-1].stat().st_mtime
            return str(requeued if newer else lasts[-1])
        best = recorded_best(lasts[-1])
        if best is None:
            raise FileNotFoundError(f"{lasts[-1]} records no best checkpoint (no monitored ModelCheckpoint).")
        for candidate in (best, folder / best.name):  # the run folder may have moved since
            if candidate.exists():
                return str(candidate)
        raise FileNotFoundError(f"{lasts[-1]} names {best} as the best checkpoint, but it is gone.")
    if requeued is not None:  # requeued before the first epoch's last.ckpt
        return str(requeued)
    raise FileNotFoundError(
        f"--ckpt_path {alias}: no earlier fit of this configuration saved a last.ckpt under "
        f"{[str(f) for f in checkpoint_folders(trainer)] or 'the logger folder'}. Pass a checkpoint file path."
    )


def read_whole_numbers_as_int(parser: LightningArgumentParser) -> None:
    """Make ``--trainer.limit_train_batches 1`` one batch, not 100 %.

    Lightning annotates ``limit_*_batches`` and ``overfit_batches`` as ``Optional[Union[int, float]]``, but typing
    caches unions by equality and hands back an equal ``Union[float, int]`` that another library created first, so
    jsonargparse tried float first and read 1 as 1.0 (every batch). A PEP 604 union keeps the order given.
    """
    for action in parser._actions:
        hint = getattr(action, "_typehint", None)  # jsonargparse's typed actions
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Union and args[:2] == (float, int):
            action._typehint = functools.reduce(operator.or_, (int, float, *args[2:]))


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
            log.warning(
                "--%s %s replaces model.%s %s: --%s is the module's --model.%s.",
                key,
                describe_class_config(given),
                key,
                describe_class_config(replaced),
                key,
                key,
            )
        model_args[key] = given
        config[key] = None


def describe_class_config(config: Namespace) -> str:
    """``torch.optim.SGD(lr=0.1, momentum=0.9)``, for messages."""
    arguments = config.get("init_args") or Namespace()
    return f"{config.class_path}({', '.join(f'{k}={v!r}' for k, v in vars(arguments).items())})"


def import_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def data_follows_model(config: Namespace) -> None:
    """Set the data arguments the model needs (its ``data_arguments``) before either is built, so that both save
    the same values as hyperparameters (``--model YOLOv1 --data DetectionDataModule`` resizes to 448 px)."""
    model, data = config.get("model"), config.get("data")
    if not (isinstance(model, Namespace) and isinstance(data, Namespace)):
        return
    if not (isinstance(model.get("init_args"), Namespace) and isinstance(data.get("init_args"), Namespace)):
        return
    hook = getattr(import_class(model.class_path), "data_arguments", None)
    if hook is None:
        return
    for key, value in hook(model.init_args.as_dict(), data.init_args.as_dict()).items():
        data.init_args[key] = value


def check_pair(model: LightningModule, datamodule: LightningDataModule | None, trainer: Trainer) -> None:
    """Raise ValueError where the built model cannot run on the built data, before anything runs.

    The model's ``check_data`` (its ``setup`` calls it too), then the clash Lightning finds only when it logs the
    hyperparameters: an argument that both take, with different values. A module's None is left out: it takes
    that value from the data in ``setup`` (a sequence module's ``task``).
    """
    if datamodule is None:
        return
    check = getattr(model, "check_data", None)
    if check is not None:
        check(datamodule)
    if not (trainer.loggers and model._log_hyperparams and datamodule._log_hyperparams):
        return
    model_hparams, data_hparams = model.hparams_initial, datamodule.hparams_initial
    clashes = []
    for key in sorted(model_hparams.keys() & data_hparams.keys() - {"_class_path"}):
        ours, theirs = model_hparams[key], data_hparams[key]
        if ours is None:
            continue
        # Lightning's own test: a different type is a clash even when the values compare equal.
        different_type = type(ours) is not type(theirs)
        if different_type or (isinstance(ours, torch.Tensor) and ours is not theirs) or ours != theirs:
            clashes.append(f"--model.{key} {ours!r} but --data.{key} {theirs!r}")
    if clashes:
        raise ValueError(
            f"the model and the data disagree: {'; '.join(clashes)}. Lightning logs both as one set of "
            "hyperparameters: give them the same value."
        )


def exception_origin(error: BaseException) -> BaseException | None:
    """The first exception of a chain that jsonargparse did not raise: what a class's ``__init__`` raised, under
    the type-union errors that jsonargparse chains it to."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = list(traceback.walk_tb(current.__traceback__))
        if not frames or "jsonargparse" not in Path(frames[-1][0].f_code.co_filename).parts:
            return current
        current = current.__cause__ or current.__context__
    return None


def raised_in(error: BaseException) -> str | None:
    """The module or DataModule whose code raised ``error`` (the innermost in its traceback: a DataModule's check
    called through a module's hook is the DataModule's), if one did."""
    owners = [frame.f_locals.get("self") for frame, _ in traceback.walk_tb(error.__traceback__)]
    owners = [owner for owner in owners if isinstance(owner, (LightningModule, LightningDataModule))]
    return type(owners[-1]).__name__ if owners else None


@contextlib.contextmanager
def errors_as_messages(kinds: tuple[type[BaseException], ...] = (ValueError, OSError)) -> Iterator[None]:
    """End the command with our message as its last line, exit status 2, as a bad argument does, when an
    exception of these kinds stops it: building the classes on what the user gave (a ValueError or OSError,
    DataError included, from a module, a DataModule or a check), or bad data found while running.

    jsonargparse reports an ``__init__``'s exception inside its type-union error ("Expected a <class
    'NoneType'> ... Given value Namespace(...)") below a long traceback; the exception is chained there.
    Other exceptions (bugs) keep their traceback, and so does everything with JSONARGPARSE_DEBUG set.
    """
    try:
        yield
    except kinds as error:
        origin = exception_origin(error)
        if not isinstance(origin, kinds) or os.environ.get("JSONARGPARSE_DEBUG"):
            raise
        message = str(origin)
        owner = raised_in(origin)
        if owner and not message.startswith(f"{owner} "):
            message = f"{owner}: {message}"
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2) from None


class LitModelsCLI(LightningCLI):
    def __init__(self, **kwargs) -> None:
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            # SLURM requeues reuse the run folder: rewriting its config.yaml must not fail.
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                # Persistent (not a config entry): a run stopped by SIGTERM saves its step and exits 143.
                "callbacks": [CheckpointOnSigterm()],
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
        # from the model (its ``prediction_writer``), these two arguments from the command line.
        parser.add_argument(
            "--prediction_writer.output",
            type=str | None,
            default=None,
            help="predict: where to write (a CSV file or a folder, by family); default: in the run's log folder",
        )
        parser.add_argument(
            "--prediction_writer.overwrite",
            type=bool,
            default=False,
            help="predict: replace existing prediction files instead of stopping",
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

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        route_optimizers(config)
        with errors_as_messages():
            data_follows_model(config)

    def instantiate_classes(self) -> None:
        with errors_as_messages():
            super().instantiate_classes()
            check_pair(self.model, self.datamodule, self.trainer)

    def _run_subcommand(self, subcommand: str) -> None:
        # Data that turns out bad once read (a missing split, an unreadable image, a checkpoint trained on other
        # classes) ends the run with its message; every other exception keeps its traceback.
        with errors_as_messages((DataError, ClassNamesMismatchError)):
            super()._run_subcommand(subcommand)

    def _resolve_ckpt_path(self) -> None:
        config = self.config_init[self.subcommand]
        alias = config.get("ckpt_path")
        if alias not in ("last", "best"):
            return
        # Within one process Lightning knows these; a fresh `test` process finds them on disk.
        own = [cb for cb in self.trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
        if alias == "best" and any(cb.best_model_path for cb in own):
            return
        try:
            config["ckpt_path"] = resolve_checkpoint_alias(alias, self.trainer)
        except FileNotFoundError:
            if self.subcommand != "fit":
                raise
            # As Lightning does: `fit --ckpt_path last` before any run starts from scratch.
            config["ckpt_path"] = None

    def _add_pictures(self) -> None:
        """TrainingPictures, unless --plots false or the configuration already has one."""
        config = self.config_init[self.subcommand]
        present = any(isinstance(cb, TrainingPictures) for cb in self.trainer.callbacks)
        if config["plots"] and not present:
            self.trainer.callbacks.append(TrainingPictures(samples=config["plots_samples"]))

    def before_fit(self) -> None:
        self._resolve_ckpt_path()
        self._add_pictures()

    def before_validate(self) -> None:
        self._resolve_ckpt_path()
        self._add_pictures()

    def before_test(self) -> None:
        self._resolve_ckpt_path()
        self._add_pictures()

    def before_predict(self) -> None:
        self._resolve_ckpt_path()
        writer = getattr(self.model, "prediction_writer", None)
        if writer is not None:
            options = self.config_init[self.subcommand]["prediction_writer"]
            callback = writer(output=options["output"], overwrite=options["overwrite"])
            if not self.config_init[self.subcommand]["plots"] and hasattr(callback, "grid"):
                callback.grid = 0  # the classification writer's picture grid
            self.trainer.callbacks.append(callback)


def build_recipe(recipe: str, *overrides: str) -> LitModelsCLI:
    """A recipe's model, DataModule and trainer (``.model``, ``.datamodule``, ``.trainer``), built as ``fit`` builds
    them, with command-line ``overrides`` (``"--data.root", "photos/"``), without running anything."""
    argv, sys.argv = sys.argv, sys.argv[:1]  # the recipe alone, not the calling command's own arguments
    try:
        return LitModelsCLI(args=resolve_recipe_arguments(["--config", recipe, *overrides]), run=False)
    finally:
        sys.argv = argv


def show_package_logs() -> None:
    """lit-models' own INFO messages (region proposal progress and recall, skipped files) on stderr, as
    Lightning shows its own; other libraries' loggers keep their levels."""
    package = logging.getLogger("lit_models")
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)


def version_line() -> str:
    import pytorch_lightning

    return f"lit-models {__version__} (torch {torch.__version__}, pytorch-lightning {pytorch_lightning.__version__})"


def main() -> None:
    commands = {
        "predict": "lit_models.inference",
        "export": "lit_models.export",
        "summary": "lit_models.summary",
        "check": "lit_models.check",
    }
    if sys.argv[1:2] and sys.argv[1] in commands and sys.argv[2:3] and not sys.argv[2].startswith("-"):
        # `lit-models predict CHECKPOINT INPUTS`, `export CHECKPOINT`, `summary CHECKPOINT|CONFIG`, `check RECIPE`:
        # a checkpoint alone (or a recipe), without LightningCLI's subcommand arguments.
        command = importlib.import_module(commands[sys.argv[1]])
        quiet_libraries()
        with errors_as_messages((ValueError, OSError)):
            command.main(sys.argv[2:])
        return
    if sys.argv[1:2] == ["recipes"]:
        try:
            print(describe_recipes(), flush=True)
        except BrokenPipeError:  # `lit-models recipes | head`: the reader has what it wanted
            sys.stdout = None  # nothing left to flush at exit
        return
    show_package_logs()
    quiet_libraries()
    sys.argv[1:] = resolve_recipe_arguments(sys.argv[1:])  # packaged recipes by name, read from the command line
    LitModelsCLI()
    # Lightning leaves the DDP process group alive. Left to interpreter exit, gloo's worker threads can outlive it
    # and abort the process ("terminate called without an active exception") after a run that succeeded.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
