"""The command line's parser: LightningCLI's, with errors in one line that name the closest valid option, and
whole numbers read as ints where Lightning takes an int or a float."""

from __future__ import annotations

import functools
import importlib
import operator
import os
import re
import typing
from typing import NoReturn

from jsonargparse import ArgumentParser
from pytorch_lightning.cli import LightningArgumentParser

from lit_models import registry
from lit_models.errors import did_you_mean, fail


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


def import_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def class_options(class_path: str) -> list[str]:
    """Every argument a class takes, as jsonargparse lists them (through ``**kwargs`` handed on)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(import_class(class_path), fail_untyped=False)
    return [action.dest for action in parser._actions if action.dest != "help"]


def readable_type(text: str) -> str:
    """``int`` for ``<class 'int'>``, ``one of 18, 34`` for ``typing.Literal[18, 34]``."""
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)
    return re.sub(r"typing\.Literal\[(.*)\]", r"one of \1", text).replace("NoneType", "null")


# How jsonargparse reports an argument of a --model / --data class: the class, then a name it refused or a bad value.
CLASS_ARGUMENT = re.compile(
    r"given class_path '([\w.]+)':\s+(?:Option '(\w+)' is not accepted|Parser key \"(\w+)\":\s+(.*))"
)


def clearer_parse_error(message: str, parser: ArgumentParser) -> str:
    """jsonargparse's message in one line, naming the closest valid option or class where one is unknown."""
    command = parser.prog.replace(" [options]", "")
    unknown = re.match(r"unrecognized arguments: (.*)", message)
    if unknown:
        options = [option for action in parser._actions for option in action.option_strings]
        hints = [f"{word}{did_you_mean(word, options, quote='')}" for word in re.findall(r"--[\w.-]+", message)]
        return f"unknown option {', '.join(hints)} (`{command} --help` lists them)"
    required = re.match(r"the following arguments are required: (?:(\w+)\.)?(model|data)\b", message)
    if required:
        command = f"lit-models {required.group(1)}" if required.group(1) else command
        return (f"{command} needs a model and its data: --config RECIPE (`lit-models recipes` lists them), or "
                "--model NAME --data NAME")  # fmt: skip
    key = re.match(r'Parser key "([\w.]+)":', message)
    inner = CLASS_ARGUMENT.search(message)
    if key and inner:  # an argument of a --model / --data class
        group, (class_path, refused, argument, problem) = key.group(1), inner.groups()
        name = class_path.rpartition(".")[2]
        if refused:
            hint = did_you_mean(refused, [f"--{group}.{dest}" for dest in class_options(class_path)], quote="")
            return f"{name} takes no --{group}.{refused}{hint} (`{command} --{group}.help {name}` lists its arguments)"
        value = re.match(r"Expected an? (.+?)\. Got value: (.*)", problem)
        if value:
            return f"--{group}.{argument} {value.group(2)}: expected {readable_type(value.group(1))}"
        return f"--{group}.{argument}: {problem}"
    unknown_class = re.search(r"Expected a dot import path string: (\S+)", message)
    if key and unknown_class and key.group(1) in ("model", "data"):
        names = registry.MODELS if key.group(1) == "model" else registry.DATAMODULES
        hint = did_you_mean(unknown_class.group(1), list(names)) or f" (one of {', '.join(names)})"
        return f"no {key.group(1)} {unknown_class.group(1)!r}{hint}"
    given = re.search(r"Given value: (.*)", message)
    expected = re.findall(r"- Expected a (.+)", message)
    if key and given and expected:  # a value of another type than the option's
        return f"--{key.group(1)} {given.group(1)}: expected {' or '.join(readable_type(e) for e in expected)}"
    return " ".join(message.split())  # one line: the last one on stderr is the error


class LitModelsParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors name the closest valid option and end in one line instead of below the
    command's whole usage."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # Not exiting: jsonargparse is trying alternatives and catches what this raises.
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        fail(clearer_parse_error(message, getattr(ex, "subcommand_parser", None) or self))
