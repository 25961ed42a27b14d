"""The ``lit-models`` command: one table of every command, dispatched by the first word.

``fit``, ``validate`` and ``test`` are LightningCLI's (:mod:`lit_models.cli`); the others are ours, each a
``main(argv)`` imported only when it runs, so that ``lit-models --help`` answers at once. ``predict`` is both:
with a recipe (``--config``) or ``--model`` it is LightningCLI's, else it predicts from a checkpoint alone.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import NamedTuple

from lit_models.errors import CommandParser, check_first_word, errors_as_messages, fail
from lit_models.torchrun import refuse_in_many_processes


class Command(NamedTuple):
    about: str
    # "module:function", imported when the command runs and called with the arguments after the command's name...
    target: str
    # ...or with the command's name first, where LightningCLI parses the command and reports its errors its way
    # (predict: where it is LightningCLI's, with a recipe).
    lightning: bool = False


LIGHTNING_CLI = "lit_models.cli:run"
COMMANDS = {
    "fit": Command("train a model: --config RECIPE, or --model NAME --data NAME", LIGHTNING_CLI, True),
    "validate": Command(
        "one validation epoch of a trained model: --config RECIPE --ckpt_path best", LIGHTNING_CLI, True
    ),
    "test": Command("one test epoch of a trained model: --config RECIPE --ckpt_path best", LIGHTNING_CLI, True),
    "predict": Command(
        "predict from a checkpoint alone (CHECKPOINT INPUT...) or with a recipe (--config RECIPE)",
        "lit_models.commands:predict",
        True,
    ),
    "export": Command("write a checkpoint's network as ONNX, checked in onnxruntime", "lit_models.export:main"),
    "summary": Command("parameters, FLOPs and layers of a checkpoint's or recipe's network", "lit_models.summary:main"),
    "benchmark": Command("images/s and latency of a network in eager, compiled and ONNX", "lit_models.benchmark:main"),
    "check": Command("read every file of a recipe's data and list every problem first", "lit_models.check:main"),
    "data": Command(
        "work on data: prepare (LitData shards), convert (VOC / COCO / YOLO, masks), show, stats",
        "lit_models.data_command:main",
    ),
    "recipes": Command("list the recipes packaged with lit-models", "lit_models.commands:recipes"),
}

# What our own commands raise for a bad input (a missing file, data they cannot read, a graph ONNX cannot hold):
# shown as `error: ...`, exit status 2. A missing optional dependency says which extra to install.
OUR_ERRORS = (ValueError, OSError, RuntimeError)


def overview() -> str:
    """What ``lit-models --help`` prints: every command with what it does."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: lit-models COMMAND [options]   (lit-models COMMAND --help: that command's options)",
        "",
        "Train and use the classic vision and sequence models. Start with: lit-models fit --config quickstart",
        "",
        "commands:",
        *(f"  {name:<{width}}  {command.about}" for name, command in COMMANDS.items()),
        "",
        "options:",
        f"  {'-h, --help':<{width}}  this list",
        f"  {'--version':<{width}}  the versions of lit-models, torch and Lightning",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``lit-models COMMAND [options]`` (``argv``: the arguments after the program's name; default sys.argv's)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return
    if argv[0] == "--version":
        from lit_models.version import version_line

        print(version_line())
        return
    name, rest = argv[0], argv[1:]
    check_first_word(name, COMMANDS, "command", "lit-models COMMAND")
    command = COMMANDS[name]
    handler = load(command.target)
    if command.lightning:
        handler([name, *rest])
    else:
        refuse_in_many_processes(name)
        run_ours(handler, rest)


def load(target: str) -> Callable[[list[str]], None]:
    """The function a command's ``"module:function"`` names, its module imported now."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def run_ours(handler: Callable[[list[str]], None], argv: list[str]) -> None:
    """One of our commands: library noise filtered, its errors as ``error: ...`` (:data:`OUR_ERRORS`)."""
    from lit_models.quiet import quiet_libraries

    quiet_libraries()
    with errors_as_messages(OUR_ERRORS):
        handler(argv)


# --------------------------------------------------------------------------------------------------------- predict

# Options that only LightningCLI's predict takes: with any of them the command is a recipe's predict.
LIGHTNING_OPTIONS = {"-c", "--config", "--model", "--data", "--trainer", "--ckpt_path", "--print_config",
                     "--seed_everything", "--optimizer", "--lr_scheduler", "--plots", "--plots_samples"}  # fmt: skip

PREDICT_FORMS = """\
usage: lit-models predict CHECKPOINT INPUT... [--output DIR] [--overwrite] [--temperature T] [--generate_length N]
       lit-models predict --config RECIPE [--ckpt_path best|last|FILE] [--data.predict_dir DIR] [--output PATH]
                          [--overwrite] [options of the recipe]

Two forms, told apart by --config (or --model):
  With a checkpoint alone, no recipe and no training data: the checkpoint carries the model, its classes and its
  data's evaluation preprocessing (the arguments below).
  With a recipe, as `fit` builds it: the run's --ckpt_path (best and last find the newest run of the recipe),
  the recipe's data (--data.predict_dir DIR, else its test split, else val), written into that run's folder
  (a predict/ folder beside its checkpoints). `lit-models predict --config RECIPE --help` lists every option.
  --output, --overwrite and --draw_score work in both forms, and so do --prediction_writer.output, .overwrite true
  and .draw_score.
"""


def lightning_predict_arguments(argv: list[str]) -> list[str]:
    """``argv`` with the checkpoint form's ``--output PATH`` and ``--overwrite`` spelled as LightningCLI's predict
    takes them (``--prediction_writer.output`` / ``--prediction_writer.overwrite true``)."""
    spelled = []
    for index, arg in enumerate(argv):
        option, equals, value = arg.partition("=")
        if option in ("--output", "--draw_score"):
            spelled.append(f"--prediction_writer.{option[2:]}{equals}{value}")
        elif option == "--overwrite":
            following = argv[index + 1].lower() if index + 1 < len(argv) else ""
            bare = not equals and following not in ("true", "false")  # a flag, as in the checkpoint form
            spelled.append(
                "--prediction_writer.overwrite=true" if bare else f"--prediction_writer.overwrite{equals}{value}"
            )
        else:
            spelled.append(arg)
    return spelled


def checkpoint_predict_arguments(argv: list[str]) -> list[str]:
    """``argv`` with LightningCLI's ``--prediction_writer.output PATH`` / ``--prediction_writer.overwrite true|false``
    spelled as the checkpoint form takes them (``--output PATH`` / ``--overwrite``)."""
    spelled, words = [], iter(argv)
    for arg in words:
        option, equals, value = arg.partition("=")
        if option in ("--prediction_writer.output", "--prediction_writer.draw_score"):
            spelled.append(f"--{option.split('.')[1]}{equals}{value}")
        elif option == "--prediction_writer.overwrite":
            value = value if equals else next(words, "true")
            spelled += ["--overwrite"] if value.lower() == "true" else []
        else:
            spelled.append(arg)
    return spelled


def predict(argv: list[str]) -> None:
    """``lit-models predict ...`` (``argv`` starts with ``predict``), either form (:data:`PREDICT_FORMS`)."""
    if any(arg.partition("=")[0].split(".")[0] in LIGHTNING_OPTIONS for arg in argv[1:]):
        load(LIGHTNING_CLI)(lightning_predict_arguments(argv))
        return
    if len(argv) == 1:
        sys.stderr.write(PREDICT_FORMS)
        fail("predict needs a checkpoint and what to predict, or a recipe (--config RECIPE): the two forms above.")
    if "-h" in argv or "--help" in argv:
        print(PREDICT_FORMS)
        print("With a checkpoint alone:")
    refuse_in_many_processes("predict CHECKPOINT")
    run_ours(load("lit_models.inference:main"), checkpoint_predict_arguments(argv[1:]))


# --------------------------------------------------------------------------------------------------------- recipes


def recipes(argv: list[str]) -> None:
    """``lit-models recipes``: the packaged recipes, each with the first line of its comment."""
    from lit_models.recipes import describe_recipes

    CommandParser(
        prog="lit-models recipes",
        description="List the recipes packaged with lit-models: pass one to fit, validate, test, predict, summary or "
        "check as --config NAME (or NAME), from any folder. A file of that name in the working folder wins.",
    ).parse_args(argv)
    try:
        print(describe_recipes(), flush=True)
    except BrokenPipeError:  # `lit-models recipes | head`: the reader has what it wanted
        sys.stdout = None  # nothing left to flush at exit
