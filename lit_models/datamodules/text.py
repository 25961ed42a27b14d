"""Language modelling on any UTF-8 text, or the embedded pydoc topics: contiguous chunks for truncated BPTT.

Batches (train, val and test) come from an ``IterableDataset`` and are already whole batches (``batch_size=None``
in the DataLoader)::

    inputs   N x T int64 token ids (T = seq_len, shorter only in the last batch)
    lengths  N int64, all equal to T (every stream advances together)
    target   N x T int64, the next token of every input

Each split's token stream is cut into ``batch_size`` parallel streams per device (Zaremba et al. 2014); batch k
holds chunk k of every stream, so a model carries its hidden state from batch k to k + 1. Under DDP the split is
cut into ``batch_size`` x world size streams and each rank takes its own ``batch_size``: every rank yields the same
number of batches. The tokens after the last whole stream (fewer than the number of streams) are not used.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lit_models.datamodules.base import SplitDataModule, default_cache_dir
from lit_models.datamodules.files import DataError
from lit_models.datamodules.sources import pydoc_topics
from lit_models.datamodules.sources.export import COMPLETE_MARKER
from lit_models.datamodules.spec import DataSpec

log = logging.getLogger(__name__)

UNK, EOS = "<unk>", "<eos>"
Level = Literal["char", "word"]
SPLITS = ("train", "val", "test")


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 file, or every file under a folder (sorted, hidden ones skipped) joined with a newline."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = []
        for parent, dirs, names in os.walk(path, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            files.extend(Path(parent, name) for name in names if not name.startswith("."))
        if not files:
            raise DataError(f"text folder {path} holds no files; put UTF-8 text files in it (any depth).")
        text = "\n".join(read_file(file) for file in sorted(files))
    elif path.is_file():
        text = read_file(path)
    else:
        raise DataError(f"text path {path} does not exist; give a UTF-8 text file or a folder of them.")
    if not text.strip():
        raise DataError(
            f"text {'folder' if path.is_dir() else 'file'} {path} is empty ({len(text)} characters, no text); "
            "give it text to model."
        )
    return text


def read_file(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark is not text
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not UTF-8 text: byte {error.start} (0x{data[error.start]:02x}) cannot be decoded "
            f"({error.reason}). Convert it, e.g. `iconv -f latin1 -t utf-8`, or remove it from the folder."
        ) from error
    return text.replace("\r\n", "\n")


def tokenize(text: str, level: Level) -> list[str] | str:
    """Characters (the string itself), or whitespace-split words with "<eos>" at every line break."""
    if level == "char":
        return text
    tokens: list[str] = []
    for number, line in enumerate(text.split("\n")):
        if number:
            tokens.append(EOS)
        tokens.extend(line.split())
    return tokens


def split_bounds(count: int, splits: tuple[float, float]) -> dict[str, tuple[int, int]]:
    """Token positions of train (first), val (next) and test (the rest)."""
    train_end = int(count * splits[0])
    val_end = int(count * (splits[0] + splits[1]))
    return {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, count)}


class Vocabulary:
    """Tokens in id order: the specials ("<unk>", and "<eos>" for words), then the training tokens sorted."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.index = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(cls, train_tokens: list[str] | str, level: Level, min_count: int) -> Vocabulary:
        specials = [UNK] if level == "char" else [UNK, EOS]
        counts = Counter(train_tokens)
        kept = sorted(t for t, n in counts.items() if n >= min_count and t not in specials)
        return cls(specials + kept)

    def ids(self, tokens: list[str] | str) -> tuple[np.ndarray, Counter]:
        """Token ids (int64), unknown tokens mapped to "<unk>", and how often each unknown token occurred."""
        if isinstance(tokens, str):  # characters: vectorised over code points
            codes = np.frombuffer(tokens.encode("utf-32-le"), dtype=np.uint32)
            known_codes = np.array([ord(t) for t in self.tokens[1:]], dtype=np.uint32)  # sorted, as the tokens
            position = np.searchsorted(known_codes, codes).clip(max=max(len(known_codes) - 1, 0))
            known = known_codes[position] == codes if len(known_codes) else np.zeros(len(codes), bool)
            ids = np.where(known, position + 1, 0).astype(np.int64)
            unknown = Counter(tokens[i] for i in np.flatnonzero(~known))
            return ids, unknown
        ids = np.fromiter((self.index.get(t, 0) for t in tokens), dtype=np.int64, count=len(tokens))
        unknown = Counter(t for t in tokens if t not in self.index)
        return ids, unknown


class TokenStreams(IterableDataset):
    """Batch k = chunk k (``seq_len`` tokens, the next ones as targets) of each of this rank's ``batch_size`` streams.

    DataLoader workers take batches round-robin (worker w yields k = w, w + n, ...), which is the order a DataLoader
    collects them in, so the batches arrive in stream order with any ``num_workers``.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1) -> None:
        streams = batch_size * world_size
        self.stream_length = len(ids) // streams
        grid = ids[: streams * self.stream_length].view(streams, self.stream_length)
        self.streams = grid[rank * batch_size : (rank + 1) * batch_size]  # batch_size x L
        self.seq_len = seq_len
        self.num_batches = -(-(self.stream_length - 1) // seq_len)
        self.skip = 0  # batches the next pass leaves out: those a resumed run had trained on (resumable.py)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        worker = get_worker_info()
        first, step = (worker.id, worker.num_workers) if worker else (0, 1)
        skip, self.skip = self.skip, 0  # once: each persistent worker holds its own copy
        for k in range(skip + first, self.num_batches, step):
            start = k * self.seq_len
            stop = min(start + self.seq_len, self.stream_length - 1)
            inputs = self.streams[:, start:stop].clone()  # N x T; a copy, so workers send only the chunk
            yield {
                "inputs": inputs,
                "lengths": torch.full((len(inputs),), stop - start, dtype=torch.int64),
                "target": self.streams[:, start + 1 : stop + 1].clone(),  # N x T
            }


def replica() -> tuple[int, int]:
    """(rank, world size) of torch.distributed when initialised, else (0, 1). Read in the main process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class TextDataModule(SplitDataModule):
    """Character- or word-level language modelling on a UTF-8 file or folder, or the embedded pydoc topics.

    The text is split by position: the first ``splits[0]`` of its tokens train, the next ``splits[1]`` validate,
    the rest test. The vocabulary is the training split's tokens, sorted, after "<unk>" (and "<eos>", the line
    break, for words); validation and test tokens outside it become "<unk>" (counted and logged). It is known
    after ``__init__`` without I/O for the embedded text (computed from Python's in-memory copy, identical to
    the exported file) and read from the file at the first look at ``class_names`` / ``num_classes`` otherwise.
    ``class_names`` is the vocabulary (saved in checkpoints) and ``num_classes`` its size. The last batch of an
    epoch is shorter than ``seq_len`` when the streams do not divide evenly (``lengths`` says how long).

    ``predict`` serves each of ``prompts`` as a batch ``{"prompt": 1 x P int64, "text": str}``.
    """

    task = "language_model"
    input_size = None

    def __init__(
        self,
        path: str | None = None,
        level: Level = "char",
        seq_len: int = 64,
        batch_size: int = 32,
        splits: tuple[float, float] = (0.9, 0.05),
        min_count: int = 1,
        prompts: list[str] | None = None,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        """Configure the data.

        Args:
            path: A UTF-8 text file, or a folder whose files (any depth, sorted) are joined with a newline. None
                uses the pydoc help topics that ship with Python (exported once to ``cache_dir``/pydoc_topics).
            level: "char" (every character a token) or "word" (whitespace-split words, "<eos>" at line breaks).
            seq_len: Tokens per chunk: the truncated-BPTT length.
            batch_size: Parallel streams per device in training.
            splits: Shares of the text (by position) for training and validation; the rest is the test split.
            min_count: Training tokens seen fewer times become "<unk>" (e.g. 2+ for words).
            prompts: Texts to continue in ``predict`` (default ["The "]).
            eval_batch_size: Parallel streams per device for validation and test (default: batch_size).
            num_workers: DataLoader worker processes per device.
            cache_dir: Where the embedded text is exported (default $LIT_MODELS_CACHE or ~/.cache/lit_models).
        """
        super().__init__()
        self.save_hyperparameters()
        if level not in ("char", "word"):
            raise ValueError(f"level must be 'char' or 'word', got {level!r}")
        if seq_len < 1 or batch_size < 1 or min_count < 1:
            raise ValueError(
                f"seq_len, batch_size and min_count must be >= 1, got {seq_len}, {batch_size}, {min_count}"
            )
        if not (len(splits) == 2 and splits[0] > 0 and splits[1] > 0 and splits[0] + splits[1] < 1):
            raise ValueError(f"splits must be (train, val) shares > 0 that leave some text for test, got {splits}")
        self.embedded = path is None
        if self.embedded:
            self.root = pydoc_topics.export_folder(Path(cache_dir) if cache_dir else default_cache_dir())
            self.path = self.root / pydoc_topics.FILE_NAME
        else:
            self.path = Path(path).expanduser()
            if not self.path.exists():
                raise DataError(
                    f"text path {self.path} does not exist. Pass --data.path a UTF-8 text file or a folder of them, "
                    "or leave it out for the embedded pydoc topics."
                )
        self.prompts = list(prompts) if prompts is not None else ["The "]
        self.ids: dict[str, torch.Tensor] = {}
        self.unknown_counts: dict[str, int] = {}

    @classmethod
    def prediction_arguments(cls, inputs: Any) -> dict[str, Any]:
        """``inputs``: prompt strings, or text files whose non-empty lines are prompts (a string naming an existing
        file is read as one); no training text (which need not exist here)."""
        items = [] if inputs is None else [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        prompts = []
        for item in items:
            path = Path(str(item)).expanduser()
            prompts.extend([line for line in read_text(path).splitlines() if line] if path.is_file() else [str(item)])
        return {"path": None, "prompts": prompts}

    def use_class_names(self, class_names: list[str]) -> None:
        self.__dict__["vocabulary"] = Vocabulary(class_names)  # the trained one, not the embedded text's

    @property
    def spec(self) -> DataSpec:
        hp = self.hparams
        return DataSpec("language_model", "tokens", self.class_names, seq_len=hp.seq_len, level=hp.level)

    @cached_property
    def text(self) -> str:
        """The whole text: the file(s) once ``setup`` has read them, else (embedded) Python's in-memory copy."""
        return pydoc_topics.topics_text() if self.embedded else read_text(self.path)

    @cached_property
    def tokens(self) -> list[str] | str:
        return tokenize(self.text, self.hparams.level)

    @cached_property
    def vocabulary(self) -> Vocabulary:
        start, stop = split_bounds(len(self.tokens), self.hparams.splits)["train"]
        return Vocabulary.build(self.tokens[start:stop], self.hparams.level, self.hparams.min_count)

    @property
    def class_names(self) -> list[str]:
        return self.vocabulary.tokens

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary.tokens)

    def prepare_data(self) -> None:
        if self.embedded and not self.predict_only:
            pydoc_topics.export_topics(self.root)

    def setup(self, stage: str) -> None:
        if self.ids or stage == "predict":  # prompts need only the vocabulary
            return
        if self.embedded and not (self.root / COMPLETE_MARKER).exists():
            raise DataError(
                f"the pydoc topics are not exported to {self.root} yet: call prepare_data() before setup() "
                "(a Trainer does this itself)."
            )
        text = read_text(self.path)  # the embedded text too: the same on-disk path as a user's file
        if "text" in self.__dict__ and text != self.text:
            raise DataError(f"{self.path} changed since its vocabulary was read; restart with the file as it is now.")
        self.text = text
        for split, (start, stop) in split_bounds(len(self.tokens), self.hparams.splits).items():
            ids, unknown = self.vocabulary.ids(self.tokens[start:stop])
            self.ids[split] = torch.from_numpy(ids)
            self.unknown_counts[split] = sum(unknown.values())
            if unknown:
                common = ", ".join(f"{t!r} x{n}" for t, n in unknown.most_common(5))
                # A warning for val/test: their perplexity counts <unk> as one token. In train it is min_count at work.
                log.log(
                    logging.INFO if split == "train" else logging.WARNING,
                    "%s split of %s: %d of %d tokens are not in the training vocabulary and read as <unk> (%s)",
                    split,
                    self.path,
                    sum(unknown.values()),
                    len(ids),
                    common,
                )

    def streams(self, split: str, batch_size: int) -> TokenStreams:
        """This rank's streams of a split, refusing a split too short for one chunk of every stream."""
        rank, world_size = replica()
        ids = self.ids[split]
        needed = batch_size * world_size * (self.hparams.seq_len + 1)
        if len(ids) < needed:
            share = dict(zip(SPLITS, (*self.hparams.splits, 1 - sum(self.hparams.splits)), strict=True))[split]
            raise DataError(
                f"the {split} split of {self.path} has {len(ids)} {self.hparams.level} tokens ({share:.0%} of "
                f"{len(self.tokens)}), too few for one chunk of seq_len={self.hparams.seq_len} in each of "
                f"{batch_size * world_size} streams (batch size {batch_size} x {world_size} device(s)): it needs "
                f"{needed}. Use a longer text, a smaller batch_size/eval_batch_size or seq_len, or change splits."
            )
        return TokenStreams(ids, batch_size, self.hparams.seq_len, rank, world_size)

    def split_dataset(self, split: str, batch_size: int) -> TokenStreams:
        if not self.ids:
            raise DataError("call setup() before asking for a dataloader (a Trainer does this itself).")
        return self.streams(split, batch_size)

    def predict_dataloader(self) -> DataLoader:
        batches = [{"prompt": torch.tensor([self.encode(p)], dtype=torch.int64), "text": p} for p in self.prompts]
        return DataLoader(batches, batch_size=None)  # encoded here, so an unknown character fails here, not in a worker

    def encode(self, text: str) -> list[int]:
        """Token ids of a text; every token must be in the vocabulary (an error names the ones that are not)."""
        tokens = tokenize(text, self.hparams.level)
        if not tokens:
            raise DataError(f"cannot encode {text!r}: it holds no {self.hparams.level} tokens.")
        ids, unknown = self.vocabulary.ids(tokens)
        if unknown:
            what = "characters" if self.hparams.level == "char" else "words"
            rare = f" or seen fewer than min_count={self.hparams.min_count} times" if self.hparams.min_count > 1 else ""
            raise DataError(
                f"{text!r} holds {what} {sorted(unknown)} that are not in the vocabulary of {self.path}'s training "
                f"split (absent{rare}). Use only its {what}, or train on a text that has them."
            )
        return ids.tolist()

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """The text of token ids ("<eos>" becomes a line break at word level: ``DataSpec.decode``)."""
        ids = ids.flatten().tolist() if isinstance(ids, torch.Tensor) else list(ids)
        bad = [i for i in ids if not 0 <= i < self.num_classes]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary (0..{self.num_classes - 1}).")
        return self.spec.decode(ids)
