"""lit-models check RECIPE: every file of a user's folder decoded before a run, every problem listed."""

from __future__ import annotations

import subprocess
import sys

from conftest import make_image_tree

from lit_models.datamodules.image_folder import ImageFolderDataModule


def test_check_lists_every_unreadable_image_and_the_command_fails(tmp_path):
    root = make_image_tree(tmp_path / "photos", {"train": 3, "test": 2})
    broken = [root / "train" / "circle" / "001.png", root / "test" / "square" / "000.png"]
    for path in broken:
        path.write_bytes(b"not an image")

    problems = ImageFolderDataModule(root=str(root), preset="small", image_size=32, num_workers=0).check()
    assert [problem.split(" ", 4)[:4] for problem in problems] == [
        ["train:", "cannot", "decode", "image"], ["test:", "cannot", "decode", "image"]
    ]  # fmt: skip
    assert all(str(path) in problem for path, problem in zip(broken, problems, strict=True))

    command = [sys.executable, "-m", "lit_models", "check", "classification/resnet18_digits"]
    options = ["--data.root", str(root), "--data.num_workers", "0"]
    result = subprocess.run([*command, *options], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "2 problem(s):" in result.stdout and str(broken[1]) in result.stdout

    for path in broken:
        path.unlink()
    result = subprocess.run([*command, *options], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "no problems found"
