"""Chain recipes: a paper's staged procedure (FCN 32s -> 16s -> 8s, Faster R-CNN's four steps, YOLO's classifier
pre-training) run by one command, each stage a recipe initialised from an earlier stage's final checkpoint.

A chain recipe's top level is ``chain:``, a list of stages::

    chain:
      - stage: fcn32s
        config: fcn32s_shapes.yaml      # relative to this file, or a packaged recipe name
        args: {trainer.max_epochs: 8}   # command-line overrides; "stage:NAME" names that stage's checkpoint
      - stage: fcn16s
        config: fcn16s_shapes.yaml
        init_from: fcn32s               # initialised from fcn32s's last.ckpt (the module's init_mapping)

``lit-models fit --config CHAIN`` runs the stages in order into ``runs/<chain>/version_N/<stage>/``, each folder
recording its stage (``stage.yaml``) as its checkpoints do; ``--ckpt_path last`` resumes the newest chain run in the
stage where it stopped. ``validate``, ``test`` and ``predict`` evaluate one stage (the last, or ``--stage NAME``)
of the newest run. Options after the recipe apply to every stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pytorch_lightning.trainer.states import TrainerStatus
from pytorch_lightning.utilities import rank_zero_only

from lit_models.errors import UsageError
from lit_models.recipes import find_recipe, recipe_label
from lit_models.runs import recorded_best, run_versions

STAGE_REFERENCE = "stage:"  # an argument value "stage:NAME" is that stage's final checkpoint
STAGE_KEYS = {"stage", "config", "init_from", "args"}
SAVE_DIR = "runs"  # where chain runs go unless --trainer.logger.init_args.save_dir says otherwise
SAVE_DIR_OPTION = "--trainer.logger.init_args.save_dir"


@dataclass(frozen=True)
class Stage:
    """One stage: a recipe, its overrides, and the earlier stage it starts from."""

    name: str
    config: str
    init_from: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def references(self) -> list[str]:
        """The earlier stages this one reads the checkpoints of."""
        named = [value.removeprefix(STAGE_REFERENCE) for value in self.args.values() if is_reference(value)]
        return [self.init_from, *named] if self.init_from else named


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(STAGE_REFERENCE)


@dataclass(frozen=True)
class Chain:
    """A chain recipe, read and checked (:func:`read_chain`)."""

    path: Path
    stages: tuple[Stage, ...]
    save_dir: str = SAVE_DIR

    @property
    def name(self) -> str:
        """The run folder's name: the recipe file's."""
        return self.path.stem

    @property
    def runs(self) -> Path:
        return Path(self.save_dir) / self.name

    def stage(self, name: str | None) -> Stage:
        """The stage called ``name``; the last one for None."""
        if name is None:
            return self.stages[-1]
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UsageError(f"{self.path} has no stage {name!r}; its stages: {', '.join(s.name for s in self.stages)}.")


def chain_text(path: str | Path) -> dict[str, Any] | None:
    """The YAML of ``path`` where it is a chain recipe (a mapping with ``chain:``), else None."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None  # the CLI's parser reports it, as for any recipe
    return loaded if isinstance(loaded, dict) and "chain" in loaded else None


def read_chain(path: str | Path) -> Chain:
    """The chain recipe at ``path``.

    Raises:
        UsageError: A malformed chain: naming the stage and what to fix.
    """
    path = Path(path)
    loaded = chain_text(path) or {}
    if set(loaded) - {"chain"}:
        raise UsageError(
            f"{path}: a chain recipe holds only `chain:` (its stages), not {sorted(set(loaded) - {'chain'})}"
        )
    entries = loaded.get("chain")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path}: `chain:` must be a list of stages, each with `stage:` and `config:`.")
    stages: list[Stage] = []
    for index, entry in enumerate(entries):
        where = f"{path}, stage {index + 1}"
        if not isinstance(entry, dict) or not {"stage", "config"} <= set(entry) or set(entry) - STAGE_KEYS:
            raise UsageError(f"{where}: a stage has `stage:` and `config:`, and may have `init_from:` and `args:` "
                             f"(got {entry!r}).")  # fmt: skip
        name = str(entry["stage"])
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in {s.name for s in stages}:
            raise UsageError(f"{where}: stage name {name!r} must be unique, letters, digits, '_', '-' or '.'.")
        args = entry.get("args") or {}
        if not isinstance(args, dict):
            raise UsageError(f"{where} ({name}): `args:` maps options to values ({{trainer.max_epochs: 8}}).")
        stage = Stage(name, stage_config(path, str(entry["config"]), where), entry.get("init_from"), args)
        earlier = [s.name for s in stages]
        for reference in stage.references():
            if reference not in earlier:
                raise UsageError(f"{where} ({name}): {reference!r} is not an earlier stage ({earlier or 'none'}).")
        stages.append(stage)
    return Chain(path, tuple(stages))


def stage_config(chain: Path, config: str, where: str) -> str:
    """A stage's recipe file: beside the chain recipe, else a packaged recipe of that name."""
    beside = chain.parent / config
    found = str(beside) if beside.is_file() else find_recipe(config)
    if not Path(found).is_file():
        raise UsageError(f"{where}: no recipe {config!r} beside {chain} or among the packaged recipes.")
    if chain_text(found) is not None:
        raise UsageError(f"{where}: {config} is itself a chain; a stage is one recipe.")
    return found


def option_pairs(args: dict[str, Any]) -> list[str]:
    """``{"trainer.max_epochs": 8}`` as ``["--trainer.max_epochs", "8"]`` (YAML values as the parser reads them)."""
    words = []
    for key, value in args.items():
        text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
        words += [f"--{key}", text.removesuffix("\n...").strip()]
    return words


def take_option(argv: list[str], option: str) -> tuple[list[str], str | None]:
    """``argv`` without ``option`` (``--x v`` or ``--x=v``), and its value."""
    rest, value, index = [], None, 0
    while index < len(argv):
        word = argv[index]
        if word == option and index + 1 < len(argv):
            value, index = argv[index + 1], index + 2
            continue
        if word.startswith(f"{option}="):
            value = word.partition("=")[2]
        else:
            rest.append(word)
        index += 1
    return rest, value


def stage_folder(run: Path, stage: Stage) -> Path:
    return run / stage.name


def final_checkpoint(run: Path, stage: Stage) -> Path:
    """The checkpoint a stage hands on: its last.ckpt (the papers hand on each stage's final weights)."""
    return stage_folder(run, stage) / "checkpoints" / "last.ckpt"


def finished(run: Path, stage: Stage) -> bool:
    record = stage_folder(run, stage) / "stage.yaml"
    return record.is_file() and bool((yaml.safe_load(record.read_text()) or {}).get("finished"))


def handed_on(run: Path, chain: Chain, name: str, reader: Stage) -> str:
    source = chain.stage(name)
    checkpoint = final_checkpoint(run, source)
    if not finished(run, source) or not checkpoint.is_file():
        raise UsageError(f"stage {reader.name} starts from stage {name}'s {checkpoint}, which is not there: "
                         "run the chain from the start, or resume it with --ckpt_path last.")  # fmt: skip
    return str(checkpoint)


def logger_options(run: Path, version: str) -> list[str]:
    """Logger arguments that put a stage's run at ``<run>/<version>`` (``runs/chain/version_0/fcn32s``)."""
    return [
        "--trainer.logger.init_args.save_dir", str(run.parent),
        "--trainer.logger.init_args.name", run.name,
        "--trainer.logger.init_args.version", version,
    ]  # fmt: skip


@rank_zero_only
def write_record(run: Path, chain: Chain, stage: Stage, init_from: str | None, done: bool) -> None:
    """``<stage>/stage.yaml``, written when the stage finishes: which chain and stage the run is and where it
    started (its checkpoints record the same from the start)."""
    folder = stage_folder(run, stage)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "chain": recipe_label(chain.path),
        "stage": stage.name,
        "index": chain.stages.index(stage),
        "config": recipe_label(stage.config),
        "init_from": {"stage": stage.init_from, "checkpoint": init_from} if stage.init_from else None,
        "finished": done,
    }
    temporary = folder / "stage.yaml.tmp"
    temporary.write_text(yaml.safe_dump(record, sort_keys=False))
    temporary.replace(folder / "stage.yaml")


def stage_options(run: Path, chain: Chain, stage: Stage) -> list[str]:
    """A stage's own options, each "stage:NAME" replaced by that stage's final checkpoint in ``run``."""
    args = {key: handed_on(run, chain, value.removeprefix(STAGE_REFERENCE), stage) if is_reference(value) else value
            for key, value in stage.args.items()}  # fmt: skip
    return option_pairs(args)


def stage_arguments(run: Path, chain: Chain, stage: Stage, extra: list[str]) -> tuple[list[str], str | None]:
    """The ``fit`` arguments of one stage, and the checkpoint it is initialised from."""
    init_from = handed_on(run, chain, stage.init_from, stage) if stage.init_from else None
    words = ["--config", stage.config, *stage_options(run, chain, stage), *extra, *logger_options(run, stage.name)]
    words += ["--stage", f"{chain.name}/{stage.name}"]
    return words + (["--init_from", init_from] if init_from else []), init_from


def in_save_dir(chain: Chain, extra: list[str]) -> tuple[Chain, list[str]]:
    """The chain with its runs under the ``--trainer.logger.init_args.save_dir`` that ``extra`` gives, if any."""
    extra, save_dir = take_option(extra, SAVE_DIR_OPTION)
    return (Chain(chain.path, chain.stages, save_dir) if save_dir else chain), extra


def fit_chain(chain: Chain, extra: list[str], run: Callable[[list[str]], Any]) -> None:
    """Run the chain's stages in order, each through ``run`` (the CLI's, which returns the LitModelsCLI it ran);
    with ``--ckpt_path last`` in ``extra``, resume the newest run."""
    extra, resume = take_option(extra, "--ckpt_path")
    chain, extra = in_save_dir(chain, extra)
    if resume not in (None, "last"):
        raise UsageError(f"fit of a chain takes --ckpt_path last (resume the newest run), not {resume!r}.")
    versions = run_versions(chain.runs)
    if resume and versions:
        folder = versions[0]
    else:
        number = int(versions[0].name.removeprefix("version_")) + 1 if versions else 0
        folder = chain.runs / f"version_{number}"
    for stage in chain.stages:
        if finished(folder, stage):
            continue
        words, init_from = stage_arguments(folder, chain, stage, extra)
        last = final_checkpoint(folder, stage)
        if resume and last.is_file():
            words += ["--ckpt_path", str(last)]
        cli = run(["fit", *words])
        if cli.trainer.state.status != TrainerStatus.FINISHED or cli.trainer.interrupted:
            raise SystemExit(1)  # the stage stopped early: later stages would start from unfinished weights
        write_record(folder, chain, stage, init_from, done=True)
    label = recipe_label(chain.path)
    rank_zero_print(
        f"\nChain {label} finished: {', '.join(s.name for s in chain.stages)} in {folder}/.\n"
        f"  lit-models test --config {label} --ckpt_path best   (the last stage; --stage NAME for another)"
    )


@rank_zero_only
def rank_zero_print(text: str) -> None:
    print(text, flush=True)


def evaluate_chain(command: str, chain: Chain, extra: list[str], run: Callable[[list[str]], Any]) -> None:
    """``validate``/``test``/``predict`` one stage of the newest chain run (``--stage NAME``; default the last),
    through the CLI's ``run``."""
    extra, name = take_option(extra, "--stage")
    chain, extra = in_save_dir(chain, extra)
    extra, alias = take_option(extra, "--ckpt_path")
    stage = chain.stage(name)
    versions = run_versions(chain.runs)
    checkpoint = alias
    if alias in ("last", "best"):
        last = final_checkpoint(versions[0], stage) if versions else None
        if last is None or not last.is_file():
            raise UsageError(f"--ckpt_path {alias}: no run of {chain.name} has trained stage {stage.name} "
                             f"(searched {chain.runs}/); fit first: lit-models fit --config "
                             f"{recipe_label(chain.path)}.")  # fmt: skip
        best = recorded_best(last) if alias == "best" else None
        checkpoint = str(last if best is None else last.parent / best.name)
    # The stage's options as it was trained with (a Faster R-CNN step's proposal network is built from them).
    own = stage_options(versions[0], chain, stage) if versions else option_pairs(stage.args)
    words = ["--config", stage.config, *own, *extra]
    if checkpoint:
        words += ["--ckpt_path", checkpoint]
        if versions and alias in ("last", "best"):
            words += logger_options(versions[0], f"{stage.name}/{command}")
    run([command, *words])
