"""How a command ends when it cannot do what was asked: ``error: <message>`` as the last line on stderr, exit status
2, as a bad argument does, with what to do instead. Bugs keep their traceback; so does everything with
``JSONARGPARSE_DEBUG`` set.

Only the standard library is imported here, so that the lowest layers (``runs``, ``recipes``) can raise
:class:`UsageError` without importing Lightning.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NoReturn


class UsageError(ValueError):
    """What the user asked cannot be done as asked (a recipe that does not exist, no earlier run to test); the
    message says what to do instead."""


def did_you_mean(word: str, choices: Iterable[str] | Mapping[str, str], quote: str = "'") -> str:
    """``"; did you mean 'quickstart'?"`` for the choice closest to ``word``, or ``""`` when none is close. A
    mapping's keys are matched and its value suggested (a recipe's short name -> its full name)."""
    spellings = dict(choices) if isinstance(choices, Mapping) else {choice: choice for choice in choices}
    close = difflib.get_close_matches(word, list(spellings), n=1)
    return f"; did you mean {quote}{spellings[close[0]]}{quote}?" if close else ""


def check_first_word(word: str, choices: Iterable[str], noun: str, usage: str) -> None:
    """End the command (:func:`fail`) unless ``word`` is one of ``choices``, suggesting the closest: ``noun`` names
    the kind of word ("command", "verb"), ``usage`` the command line it starts ("lit-models data VERB")."""
    if word in choices:
        return
    hint = did_you_mean(word, list(choices)) if not word.startswith("-") else ""
    program = usage.rsplit(" ", 1)[0]  # "lit-models data VERB" -> "lit-models data"
    owner = "" if program == "lit-models" else f" of {program}"
    fail(f"{word!r} is not a {noun}{owner}{hint or '.'} The {noun} comes first: {usage} [options] "
         f"({program} --help lists them).")  # fmt: skip


def fail(message: str) -> NoReturn:
    """End the command: ``error: message`` as the last line on stderr, exit status 2."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(2)


class CommandParser(argparse.ArgumentParser):
    """argparse for our own commands (``lit-models recipes``, ``export``, ...): a bad argument ends the command as
    any error does, in one line, instead of below the usage."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (`{self.prog} --help` lists the arguments)")


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
    # Imported here: this module is imported by layers below Lightning's (see the module docstring).
    from pytorch_lightning import LightningDataModule, LightningModule

    owners = [frame.f_locals.get("self") for frame, _ in traceback.walk_tb(error.__traceback__)]
    owners = [owner for owner in owners if isinstance(owner, (LightningModule, LightningDataModule))]
    return type(owners[-1]).__name__ if owners else None


# Optional dependencies by the extra that installs them (pyproject.toml).
EXTRAS = {"onnx": "export", "onnxscript": "export", "onnxruntime": "export", "litdata": "shards"}


def missing_extra(error: BaseException) -> str | None:
    """What to install when ``error`` is a missing optional dependency, else None."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    extra = EXTRAS.get(error.name.partition(".")[0])
    if extra is None:
        return None
    return f"{error.name} is not installed; it comes with lit-models' {extra} extra: pip install 'lit-models[{extra}]'"


@contextlib.contextmanager
def errors_as_messages(kinds: tuple[type[BaseException], ...] = (ValueError, OSError)) -> Iterator[None]:
    """End the command with our message when an exception of these kinds stops it: building the classes on what
    the user gave (a ValueError or OSError, DataError included, from a module, a DataModule or a check), bad data
    found while running, or a missing optional dependency (a ModuleNotFoundError for one of ``EXTRAS``).

    jsonargparse reports an ``__init__``'s exception inside its type-union error ("Expected a <class
    'NoneType'> ... Given value Namespace(...)") below a long traceback; the exception is chained there.
    Other exceptions (bugs) keep their traceback, and so does everything with JSONARGPARSE_DEBUG set.
    """
    try:
        yield
    except (*kinds, ModuleNotFoundError) as error:
        origin = exception_origin(error)
        if os.environ.get("JSONARGPARSE_DEBUG"):
            raise
        install = missing_extra(origin)
        if install is not None:
            fail(install)
        if not isinstance(origin, kinds):
            raise
        message = str(origin)
        owner = raised_in(origin)
        if owner and not message.startswith(f"{owner} "):
            message = f"{owner}: {message}"
        fail(message)
