"""Output folders written whole or not at all: built in a ``.partial`` sibling and renamed into place, as ``data
prepare`` writes its shards, so an interrupted command never leaves a half-written folder that a run would trust."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def check_output(output: Path, source: Path, overwrite: bool) -> None:
    """Refuse an output that would replace or sit inside the source, or anything at all without ``overwrite``."""
    if output == source or source.is_relative_to(output) or output.is_relative_to(source):
        raise ValueError(f"--output {output} and the source {source} overlap: choose a folder outside the source.")
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"--output {output} is a file; a folder is written there: choose another --output.")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty; nothing is written over it: choose another "
                              "--output, or pass --overwrite to replace it.")  # fmt: skip


@contextmanager
def building(output: str | os.PathLike, source: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty ``.partial`` sibling of ``output`` to write into; when the block ends without an error it
    replaces ``output``, otherwise it is removed."""
    output = Path(output).expanduser().resolve()
    check_output(output, Path(source).expanduser().resolve(), overwrite)
    partial = output.with_name(f".{output.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # what an interrupted command left
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if output.exists():
        shutil.rmtree(output)
    os.replace(partial, output)


def place_file(source: Path, destination: Path) -> None:
    """``destination`` holding ``source``'s bytes: a hard link where the file system allows one (no copy of a large
    image set), else a copy."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)
