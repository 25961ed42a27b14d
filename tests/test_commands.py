"""The command table: `lit-models --help` lists every command, each answers its own --help, a word that is no
command, a recipe that does not exist and an option that does not exist each end in one line naming the closest
valid one, and our own commands' failures end as `error: ...` too. All in-process: no subprocess import cost."""

import pytest

from lit_models import commands
from lit_models.commands import COMMANDS, lightning_predict_arguments
from lit_models.version import __version__


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``lit-models *argv`` in this process: (exit status, stdout, stderr)."""
    try:
        commands.main(argv)
        code = 0
    except SystemExit as stopped:
        code = stopped.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def last_line(text: str) -> str:
    return text.rstrip().splitlines()[-1]


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_help_lists_every_command_with_what_it_does(argv, capsys):
    code, out, _ = run(argv, capsys)
    assert code == 0
    for name in ("fit", "validate", "test", "predict", "export", "summary", "check", "recipes"):
        assert f"  {name} " in out and COMMANDS[name].about in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_answers_its_own_help(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run([name, "--help"], capsys)
    assert code == 0, err
    assert out.startswith("usage: lit-models") and f" {name}" in out.splitlines()[0]


def test_predict_help_describes_both_forms(capsys):
    code, out, _ = run(["predict", "--help"], capsys)
    assert code == 0
    assert "lit-models predict CHECKPOINT INPUT..." in out and "lit-models predict --config RECIPE" in out
    assert "--output" in out and "--generate_length" in out  # the checkpoint form's own arguments


def test_predict_is_one_command_with_two_forms(monkeypatch):
    called = {}
    monkeypatch.setattr("lit_models.inference.main", lambda argv: called.update(checkpoint=argv))
    monkeypatch.setattr("lit_models.cli.run", lambda argv: called.update(recipe=argv))
    commands.main(["predict", "run.ckpt", "photos/", "--output", "out", "--overwrite"])
    commands.main(["predict", "--config", "quickstart", "--ckpt_path", "best", "--output", "out", "--overwrite"])
    assert called["checkpoint"] == ["run.ckpt", "photos/", "--output", "out", "--overwrite"]
    # The checkpoint form's --output and --overwrite work with a recipe too.
    assert called["recipe"] == ["predict", "--config", "quickstart", "--ckpt_path", "best",
                                "--prediction_writer.output", "out", "--prediction_writer.overwrite=true"]  # fmt: skip
    assert lightning_predict_arguments(["predict", "--overwrite", "false", "--output=x"]) == [
        "predict", "--prediction_writer.overwrite", "false", "--prediction_writer.output=x"]  # fmt: skip
    # And LightningCLI's spelling works with a checkpoint alone.
    commands.main(["predict", "b.ckpt", "photos/", "--prediction_writer.output=out", "--prediction_writer.overwrite",
                   "true"])  # fmt: skip
    assert called["checkpoint"] == ["b.ckpt", "photos/", "--output=out", "--overwrite"]


def test_version_and_recipes(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith(f"lit-models {__version__} (torch ")
    code, out, _ = run(["recipes"], capsys)
    assert code == 0 and "quickstart" in out and "classification/resnet18_digits" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tset"], "error: 'tset' is not a command; did you mean 'test'? The command comes first"),
        (["--config", "quickstart", "fit"], "error: '--config' is not a command. The command comes first"),
        (["fit", "--config", "quikstart"], "error: no recipe 'quikstart'; did you mean 'quickstart'?"),
        (
            ["test", "--config", "resnet18_digts"],
            "error: no recipe 'resnet18_digts'; did you mean 'classification/resnet18_digits'?",
        ),
        (
            ["fit", "--config", "quickstart", "--trainer", "tensorbord"],
            "error: no trainer overlay 'tensorbord'; did you mean 'tensorboard'?",
        ),
        (
            ["fit", "--config", "quickstart", "--trainer.max_epochz", "3"],
            "error: unknown option --trainer.max_epochz; did you mean --trainer.max_epochs?",
        ),
        (
            ["fit", "--config", "quickstart", "--model.init_args.widht_mult", "2"],
            "error: ResNet takes no --model.widht_mult; did you mean --model.width_mult?",
        ),
        (["check", "quikstart"], "error: no recipe 'quikstart'; did you mean 'quickstart'?"),
        (
            ["recipes", "--all"],
            "error: unrecognized arguments: --all (`lit-models recipes --help` lists the arguments)",
        ),
        (
            ["fit"],
            "error: lit-models fit needs a model and its data: --config RECIPE (`lit-models recipes` lists them)",
        ),
        (["fit", "--config", "quickstart", "--model", "ResNe"], "error: no model 'ResNe'; did you mean 'ResNet'?"),
        (
            ["fit", "--config", "quickstart", "--data.init_args.batch_size", "abc"],
            "error: --data.batch_size abc: expected int",
        ),
        (
            ["fit", "--config", "quickstart", "--trainer.max_epochs", "abc"],
            "error: --trainer.max_epochs abc: expected int or null",
        ),
    ],
)
def test_a_mistyped_word_is_one_line_naming_the_closest(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(argv, capsys)
    assert code == 2
    assert last_line(err).startswith(message), err[-2000:]
    assert len(err.strip().splitlines()) <= 3, err  # no usage of 50 lines above it


def test_our_commands_failures_are_messages(monkeypatch, capsys):
    def fails(error: BaseException):
        def main(argv):
            raise error

        return main

    monkeypatch.setattr("lit_models.export.main", fails(RuntimeError("onnxruntime differs from PyTorch by 1e-2")))
    code, _, err = run(["export", "run.ckpt"], capsys)
    assert (code, last_line(err)) == (2, "error: onnxruntime differs from PyTorch by 1e-2")

    monkeypatch.setattr("lit_models.export.main", fails(ModuleNotFoundError("no onnxruntime", name="onnxruntime")))
    code, _, err = run(["export", "run.ckpt"], capsys)
    assert code == 2 and last_line(err).endswith("pip install 'lit-models[export]'")

    monkeypatch.setattr("lit_models.export.main", fails(FileNotFoundError("run.ckpt does not exist")))
    code, _, err = run(["export", "run.ckpt"], capsys)
    assert (code, last_line(err)) == (2, "error: run.ckpt does not exist")

    # A bug keeps its traceback.
    monkeypatch.setattr("lit_models.export.main", fails(ModuleNotFoundError("no foo", name="foo")))
    with pytest.raises(ModuleNotFoundError):
        commands.main(["export", "run.ckpt"])
