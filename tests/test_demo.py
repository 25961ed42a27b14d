"""The summary that ends `make demo`: the newest test's numbers, the fit it tested, its best checkpoint, what next."""

import re
import subprocess
import sys
from pathlib import Path

import torch

from lit_models.demo import NEXT_STEPS, summary
from lit_models.recipes import find_recipe


def fake_run(folder, version, metrics=None, best=None):
    run = folder / f"version_{version}"
    (run / "checkpoints").mkdir(parents=True)
    if metrics:  # what `test --ckpt_path best` logs into the run it tests
        (run / "test").mkdir()
        header, row = ",".join(metrics), ",".join(metrics.values())
        (run / "test" / "metrics.csv").write_text(f"epoch,step,{header}\n0,10,{row}")
    if best:
        (run / "checkpoints" / best).write_bytes(b"")
        state = {"ModelCheckpoint{'monitor': 'val/acc_top1'}": {"monitor": "val/acc_top1", "best_model_path": best}}
        torch.save({"callbacks": state}, run / "checkpoints" / "last.ckpt")
    return run


def test_summary_names_the_tested_fit_and_its_best_checkpoint(tmp_path):
    runs = tmp_path / "runs" / "quickstart"
    fake_run(runs, 0, best="best-epoch=1-step=2.ckpt")  # an older fit
    metrics = {"test/acc_top1": "0.987", "test/acc_top5": "1.0", "test/loss": "0.0412"}
    fake_run(runs, 1, metrics=metrics, best="best-epoch=13-step=728.ckpt")  # the fit the test took its best from
    fake_run(runs, 2, best="best-epoch=0-step=56.ckpt")  # a fit not tested yet, not what was measured
    text = summary(runs)
    assert "98.7% top-1, 100.0% top-5 (loss 0.041)" in text
    assert f"checkpoint     {runs / 'version_1' / 'checkpoints' / 'best-epoch=13-step=728.ckpt'}" in text
    assert f"test results   {runs / 'version_1' / 'test'}/" in text
    assert "lit-models predict --config quickstart --ckpt_path best --data.predict_dir" in text


def test_without_a_tested_run_it_says_what_to_do(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lit_models.demo"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "run `make demo`" in result.stderr


def test_the_next_steps_for_an_own_folder_are_fine_tuning_then_the_small_folder_recipe():
    named = re.findall(r"--config (\S+)", NEXT_STEPS)
    assert named == ["quickstart", "classification/resnet18_imagenet", "classification/small_folder"]
    assert all(Path(find_recipe(name)).is_file() for name in named)  # every suggestion is a packaged recipe
    assert "--model.init_args.weights IMAGENET1K_V1" in NEXT_STEPS  # pretrained weights first, where fetchable
