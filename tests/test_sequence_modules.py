"""The sequence LightningModules (Markov, RNN, LSTM, GRU) on the three tasks: training steps, truncated BPTT,
gradient clipping, generation, checks against the data, and the CLI on embedded and user data."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import REPO, run_cli

from lit_models import GRU, LSTM, RNN, AddingProblemDataModule, ArrayDataModule, Markov, TextDataModule
from lit_models.class_names import ClassNamesMismatchError
from lit_models.nets.sequence import SequenceNet

MODELS = {"markov": Markov, "rnn": RNN, "lstm": LSTM, "gru": GRU}
TINY = {"hidden_size": 8, "embedding_dim": 4}
CONFIGS = REPO / "configs" / "sequence"
TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want " * 8


pytestmark = pytest.mark.usefixtures("one_thread")


def trainer(**kwargs) -> pl.Trainer:
    options = dict(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False)  # fmt: skip
    return pl.Trainer(**{**options, **kwargs})


def text_file(tmp_path: Path, text: str = TEXT, name: str = "book.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def arrays_file(tmp_path: Path) -> Path:
    """Two classes of 40 sequences of 6-11 steps: the class is the sign of the mean."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(6, 12, 60)
    labels = np.arange(60) % 2
    x = np.zeros((60, 11, 1), dtype=np.float32)
    for n, (length, label) in enumerate(zip(lengths, labels, strict=True)):
        x[n, :length, 0] = rng.normal(1.0 if label else -1.0, 0.5, length)
    path = tmp_path / "signs.npz"
    np.savez(path, x=x[:40], y=labels[:40], lengths=lengths[:40], x_test=x[40:], y_test=labels[40:],
             lengths_test=lengths[40:])  # fmt: skip
    return path


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_learns_each_task_from_the_data(name, tmp_path):
    datas = {
        "classification": ArrayDataModule(str(arrays_file(tmp_path)), batch_size=8),
        "regression": AddingProblemDataModule(length=12, train_size=64, val_size=16, test_size=16, batch_size=16),
        "language_model": TextDataModule(str(text_file(tmp_path)), seq_len=16, batch_size=2, splits=(0.8, 0.1)),
    }
    for task, data in datas.items():
        model = MODELS[name](num_classes=data.num_classes, **TINY)  # task and input from the data
        assert model.net is None
        run = trainer(max_epochs=2)
        run.fit(model, data)
        assert model.task == task and model.hparams.task == task and model.hparams.input_size == data.input_size
        before = {k: v for k, v in run.callback_metrics.items() if k.startswith("val/")}
        metric = {"classification": "val/acc_top1", "regression": "val/mse", "language_model": "val/bits_per_token"}
        assert math.isfinite(float(before[metric[task]])) and model.monitor == metric[task]
        tested = run.test(model, data, verbose=False)[0]
        assert math.isfinite(tested["test/loss"])


def test_classification_reaches_high_accuracy_and_checkpoints_rebuild_the_net(tmp_path):
    data = ArrayDataModule(str(arrays_file(tmp_path)), batch_size=8)
    model = GRU(num_classes=2, hidden_size=16, optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    run = trainer(max_epochs=15, enable_checkpointing=True, default_root_dir=tmp_path)
    run.fit(model, data)
    assert run.test(model, data, verbose=False)[0]["test/acc_top1"] >= 0.95  # the sign of a noisy mean
    path = tmp_path / "gru.ckpt"
    run.save_checkpoint(path)
    loaded = GRU.load_from_checkpoint(path)  # hparams hold the resolved task and input: the net is rebuilt
    assert loaded.task == "classification" and loaded.input_size == 1 and loaded.class_names == ["0", "1"]
    batch = next(iter(data.test_dataloader()))
    torch.testing.assert_close(loaded.eval()(batch["inputs"], batch["lengths"]).outputs,
                               model.eval()(batch["inputs"], batch["lengths"]).outputs)  # fmt: skip


def test_truncated_bptt_carries_the_state_from_chunk_to_chunk(tmp_path):
    model = LSTM(num_classes=5, task="language_model", **TINY)
    tokens = torch.randint(0, 5, (2, 33))
    first = {"inputs": tokens[:, :16], "target": tokens[:, 1:17], "lengths": torch.tensor([16, 16])}
    second = {"inputs": tokens[:, 16:32], "target": tokens[:, 17:33], "lengths": torch.tensor([16, 16])}
    model.step(first, "val")
    carried = model.carried["val"]
    assert not carried[0].requires_grad  # detached: gradients stop at the chunk boundary
    logits = model.net(second["inputs"], None, carried).outputs
    loss = model.step(second, "val")
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), second["target"].flatten())
    torch.testing.assert_close(loss, expected)
    whole = model.net(tokens[:, :32]).outputs[:, 16:]  # one pass over both chunks gives the same logits
    torch.testing.assert_close(logits, whole)
    model.on_validation_epoch_start()
    assert "val" not in model.carried  # each epoch starts the streams afresh


def test_padded_steps_do_not_count_in_the_language_model_loss():
    model = GRU(num_classes=5, task="language_model", **TINY)
    tokens = torch.randint(0, 5, (2, 9))
    short = {"inputs": tokens[:, :8], "target": tokens[:, 1:], "lengths": torch.tensor([8, 5])}
    loss = model.step(short, "test")
    logits = model.net(tokens[:, :8], torch.tensor([8, 5])).outputs
    valid = torch.cat([logits[0], logits[1, :5]]), torch.cat([tokens[0, 1:], tokens[1, 1:6]])
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(*valid))


def test_recurrent_models_clip_the_gradient_norm_by_default(monkeypatch):
    calls = []
    monkeypatch.setattr(pl.LightningModule, "clip_gradients", lambda self, opt, val, algo: calls.append((val, algo)))
    data = AddingProblemDataModule(length=8, train_size=8, val_size=8, test_size=8, batch_size=8)
    trainer(max_steps=1, limit_val_batches=0).fit(RNN(num_classes=1, **TINY), data)
    trainer(max_steps=1, limit_val_batches=0, gradient_clip_val=0.5).fit(GRU(num_classes=1, **TINY), data)
    trainer(max_steps=1, limit_val_batches=0).fit(Markov(num_classes=1, **TINY), data)
    # The Trainer's own setting wins (its algorithm None is Lightning's default, "norm"); the MLP clips nothing.
    assert calls == [(1.0, "norm"), (0.5, None), (None, None)]


def test_generation_continues_the_prompt_with_temperature():
    model = GRU(num_classes=6, task="language_model", **TINY).eval()
    prompt = torch.tensor([[1, 2, 3]])
    greedy = model.generate(prompt, 12, temperature=0)
    assert greedy.shape == (12,) and torch.equal(greedy, model.generate(prompt, 12, temperature=0))
    output = model.net(prompt)
    assert int(greedy[0]) == int(output.outputs[0, -1].argmax())  # the likeliest next token
    following = model.net(greedy[:1].view(1, 1), None, output.state).outputs[0, -1].argmax()
    assert int(greedy[1]) == int(following)  # the state carried token to token
    torch.manual_seed(0)
    sampled = model.generate(prompt, 200, temperature=5.0)
    assert len(set(sampled.tolist())) == 6  # a high temperature reaches every token


def test_model_and_data_that_disagree_get_a_clear_error(tmp_path):
    data = AddingProblemDataModule(length=8, train_size=8, val_size=8, test_size=8, batch_size=8)
    model = GRU(num_classes=2, task="classification", input_size=1, **TINY)
    with pytest.raises(ValueError, match="built for task 'classification' with input_size 1.*serves task 'regression'"):
        trainer().fit(model, data)
    with pytest.raises(ValueError, match="needs input_size"):
        GRU(num_classes=3, task="classification")
    with pytest.raises(ValueError, match="per_step"):
        GRU(num_classes=3, task="language_model", bidirectional=True)


def test_a_checkpoint_meets_a_text_with_another_vocabulary(tmp_path):
    data = TextDataModule(str(text_file(tmp_path)), seq_len=16, batch_size=2, splits=(0.8, 0.1))
    model = GRU(num_classes=data.num_classes, **TINY)
    run = trainer(enable_checkpointing=True, default_root_dir=tmp_path)
    run.fit(model, data)
    path = tmp_path / "lm.ckpt"
    run.save_checkpoint(path)
    other = TextDataModule(str(text_file(tmp_path, TEXT.upper(), "loud.txt")), seq_len=16, batch_size=2)
    fresh = GRU(num_classes=other.num_classes, **TINY)
    with pytest.raises(ClassNamesMismatchError):
        trainer().test(fresh, other, ckpt_path=str(path), verbose=False)


def test_fused_and_manual_cells_load_each_others_weights():
    fused = LSTM(num_classes=3, task="classification", input_size=2, num_layers=2, **TINY)
    manual = LSTM(num_classes=3, task="classification", input_size=2, num_layers=2, cell="manual", **TINY)
    manual.load_state_dict(fused.state_dict())
    inputs, lengths = torch.randn(3, 7, 2), torch.tensor([7, 4, 2])
    torch.testing.assert_close(manual(inputs, lengths).outputs, fused(inputs, lengths).outputs)
    assert isinstance(manual.net, SequenceNet)


def tiny_cli(config: str, *extra: str) -> list[str]:
    sizes = ["--model.init_args.hidden_size", "8"]
    if "markov" not in config:
        sizes += ["--model.init_args.num_layers", "1"]
    return ["--config", str(CONFIGS / f"{config}.yaml"), "--trainer.max_epochs", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2", *sizes, *extra]  # fmt: skip


@pytest.mark.parametrize("name", list(MODELS))
def test_cli_on_a_user_text_generates_from_the_prompt(name, tmp_path):
    args = tiny_cli(f"{name}_text", "--data.init_args.path", str(text_file(tmp_path)),
                    "--data.init_args.seq_len", "16", "--data.init_args.batch_size", "2",
                    "--data.init_args.prompts", '["It is ", "a "]',
                    "--model.init_args.generate_length", "30")  # fmt: skip
    run_cli("fit", *args, cwd=tmp_path)
    runs = tmp_path / "runs" / f"{name}_text"
    checkpoint = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["class_names"][0] == "<unk>" and "I" in checkpoint["class_names"]  # the vocabulary
    run_cli("test", *args, "--ckpt_path", "best", cwd=tmp_path)
    assert "test/bits_per_token" in (runs / "version_0" / "test" / "metrics.csv").read_text()
    run_cli("predict", *args, "--ckpt_path", "best", cwd=tmp_path)
    generated = (runs / "version_0" / "predict" / "predictions" / "generated.txt").read_text()
    assert "\nIt is " in generated and "\na " in generated
    continuation = generated.split("\nIt is ", 1)[1].split("\n\n")[0]
    assert len(continuation) >= 30 and set(continuation) <= set(TEXT) | {"<", ">", "u", "n", "k"}


@pytest.mark.parametrize(("config", "metric"),
                         [("gru_mnist1d", "test/acc_top1"), ("lstm_adding", "test/mse"),
                          ("markov_text", "test/bits_per_token")])  # fmt: skip
def test_cli_on_the_embedded_sources(config, metric, tmp_path):
    extra = ["--data.init_args.train_size", "128"] if "adding" in config else []
    args = tiny_cli(config, *extra)
    run_cli("fit", *args, cwd=tmp_path)
    run_cli("test", *args, "--ckpt_path", "best", cwd=tmp_path)
    runs = tmp_path / "runs" / config
    assert metric in (runs / "version_0" / "test" / "metrics.csv").read_text()
    run_cli("predict", *args, "--ckpt_path", "best", cwd=tmp_path)
    if "text" in config:  # the pydoc text: the default prompt continued by 200 characters
        generated = (runs / "version_0" / "predict" / "predictions" / "generated.txt").read_text()
        assert generated.startswith("=== prompt: 'The '\nThe ")
        assert len(generated.split("\nThe ", 1)[1].rstrip("\n")) >= 200
        return
    with open(runs / "version_0" / "predict" / "predictions" / "predictions.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:2] == (["index", "class_1"] if "mnist1d" in config else ["index", "sum"])
    assert len(rows) == 1 + 1000  # the test split, every sequence once


def test_cli_on_a_user_array_file(tmp_path):
    args = tiny_cli("gru_mnist1d", "--data", "lit_models.ArrayDataModule", "--data.path", str(arrays_file(tmp_path)),
                    "--data.batch_size", "8")  # fmt: skip
    run_cli("fit", *args, cwd=tmp_path)
    run_cli("predict", *args, "--ckpt_path", "last", cwd=tmp_path)
    run = tmp_path / "runs" / "gru_mnist1d" / "version_0"
    with open(run / "predict" / "predictions" / "predictions.csv") as handle:
        rows = list(csv.reader(handle))
    assert [int(row[0]) for row in rows[1:]] == list(range(20))  # every test sequence, in order
