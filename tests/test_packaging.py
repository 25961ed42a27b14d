"""The wheel is a complete package: every recipe is inside it and resolves by name from an empty folder."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from lit_models import __version__
from lit_models.recipes import RECIPES, find_recipe, recipe_names, resolve_recipe_arguments


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (the build writes nothing into the checkout), unpacked as pip
    would install it."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "lit_models", source / "lit_models", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(root), "."],
        cwd=source, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = root.glob("lit_models-*.whl")
    assert wheel.name.startswith(f"lit_models-{__version__}-")
    site = root / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def packaged_python(site: Path, code: str, cwd: Path) -> str:
    """Run ``code`` with only the unpacked wheel on the path for lit_models (not this checkout)."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_wheel_holds_every_recipe_and_resolves_each_by_name(installed_wheel, tmp_path):
    def files(site: Path) -> list[str]:
        return sorted(str(p.relative_to(site)) for p in (site / "lit_models" / "configs").rglob("*") if p.is_file())

    expected, packaged = files(REPO), files(installed_wheel)
    assert [p for p in expected if p not in packaged] == []
    metadata = next(installed_wheel.glob("lit_models-*.dist-info"))
    assert (metadata / "licenses" / "LICENSE").read_text() == (REPO / "LICENSE").read_text()
    assert "License-Expression: Apache-2.0" in (metadata / "METADATA").read_text()

    empty = tmp_path / "empty"
    empty.mkdir()
    code = (
        "from lit_models.recipes import recipe_names, find_recipe, RECIPES; import lit_models; "
        "assert str(RECIPES).startswith(sys.path[0]), RECIPES; "
        "print('\\n'.join(f'{n}\\t{find_recipe(n)}' for n in recipe_names())); print(lit_models.__version__)"
    )
    *lines, version = packaged_python(installed_wheel, code, empty).splitlines()
    assert version == __version__
    resolved = dict(line.split("\t") for line in lines)
    assert sorted(resolved) == recipe_names() and "quickstart" in resolved
    for name, path in resolved.items():
        assert Path(path).is_file() and Path(path).is_relative_to(installed_wheel), (name, path)


def test_cli_of_the_wheel_runs_a_packaged_recipe_from_an_empty_folder(installed_wheel, tmp_path):
    code = "from lit_models.cli import main; sys.argv = ['lit-models', *sys.argv[1:]]; main()"
    printed = packaged_python(
        installed_wheel, f"sys.argv[1:] = ['fit', '--config', 'quickstart', '--print_config']; {code}", tmp_path
    )
    assert "class_path: lit_models.ResNet" in printed and "name: quickstart" in printed
    listing = packaged_python(installed_wheel, f"sys.argv[1:] = ['recipes']; {code}", tmp_path)
    assert "classification/resnet18_digits" in listing and "trainer/default" in listing
    assert list(tmp_path.iterdir()) == []  # nothing was written where the user stands


def test_a_local_file_wins_over_the_packaged_recipe_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_recipe("quickstart") == str(RECIPES / "quickstart.yaml")
    assert find_recipe("configs/detection/yolov1_shapes.yaml") == str(RECIPES / "detection" / "yolov1_shapes.yaml")
    assert find_recipe("default", folder="trainer") == str(RECIPES / "trainer" / "default.yaml")
    (tmp_path / "quickstart.yaml").write_text("seed_everything: 1\n")
    assert find_recipe("quickstart.yaml") == "quickstart.yaml"
    assert find_recipe("nothing/like/this") == "nothing/like/this"  # the parser then names the missing file
    args = ["fit", "--config", "classification/vgg11_digits", "--trainer=ddp_cpu", "--model.depth", "quickstart"]
    assert resolve_recipe_arguments(args) == [
        "fit", "--config", str(RECIPES / "classification" / "vgg11_digits.yaml"),
        f"--trainer={RECIPES / 'trainer' / 'ddp_cpu.yaml'}", "--model.depth", "quickstart",
    ]  # fmt: skip


def test_version_flag(tmp_path):
    from conftest import run_cli

    assert run_cli("--version", cwd=tmp_path).stdout.strip().startswith(f"lit-models {__version__} (torch ")
