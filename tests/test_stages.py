"""Staged training: a model initialised from an earlier stage's checkpoint through its declared parameter mapping
(lit_models.stages), FCN's 32s -> 16s -> 8s refinement, and chain recipes run by one command (lit_models.chains)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, run_cli, stand_ins

from lit_models import FCN
from lit_models.chains import chain_text, read_chain
from lit_models.cli import LitModelsCLI, build_recipe
from lit_models.errors import UsageError
from lit_models.stages import InitError, ParameterMapping, initialise, read_source
from lit_models.task import CHECKPOINT_KEY

CHAINS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if chain_text(p) is not None)
TINY = {"backbone": "resnet18", "width_mult": 0.125}


def save(module: FCN, path: Path) -> Path:
    """A checkpoint as fit writes it, for what initialise reads: the module's entry, hyperparameters and weights."""
    entry = {"model": type(module).__name__, "stage": {"chain": "c", "stage": "s", "init_from": None}}
    torch.save(
        {CHECKPOINT_KEY: entry, "hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path
    )
    return path


def trained(variant: str, path: Path, seed: int = 0) -> FCN:
    """A tiny FCN whose score layers are no longer zero, as after training, saved to ``path``."""
    torch.manual_seed(seed)
    module = FCN(num_classes=3, variant=variant, **TINY)
    for name, parameter in module.named_parameters():
        if name.startswith("net.score_"):  # the score layers, not the upsamplers ("upscore")
            torch.nn.init.normal_(parameter, std=0.5)
    save(module, path)
    return module.eval()


def test_a_mapping_renames_leaves_out_and_names_what_does_not_fit():
    mapping = ParameterMapping(sources={"a.": "b.", "a.head.": None}, new=("b.extra.",))
    source = {"a.w": torch.ones(2), "a.head.w": torch.ones(3)}
    target = {"b.w": torch.zeros(2), "b.extra.w": torch.zeros(1)}
    assert mapping.apply(source, target, "x.ckpt") == {"b.w": source["a.w"]}
    with pytest.raises(InitError, match=r"x.ckpt.*shapes that differ: a.w \(2,\) -> b.w \(3,\)"):
        mapping.apply(source, {"b.w": torch.zeros(3)}, "x.ckpt")
    with pytest.raises(InitError, match="not fill: b.other"):
        mapping.apply(source, {**target, "b.other": torch.zeros(1)}, "x.ckpt")
    with pytest.raises(InitError, match="no place in this model: c.w"):
        mapping.apply({**source, "c.w": torch.ones(1)}, target, "x.ckpt")


@pytest.mark.parametrize(("coarse", "fine"), [("32s", "16s"), ("16s", "8s")])
def test_a_finer_fcn_from_a_trained_coarser_one_computes_its_scores_until_the_first_step(coarse, fine, tmp_path):
    source = trained(coarse, tmp_path / f"{coarse}.ckpt")
    refined = FCN(num_classes=3, variant=fine, **TINY).eval()
    initialise(refined, tmp_path / f"{coarse}.ckpt")
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected, got = source(images), refined(images)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())
    assert refined.initialised_from["checkpoint"] == str(tmp_path / f"{coarse}.ckpt")
    added = refined.net.score_pool3 if fine == "8s" else refined.net.score_pool4
    assert not added.weight.any(), "the new skip score layer starts at zero"


def test_fcn_refuses_a_finer_variant_another_backbone_or_another_model(tmp_path):
    trained("8s", tmp_path / "8s.ckpt")
    with pytest.raises(InitError, match="FCN-16s .* initialises from FCN-16s or a coarser variant.*FCN-8s"):
        initialise(FCN(num_classes=3, variant="16s", **TINY), tmp_path / "8s.ckpt")
    with pytest.raises(InitError, match="same backbone"):
        initialise(FCN(num_classes=3, variant="8s", backbone="resnet34", width_mult=0.125), tmp_path / "8s.ckpt")
    checkpoint = torch.load(tmp_path / "8s.ckpt", weights_only=True)
    checkpoint[CHECKPOINT_KEY]["model"] = "YOLOv1"
    checkpoint["hyper_parameters"] = {}  # FCN's arguments are no YOLOv1's (checked: tests/test_checkpoint_safety.py)
    torch.save(checkpoint, tmp_path / "yolo.ckpt")
    with pytest.raises(InitError, match="a YOLOv1 checkpoint.*weights_backbone"):
        initialise(FCN(num_classes=3, variant="8s", **TINY), tmp_path / "yolo.ckpt")
    assert read_source(tmp_path / "8s.ckpt").stage == {"chain": "c", "stage": "s", "init_from": None}


def test_the_at_once_net_scales_its_pool_features_before_scoring_them():
    torch.manual_seed(0)
    plain = FCN(num_classes=3, variant="8s", **TINY).net.eval()
    scaled = FCN(num_classes=3, variant="8s", atonce_scaling=True, **TINY).net.eval()
    scaled.load_state_dict(plain.state_dict())
    for layer in (plain.score_pool4, plain.score_pool3, scaled.score_pool4, scaled.score_pool3):
        torch.nn.init.constant_(layer.weight, 1.0)
    seen, images = {}, torch.randn(1, 3, 64, 64)
    for name, net in (("plain", plain), ("scaled", scaled)):
        net.score_pool3.register_forward_pre_hook(lambda m, args, name=name: seen.update({name: args[0]}))
        net(images)
    assert torch.allclose(seen["scaled"], seen["plain"] * 1e-4)


class ParseOnly(LitModelsCLI):
    """The CLI's parsing and checks of a recipe without building it (tests/test_configs.py builds each recipe)."""

    def instantiate_classes(self) -> None:
        pass


@pytest.mark.parametrize("chain", CHAINS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_chain_recipe_reads_and_each_stage_parses(chain, tree, voc_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = chain.read_text()
    assert text.startswith("#"), "a chain's first comment line says what it is"
    stages = read_chain(chain).stages
    assert len(stages) >= 2
    for stage in stages:
        args = [f"--{key}={value if isinstance(value, str) else yaml.safe_dump(value).strip().removesuffix('...')}"
                for key, value in stage.args.items() if not str(value).startswith("stage:")]  # fmt: skip
        args += stand_ins(Path(stage.config).read_text(), tree, voc_tree)
        with monkeypatch.context() as patch:
            patch.setattr("sys.argv", ["lit-models"])
            cli = ParseOnly(args=["--config", stage.config, *args], run=False)
        assert cli.config["model.class_path"].startswith("lit_models.")


def test_a_malformed_chain_says_which_stage_and_what_to_fix(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("chain:\n  - {stage: a, config: segmentation/fcn32s_shapes}\n  - {stage: b, config: nowhere.yaml}\n")
    with pytest.raises(UsageError, match=r"stage 2: no recipe 'nowhere.yaml'"):
        read_chain(bad)
    bad.write_text("chain:\n  - {stage: a, config: segmentation/fcn32s_shapes, init_from: b}\n")
    with pytest.raises(UsageError, match=r"'b' is not an earlier stage"):
        read_chain(bad)
    # check, summary and lit_models.recipe build one recipe: a chain names its stages' instead
    with pytest.raises(UsageError, match="chain of recipes .*fcn16s: segmentation/fcn16s_shapes"):
        build_recipe("segmentation/fcn_staged_shapes")


def test_a_chain_runs_its_stages_records_them_resumes_and_evaluates_its_last_stage(shapes_tree, tmp_path, caplog):
    chain = tmp_path / "tiny_chain.yaml"
    chain.write_text(
        "# Two FCN stages on a tiny net.\nchain:\n"
        "  - {stage: coarse, config: segmentation/fcn32s_shapes}\n"
        "  - {stage: fine, config: segmentation/fcn16s_shapes, init_from: coarse}\n"
    )
    tiny = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
            "--data.init_args.root", str(shapes_tree), "--data.init_args.crop_size", "32",
            "--data.init_args.base_size", "32", "--data.init_args.batch_size", "2",
            "--model.init_args.width_mult", "0.0625", "--plots", "false"]  # fmt: skip
    run_cli("fit", "--config", str(chain), *tiny, cwd=tmp_path)
    run = tmp_path / "runs" / "tiny_chain" / "version_0"
    record = yaml.safe_load((run / "fine" / "stage.yaml").read_text())
    coarse_last = "runs/tiny_chain/version_0/coarse/checkpoints/last.ckpt"
    assert record["init_from"] == {"stage": "coarse", "checkpoint": coarse_last} and record["finished"]
    entry = torch.load(run / "fine" / "checkpoints" / "last.ckpt", weights_only=True)[CHECKPOINT_KEY]["stage"]
    assert (entry["chain"], entry["stage"], entry["init_from"]["checkpoint"]) == ("tiny_chain", "fine", coarse_last)
    assert entry["init_from"]["stage"]["stage"] == "coarse"  # the whole lineage

    (run / "fine" / "stage.yaml").unlink()  # as if stopped during the second stage: resume it, not the first
    first = (run / "coarse" / "checkpoints" / "last.ckpt").stat().st_mtime
    run_cli("fit", "--config", str(chain), "--ckpt_path", "last", *tiny[:1], "2", *tiny[2:], cwd=tmp_path)
    assert (run / "coarse" / "checkpoints" / "last.ckpt").stat().st_mtime == first
    assert caplog.text.count("Initialised FCN from") == 1, "a resumed stage takes its own last.ckpt, not init_from"
    assert torch.load(run / "fine" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert not (tmp_path / "runs" / "tiny_chain" / "version_1").exists()

    run_cli(
        "test",
        "--config",
        str(chain),
        "--ckpt_path",
        "last",
        "--trainer.limit_test_batches",
        "1",
        *tiny[6:],
        cwd=tmp_path,
    )
    assert (run / "fine" / "test" / "metrics.csv").is_file()
    with pytest.raises(AssertionError, match="--init_from is for fit"):
        run_cli("test", "--config", "segmentation/fcn32s_shapes", "--init_from", coarse_last, cwd=tmp_path)
