"""Faster R-CNN's 4-step alternating training: what each step trains, the fixed proposal network of step 2, the
parameter mapping between steps, and the chain recipe run end to end on tiny scenes."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO, run_cli

import lit_models
from lit_models.datamodules.files import DataError
from lit_models.detection import FasterRCNN
from lit_models.nets.faster_rcnn import FasterRCNNNet, rpn_proposals
from lit_models.stages import InitError, SourceModel

TINY = {"backbone": "resnet18", "width_mult": 0.0625, "min_size": 64, "max_size": 64, "anchor_sizes": (16, 32),
        "representation_size": 16, "rpn_post_nms_top_n_test": 20}  # fmt: skip
STEPS = ("rpn1", "detector2", "rpn3", "detector4")


def images_and_targets() -> tuple[torch.Tensor, list[dict]]:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = [{"boxes": torch.tensor([[4.0, 4, 30, 30]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 20, 50, 40]]), "labels": torch.tensor([2])}]  # fmt: skip
    return images, targets


def trained_parts(net: FasterRCNNNet) -> set[str]:
    """The top-level parts of the net (backbone, rpn, roi_heads, proposer) that one training loss reaches."""
    net.train()
    images, targets = images_and_targets()
    torch.stack(list(net.loss(images, targets).values())).sum().backward()
    return {name.split(".")[0] for name, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize(
    ("train_parts", "freeze_trunk", "losses", "parts"),
    [
        ("all", False, {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"},
         {"backbone", "rpn", "roi_heads"}),
        ("rpn", False, {"loss_objectness", "loss_rpn_box_reg"}, {"backbone", "rpn"}),
        ("rpn", True, {"loss_objectness", "loss_rpn_box_reg"}, {"rpn"}),
        ("detector", True, {"loss_classifier", "loss_box_reg"}, {"roi_heads"}),
    ],
)  # fmt: skip
def test_each_step_trains_only_its_own_parts(train_parts, freeze_trunk, losses, parts, one_thread):
    torch.manual_seed(0)
    net = FasterRCNNNet(4, train_parts=train_parts, freeze_trunk=freeze_trunk, **TINY)
    statistics = {key: value.clone() for key, value in net.backbone.state_dict().items()}
    images, targets = images_and_targets()
    net.train()
    assert set(net.loss(images, targets)) == losses
    assert trained_parts(net) == parts
    fixed = {name.split(".")[0] for name, p in net.named_parameters() if not p.requires_grad}
    assert fixed.isdisjoint(parts)  # frozen parameters stay out of the optimizer (it takes requires_grad ones)
    # A frozen trunk stays in evaluation mode through train(): its BatchNorm statistics do not move either.
    assert net.backbone.training is not freeze_trunk
    moved = [key for key, value in net.backbone.state_dict().items() if not torch.equal(value, statistics[key])]
    assert (not moved) is freeze_trunk


def test_a_separate_proposer_is_fixed_and_proposes_for_the_detector(one_thread):
    torch.manual_seed(0)
    net = FasterRCNNNet(4, train_parts="detector", **TINY)
    proposer = net.add_proposer()
    assert not proposer.training and not proposer.backbone.training  # from the start: Lightning keeps each mode
    with torch.no_grad():  # another proposer than the net's own RPN
        for parameter in proposer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    assert trained_parts(net) == {"backbone", "roi_heads"}
    assert not proposer.training and not proposer.backbone.training
    net.eval()
    images, _ = images_and_targets()
    with torch.no_grad():
        proposed = net.propose(images)
        batch, _ = net.transform(list(images))
        assert all(torch.equal(a, b) for a, b in zip(proposed, proposer(batch), strict=True))  # 64 px: no resize
        assert len(proposed[0]) <= TINY["rpn_post_nms_top_n_test"]
        own = rpn_proposals(net.rpn, batch, {"0": net.backbone(batch.tensors)})
    assert not torch.equal(proposed[0], own[0])  # the net's own RPN would have proposed others
    with pytest.raises(ValueError, match="train_parts='detector'"):
        FasterRCNNNet(4, train_parts="all", **TINY).add_proposer()


def source(model: FasterRCNN, **hparams) -> SourceModel:
    return SourceModel("step.ckpt", "FasterRCNN", {**model.hparams, **hparams},
                       {f"net.{k}": v for k, v in model.net.state_dict().items()})  # fmt: skip


def test_the_mapping_carries_the_rpn_only_where_it_proposed():
    step2 = FasterRCNN(num_classes=4, train_parts="detector", proposals_from="step1.ckpt", **TINY)
    step3 = FasterRCNN(num_classes=4, train_parts="rpn", freeze_trunk=True, **TINY)
    mapping = step3.init_mapping(source(step2))
    assert mapping.sources == {"net.proposer.": None, "net.rpn.": None} and mapping.new == ("net.rpn.",)
    step4 = FasterRCNN(num_classes=4, train_parts="detector", freeze_trunk=True, **TINY)
    assert step4.init_mapping(source(step3)).new == ()  # step 3's RPN goes on into step 4
    with pytest.raises(InitError, match=r"anchor_sizes \[16, 64\] \(this model: \[16, 32\]\)"):
        step3.init_mapping(source(step2, anchor_sizes=(16, 64)))
    with pytest.raises(InitError, match="takes a FasterRCNN checkpoint; step.ckpt .a YOLOv1 checkpoint"):
        step3.init_mapping(SourceModel("step.ckpt", "YOLOv1", {}, {}))


def test_the_proposal_checkpoint_is_read_when_fit_starts_and_not_when_it_resumes(tmp_path):
    step2 = FasterRCNN(num_classes=4, train_parts="detector", proposals_from=str(tmp_path / "rpn.ckpt"), **TINY)
    step2._trainer = SimpleNamespace(ckpt_path=str(tmp_path / "last.ckpt"))
    step2.on_fit_start()  # resuming: the proposer's weights come with the checkpoint; rpn.ckpt is not read
    step2._trainer = SimpleNamespace(ckpt_path=None)
    with pytest.raises(DataError, match=r"model.proposals_from: checkpoint .*rpn.ckpt does not exist"):
        step2.on_fit_start()


def test_options_that_do_not_fit_are_named():
    with pytest.raises(ValueError, match="train_parts must be one of"):
        FasterRCNN(num_classes=4, train_parts="heads", **TINY)
    with pytest.raises(ValueError, match="but train_parts is 'all': set model.train_parts to detector"):
        FasterRCNN(num_classes=4, proposals_from="rpn.ckpt", **TINY)


@pytest.fixture(scope="module")
def chain_run(shapes_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped 4-step chain, one epoch of two batches per step, on tiny scenes and a tiny net."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("chain")
    try:
        run_cli("fit", "--config", str(REPO / "configs" / "detection" / "faster_rcnn_4step_shapes.yaml"),
                "--data.init_args.root", str(shapes_tree), "--data.init_args.batch_size", "2",
                "--model.init_args.width_mult", "0.0625", "--model.init_args.min_size", "64",
                "--model.init_args.max_size", "64", "--model.init_args.representation_size", "16",
                "--trainer.max_epochs", "1", "--trainer.num_sanity_val_steps", "0",
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                cwd=folder)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return folder / "runs" / "faster_rcnn_4step_shapes" / "version_0"


def weights(run: Path, step: str) -> dict[str, torch.Tensor]:
    return torch.load(run / step / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_after_step_4_rpn_and_detector_share_step_2s_trunk_bit_for_bit(chain_run):
    step1, step2, step3, step4 = (weights(chain_run, step) for step in STEPS)
    # Step 2: a trunk of its own, and step 1's trunk and RPN as its fixed proposer.
    assert same(part(step2, "net.proposer.backbone."), part(step1, "net.backbone."))
    assert same(part(step2, "net.proposer.rpn."), part(step1, "net.rpn."))
    assert not same(part(step2, "net.backbone."), part(step1, "net.backbone."))
    # Steps 3 and 4: one trunk, step 2's, weights and BatchNorm statistics; the proposer is gone.
    for state in (step3, step4):
        assert same(part(state, "net.backbone."), part(step2, "net.backbone."))
        assert not part(state, "net.proposer.")
    assert same(part(step3, "net.roi_heads."), part(step2, "net.roi_heads."))  # step 3 trains the RPN alone
    assert same(part(step4, "net.rpn."), part(step3, "net.rpn."))  # step 4 the detector head alone
    assert not same(part(step4, "net.roi_heads."), part(step3, "net.roi_heads."))


def test_rpn_steps_measure_proposal_recall_and_detector_steps_map(chain_run):
    for step, has_map in zip(STEPS, (False, True, False, True), strict=True):
        header = (chain_run / step / "metrics.csv").read_text().splitlines()[0].split(",")
        assert "val/proposal_recall_50" in header and "val/proposal_recall_70" in header
        assert ("val/map_50" in header) is has_map
    assert (chain_run / "rpn1" / "pictures" / "val_samples_epoch0.png").is_file()  # the RPN's proposals drawn
    best = sorted((chain_run / "rpn1" / "checkpoints").glob("best-*.ckpt"))  # picked by recall
    callbacks = torch.load(best[0], weights_only=True)["callbacks"]
    assert any("'monitor': 'val/proposal_recall_50'" in key for key in callbacks)


def test_the_step_2_checkpoint_predicts_without_step_1(chain_run, tmp_path):
    shutil.copytree(chain_run / "detector2" / "checkpoints", tmp_path / "alone")
    shutil.move(chain_run / "rpn1", tmp_path / "rpn1")  # the file proposals_from names is gone
    try:
        model = lit_models.load(tmp_path / "alone" / "last.ckpt", device="cpu")
        found = model.predict(torch.rand(2, 3, 64, 64))
    finally:
        shutil.move(tmp_path / "rpn1", chain_run / "rpn1")
    assert model.net.proposer is not None and len(found) == 2
    assert same(part(model.state_dict(), "net.proposer.backbone."), part(weights(chain_run, "rpn1"), "net.backbone."))
