"""The ``lit-models`` command: LightningCLI in subclass mode for every family's modules and DataModules."""

from __future__ import annotations

import functools
import logging
import operator
import re
import sys
import typing
from pathlib import Path

import torch
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
from lit_models.recipes import describe_recipes, resolve_recipe_arguments


def checkpoint_folders(trainer: Trainer) -> list[Path]:
    """Folders that may hold this configuration's checkpoints, newest run first.

    With an explicit ModelCheckpoint ``dirpath`` that folder; otherwise every ``version_*/checkpoints`` of the
    logger's run folder, because a new ``test`` process has a new version number of its own.
    """
    fixed = [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
    if fixed or trainer.logger is None or trainer.logger.save_dir is None:
        return fixed
    runs = Path(trainer.logger.save_dir) / str(trainer.logger.name)
    versions = [p for p in runs.glob("version_*") if re.fullmatch(r"version_\d+", p.name)]
    versions.sort(key=lambda p: int(p.name.split("_")[1]), reverse=True)
    return [p / "checkpoints" for p in versions]


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
        # mmap: only the callback states are read, not the weights and optimizer state around them.
        state = torch.load(lasts[-1], map_location="cpu", weights_only=True, mmap=True).get("callbacks", {})
        for key, value in state.items():
            if key.startswith("ModelCheckpoint") and value.get("monitor") and value.get("best_model_path"):
                best = Path(value["best_model_path"])
                for candidate in (best, folder / best.name):  # the run folder may have moved since
                    if candidate.exists():
                        return str(candidate)
                raise FileNotFoundError(f"{lasts[-1]} names {best} as the best checkpoint, but it is gone.")
        raise FileNotFoundError(f"{lasts[-1]} records no best checkpoint (no monitored ModelCheckpoint).")
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
                "logger": {
                    "class_path": "pytorch_lightning.loggers.CSVLogger",
                    "init_args": {"save_dir": "runs"},
                }
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

    def before_fit(self) -> None:
        self._resolve_ckpt_path()

    def before_validate(self) -> None:
        self._resolve_ckpt_path()

    def before_test(self) -> None:
        self._resolve_ckpt_path()

    def before_predict(self) -> None:
        self._resolve_ckpt_path()
        writer = getattr(self.model, "prediction_writer", None)
        if writer is not None:
            options = self.config_init[self.subcommand]["prediction_writer"]
            self.trainer.callbacks.append(writer(output=options["output"], overwrite=options["overwrite"]))


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
    if sys.argv[1:2] == ["recipes"]:
        print(describe_recipes())
        return
    show_package_logs()
    sys.argv[1:] = resolve_recipe_arguments(sys.argv[1:])  # packaged recipes by name, read from the command line
    LitModelsCLI()
    # Lightning leaves the DDP process group alive. Left to interpreter exit, gloo's worker threads can outlive it
    # and abort the process ("terminate called without an active exception") after a run that succeeded.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
