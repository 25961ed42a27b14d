"""Write a generated or exported dataset into place once, atomically, never over someone else's files."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

COMPLETE_MARKER = ".complete"


def export_once(root: str | os.PathLike, what: str, write: Callable[[Path], str]) -> Path:
    """Run ``write(staging_folder)`` and rename the result to ``root``, unless ``root`` already holds it.

    ``write`` fills the folder and returns a one-line summary, kept in ``root/.complete``. The tree is built in
    a temporary sibling folder and renamed into place, so an interrupted export never leaves a half-written
    tree that later runs would trust, and two processes exporting at once both end with one finished tree.
    A non-empty ``root`` without the marker is refused untouched.
    """
    root = Path(root)
    if (root / COMPLETE_MARKER).exists():
        return root
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists but holds no finished {what} export (no {COMPLETE_MARKER} file). "
            "It was not written by lit-models, or an export was interrupted: move it away or pick another "
            "folder; nothing in it was changed."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        summary = write(staging)
        (staging / COMPLETE_MARKER).write_text(summary.rstrip("\n") + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private; a shared cache must be readable by the group
        if root.exists():
            root.rmdir()  # empty, checked above
        os.replace(staging, root)
    except OSError:
        if (root / COMPLETE_MARKER).exists():  # another process finished the same export first
            return root
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
