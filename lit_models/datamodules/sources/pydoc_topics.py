"""The pydoc help topics that ship with every Python (``pydoc_data.topics``), exported as one UTF-8 text file.

About 465,000 characters of English prose and Python grammar (Python 3.11: 79 topics, 103 distinct characters):
enough for a character-level language model to learn words and syntax on a CPU, and nothing to download. The
topics are joined in sorted key order with a newline. The text differs between Python releases, so the export
folder is named by a hash of the text: a cache shared by several Pythons keeps one file per text, and the
vocabulary computed from the in-memory text in ``__init__`` always matches the file read in ``setup``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lit_models.datamodules.sources.export import export_once

FILE_NAME = "topics.txt"


def topics_text() -> str:
    """The help topics, sorted by key, joined with a newline."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def export_folder(cache_dir: str | os.PathLike) -> Path:
    """Where this Python's topics are (or will be) exported under ``cache_dir``."""
    digest = hashlib.sha1(topics_text().encode("utf-8")).hexdigest()[:12]
    return Path(cache_dir) / "pydoc_topics" / digest


def export_topics(root: str | os.PathLike) -> Path:
    """Write ``root/topics.txt`` once (atomically); later calls return at once. Returns the file."""

    def write(staging: Path) -> str:
        text = topics_text()
        (staging / FILE_NAME).write_bytes(text.encode("utf-8"))  # bytes: no newline translation on any OS
        return f"{len(text)} characters"

    return export_once(root, "pydoc topics", write) / FILE_NAME
