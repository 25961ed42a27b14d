"""Sequence DataModules: text streams for truncated BPTT, labelled arrays, MNIST-1D and the adding problem."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_models.datamodules import text as text_module
from lit_models.datamodules.adding import AddingProblemDataModule
from lit_models.datamodules.array import ArrayDataModule
from lit_models.datamodules.files import DataError
from lit_models.datamodules.mnist1d import MNIST1DDataModule
from lit_models.datamodules.sources import mnist1d
from lit_models.datamodules.text import TextDataModule

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(60))  # 3,300 characters


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def ready(dm):
    dm.prepare_data()
    dm.setup("fit")
    return dm


def batches(loader) -> list[dict]:
    return list(loader)


# ---------------------------------------------------------------------------------------------------- text


def test_char_level_splits_by_position_and_builds_the_vocabulary_from_train(tmp_path):
    text = TEXT + "ZZZZ"  # only in the test split: not in the vocabulary
    dm = TextDataModule(str(write(tmp_path / "a.txt", text)), seq_len=8, batch_size=2)
    assert dm.task == "language_model" and dm.input_size is None
    train_end, val_end = int(len(text) * 0.9), int(len(text) * (0.9 + 0.05))
    assert dm.class_names == ["<unk>", *sorted(set(text[:train_end]))]
    assert dm.num_classes == len(dm.class_names) and "Z" not in dm.class_names
    ready(dm)
    assert dm.decode(dm.ids["train"]) == text[:train_end]
    assert dm.decode(dm.ids["val"]) == text[train_end:val_end]
    assert dm.decode(dm.ids["test"]) == text[val_end:-4] + "<unk>" * 4
    assert dm.unknown_counts == {"train": 0, "val": 0, "test": 4}


def test_folder_joins_sorted_files_with_a_newline_and_skips_hidden(tmp_path):
    write(tmp_path / "books" / "b.txt", "second")
    write(tmp_path / "books" / "a" / "z.txt", "first")
    write(tmp_path / "books" / ".hidden", "never")
    write(tmp_path / "books" / ".git" / "x.txt", "never")
    assert text_module.read_text(tmp_path / "books") == "first\nsecond"


def test_word_level_tokens_min_count_and_round_trip(tmp_path):
    dm = TextDataModule(str(write(tmp_path / "w.txt", TEXT)), level="word", min_count=2, seq_len=4, batch_size=2)
    assert dm.class_names[:2] == ["<unk>", "<eos>"]
    assert "fox" in dm.class_names and "0:" not in dm.class_names  # each "i:" occurs once: below min_count
    ready(dm)
    sentence = "the quick fox\nover the dog"
    ids = dm.encode(sentence)
    assert dm.class_names[ids[3]] == "<eos>" and dm.decode(ids) == sentence
    with pytest.raises(DataError, match=r"\['cat'\].*min_count=2.*train on a text that has them"):
        dm.encode("the cat")


def test_char_encode_decode_round_trip_and_unknown_prompt_characters(tmp_path):
    dm = ready(TextDataModule(str(write(tmp_path / "a.txt", TEXT)), seq_len=8, batch_size=2, prompts=["the ", "Zoë"]))
    assert dm.decode(dm.encode("the lazy dog")) == "the lazy dog"
    assert dm.decode(torch.tensor([dm.encode("fox")])) == "fox"
    with pytest.raises(DataError, match=r"\['Z', 'ë'\].*train on a text that has them"):
        dm.predict_dataloader()
    dm.prompts = ["the "]
    (batch,) = batches(dm.predict_dataloader())
    assert batch["text"] == "the " and batch["prompt"].shape == (1, 4) and batch["prompt"].dtype == torch.int64


def test_streams_are_contiguous_across_batches(tmp_path):
    dm = ready(TextDataModule(str(write(tmp_path / "a.txt", TEXT)), seq_len=16, batch_size=4))
    got = batches(dm.train_dataloader())
    ids = dm.ids["train"]
    stream_length = len(ids) // 4
    assert len(got) == len(dm.train_dataloader()) == -(-(stream_length - 1) // 16)
    for batch in got:
        assert batch["inputs"].dtype == batch["target"].dtype == torch.int64
        assert batch["inputs"].shape == batch["target"].shape
        assert (batch["lengths"] == batch["inputs"].shape[1]).all()
        assert torch.equal(batch["inputs"][:, 1:], batch["target"][:, :-1])
    for before, after in zip(got, got[1:], strict=False):
        assert torch.equal(after["inputs"][:, 0], before["target"][:, -1])  # stream continues where it stopped
    assert got[-1]["inputs"].shape[1] == ((stream_length - 1) % 16 or 16)  # the last chunk may be shorter
    streams = torch.cat([b["inputs"] for b in got], dim=1)  # 4 x (L - 1): each row a contiguous piece
    assert torch.equal(streams, ids[: 4 * stream_length].view(4, stream_length)[:, :-1])


def test_ddp_ranks_take_their_own_streams_and_yield_as_many_batches(tmp_path, monkeypatch):
    dm = ready(TextDataModule(str(write(tmp_path / "a.txt", TEXT)), seq_len=16, batch_size=2))
    per_rank = []
    for rank in range(2):
        monkeypatch.setattr(text_module, "replica", lambda rank=rank: (rank, 2))
        per_rank.append(batches(dm.val_dataloader()) + batches(dm.train_dataloader()))
    assert len(per_rank[0]) == len(per_rank[1])
    monkeypatch.setattr(text_module, "replica", lambda: (0, 1))
    dm.hparams.batch_size = 4  # one process with all four streams
    single = batches(dm.val_dataloader()) + batches(dm.train_dataloader())
    for both, one in zip(zip(*per_rank, strict=True), single, strict=True):
        assert torch.equal(torch.cat([both[0]["inputs"], both[1]["inputs"]]), one["inputs"])


def test_workers_keep_the_stream_order(tmp_path):
    path = str(write(tmp_path / "a.txt", TEXT))
    plain = batches(ready(TextDataModule(path, seq_len=16, batch_size=4)).train_dataloader())
    workers = batches(ready(TextDataModule(path, seq_len=16, batch_size=4, num_workers=2)).train_dataloader())
    assert len(plain) == len(workers)
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(plain, workers, strict=True))


def test_text_errors_name_the_file_and_what_to_do(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        TextDataModule(str(tmp_path / "missing.txt"))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("naïve café".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{re.escape(str(latin))} is not UTF-8 text: byte 2 \(0xef\).*iconv"):
        _ = TextDataModule(str(latin)).num_classes
    write(tmp_path / "corpus" / "a.txt", TEXT)
    latin.rename(tmp_path / "corpus" / "b.txt")
    with pytest.raises(DataError, match=r"corpus/b.txt is not UTF-8 text: byte 2"):
        ready(TextDataModule(str(tmp_path / "corpus")))
    with pytest.raises(DataError, match=r"empty\.txt is empty \(0 characters"):
        _ = TextDataModule(str(write(tmp_path / "empty.txt", ""))).class_names
    short = TextDataModule(str(write(tmp_path / "short.txt", TEXT[:400])), seq_len=32, batch_size=4)
    ready(short)
    with pytest.raises(DataError, match=r"val split of .*short\.txt has 20 char tokens \(5% of 400\).*needs 132"):
        short.val_dataloader()


def test_embedded_pydoc_text_vocabulary_before_export_matches_the_file(isolated_cache):
    dm = TextDataModule(seq_len=32, batch_size=8)
    names = dm.class_names  # from Python's in-memory copy: no file yet needed
    assert names[0] == "<unk>" and "T" in names and len(names) > 80
    dm = TextDataModule(seq_len=32, batch_size=8)
    ready(dm)
    assert dm.path.is_file() and str(dm.path).startswith(str(isolated_cache))
    assert dm.class_names == names and dm.text == dm.path.read_text(encoding="utf-8")
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"].shape == (8, 32)


# ---------------------------------------------------------------------------------------------------- MNIST-1D


def test_mnist1d_generated_once_into_the_cache_and_global_rng_untouched(isolated_cache, monkeypatch):
    np.random.seed(123)
    random.seed(123)
    numpy_before, python_before = np.random.get_state(), random.getstate()
    dm = MNIST1DDataModule(batch_size=50)
    assert (dm.task, dm.num_classes, dm.input_size) == ("classification", 10, 1)
    assert dm.class_names == [str(d) for d in range(10)]
    ready(dm)
    assert np.array_equal(np.random.get_state()[1], numpy_before[1]) and random.getstate() == python_before
    assert dm.file.is_relative_to(isolated_cache)
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 3600, "val": 400, "test": 1000}
    with np.load(dm.file) as data:
        assert data["x"].shape == (4000, 40) and data["x_test"].shape == (1000, 40)
        assert torch.equal(dm.datasets["val"][0][0][:, 0], torch.from_numpy(data["x"][3600]))  # val: the last 10 %
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"].shape == (50, 40, 1) and batch["inputs"].dtype == torch.float32
    assert batch["target"].dtype == torch.int64 and (batch["lengths"] == 40).all()

    def fail(*args):
        raise AssertionError("regenerated")

    small = mnist1d.generate(num_samples=100)  # the generator itself, whether or not the cache was filled above
    assert small["x"].shape == (80, 40) and small["y_test"].shape == (20,)
    assert np.array_equal(np.random.get_state()[1], numpy_before[1]) and random.getstate() == python_before
    monkeypatch.setattr(mnist1d, "generate", fail)
    again = ready(MNIST1DDataModule(val_fraction=0.25))
    assert len(again.datasets["val"]) == 1000 and len(again.datasets["test"]) == 1000


# ---------------------------------------------------------------------------------------------------- arrays


def test_npz_variable_lengths_padded_with_lengths_and_in_file_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 7, 3)).astype(np.float32)
    lengths = rng.integers(1, 8, 20)
    x[0, lengths[0] :] = np.nan  # padding is ignored, whatever it holds
    path = tmp_path / "d.npz"
    test = {"x_test": x[:5], "y_test": np.arange(5) % 4, "lengths_test": lengths[:5]}
    np.savez(path, x=x, y=np.arange(20) % 4, lengths=lengths, **test)
    dm = ArrayDataModule(str(path), val_fraction=0.2, batch_size=20, split_seed=None)
    assert (dm.num_classes, dm.input_size, dm.class_names) == (4, 3, ["0", "1", "2", "3"])
    ready(dm)
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [16, 4, 5]
    batch = next(iter(dm.val_dataloader()))
    assert torch.equal(batch["lengths"], torch.from_numpy(lengths[16:]))
    assert batch["inputs"].shape == (4, lengths[16:].max(), 3)
    for i, n in enumerate(lengths[16:]):
        assert torch.equal(batch["inputs"][i, :n], torch.from_numpy(x[16 + i, :n]))
        assert (batch["inputs"][i, n:] == 0).all()
    assert batch["target"].tolist() == [0, 1, 2, 3]


def test_npz_list_of_sequences_regression(tmp_path):
    sequences = np.empty(6, dtype=object)
    sequences[:] = [np.arange(n, dtype=np.float64) for n in range(1, 7)]
    path = tmp_path / "r.npz"
    np.savez(path, x=sequences, y=np.stack([np.arange(6), -np.arange(6)], 1).astype(np.float64))
    dm = ready(ArrayDataModule(str(path), task="regression", val_fraction=0.3, batch_size=8))
    assert (dm.task, dm.num_classes, dm.class_names, dm.input_size) == ("regression", 2, ["y0", "y1"], 1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["target"].dtype == torch.float32 and batch["target"].shape == (4, 2)
    assert torch.equal(batch["lengths"], batch["target"][:, 0].long() + 1)
    with pytest.raises(DataError, match="has no test split: give test_path"):
        dm.test_dataloader()


def test_csv_rows_of_different_lengths_and_a_test_file(tmp_path):
    train = write(tmp_path / "train.csv", "# label, values\n0,1,2,3\n1,4,5,,,\n\n2,6\t\n0,1,1,1,1,1\n1,2,2\n")
    test = write(tmp_path / "test.tsv", "1 0.5 0.25\n2 1e-3\n")
    dm = ArrayDataModule(str(train), test_path=str(test), class_names=["a", "b", "c"], val_fraction=0.2)
    assert dm.num_classes == 3 and dm.input_size == 1
    ready(dm)
    rows = sorted((s.flatten().tolist(), int(t)) for s, t, _ in (*dm.datasets["train"], *dm.datasets["val"]))
    assert rows == [([1, 1, 1, 1, 1], 0), ([1, 2, 3], 0), ([2, 2], 1), ([4, 5], 1), ([6], 2)]
    batch = next(iter(dm.test_dataloader()))
    assert batch["lengths"].tolist() == [2, 1] and batch["target"].tolist() == [1, 2]
    assert batch["inputs"].shape == (2, 2, 1) and batch["inputs"][1, 1, 0] == 0


def test_csv_several_features_per_step(tmp_path):
    path = write(tmp_path / "f.csv", "0.5,1,2,3,4\n1.5,5,6\n2.5,7,8\n")
    dm = ready(ArrayDataModule(str(path), task="regression", features=2, val_fraction=0.3, split_seed=None))
    assert dm.input_size == 2 and dm.class_names == ["y"]
    assert dm.datasets["train"][0][0].tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("0,1,2\n1,3,nan\n", {}, r"bad\.csv line 2 holds nan at step 1; NaN and inf"),
        ("0,1,2\n1,inf\n", {}, r"bad\.csv line 2 holds inf at step 0"),
        ("0,1,2\n1\n", {}, r"bad\.csv line 2 is an empty \(zero-length\) sequence"),
        ("0,1,2\n1.5,3\n", {}, r"bad\.csv line 2: label 1\.5 is not a class index"),
        ("0,1,2\n-1,3\n", {}, r"bad\.csv line 2: label -1\.0 is not a class index"),
        ("label,a,b\n0,1,2\n", {}, r"bad\.csv line 1, field 1: 'label' is not a number.*no header"),
        ("0,1,2\n3,4\n", {"class_names": ["a", "b"]}, r"bad\.csv: sequence 1 has label 3, but there are 2 classes"),
        ("0,1,2,3\n", {"features": 2}, r"bad\.csv line 1 has 3 values .* not a multiple of features=2"),
    ],
)
def test_csv_errors_name_the_file_and_line(tmp_path, content, kwargs, message):
    path = write(tmp_path / "bad.csv", content)
    with pytest.raises(DataError, match=message):
        ready(ArrayDataModule(str(path), **kwargs))


def test_npz_errors_name_the_file_and_index(tmp_path):
    x = np.ones((5, 4), dtype=np.float32)
    x[3, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.zeros(5))
    with pytest.raises(DataError, match=r"nan\.npz \[x\] index 3 holds nan at step 2"):
        _ = ArrayDataModule(str(tmp_path / "nan.npz")).num_classes
    np.savez(tmp_path / "zero.npz", x=np.ones((3, 4)), y=np.zeros(3), lengths=np.array([4, 0, 2]))
    with pytest.raises(DataError, match=r"zero\.npz: lengths\[1\] = 0 is outside 1\.\.4.*Remove empty sequences"):
        _ = ArrayDataModule(str(tmp_path / "zero.npz")).input_size
    ragged = np.empty(2, dtype=object)
    ragged[:] = [np.ones(3), np.ones(0)]
    np.savez(tmp_path / "ragged.npz", x=ragged, y=np.zeros(2))
    with pytest.raises(DataError, match=r"ragged\.npz \[x\] index 1 is an empty \(zero-length\) sequence"):
        ready(ArrayDataModule(str(tmp_path / "ragged.npz")))
    np.savez(tmp_path / "keys.npz", inputs=x)
    with pytest.raises(DataError, match=r"keys\.npz has no x or y array \(it holds \['inputs'\]\)"):
        ready(ArrayDataModule(str(tmp_path / "keys.npz")))
    np.savez(tmp_path / "count.npz", x=np.ones((5, 4)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"count\.npz: x holds 5 sequences but y 4"):
        ready(ArrayDataModule(str(tmp_path / "count.npz")))
    np.savez(tmp_path / "target.npz", x=np.ones((2, 4)), y=np.array([1.0, np.inf]))
    with pytest.raises(DataError, match=r"target\.npz \[x\] index 1: regression target \[inf\] is not finite"):
        ready(ArrayDataModule(str(tmp_path / "target.npz"), task="regression"))
    with pytest.raises(DataError, match="missing.npz does not exist"):
        ArrayDataModule(str(tmp_path / "missing.npz"))


# ---------------------------------------------------------------------------------------------------- adding problem


def test_adding_problem_markers_targets_reproducibility_and_baseline():
    dm = AddingProblemDataModule(length=50, train_size=2000, val_size=100, test_size=100, batch_size=500, seed=3)
    assert (dm.task, dm.num_classes, dm.class_names, dm.input_size) == ("regression", 1, ["sum"], 2)
    ready(dm)
    train = batches(dm.train_dataloader())
    x = torch.cat([b["inputs"] for b in train])  # 2000 x 50 x 2
    y = torch.cat([b["target"] for b in train])  # 2000 x 1
    assert x.shape == (2000, 50, 2) and y.shape == (2000, 1) and y.dtype == torch.float32
    assert ((x[..., 0] >= 0) & (x[..., 0] < 1)).all()
    markers = x[..., 1]
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    assert (markers[:, :25].sum(1) == 1).all() and (markers[:, 25:].sum(1) == 1).all()
    assert torch.allclose((x[..., 0] * markers).sum(1, keepdim=True), y)
    assert abs(((y - 1) ** 2).mean().item() - 1 / 6) < 0.015  # always answering 1: MSE 1/6

    same = AddingProblemDataModule(length=50, train_size=2000, seed=3)
    same.setup("fit")
    assert torch.equal(same.datasets["train"][7][0], dm.datasets["train"][7][0])
    assert not torch.equal(dm.datasets["val"][7][0], dm.datasets["train"][7][0])  # splits differ
    other = AddingProblemDataModule(length=50, train_size=2000, seed=4)
    other.setup("fit")
    assert not torch.equal(other.datasets["train"][7][0], dm.datasets["train"][7][0])
