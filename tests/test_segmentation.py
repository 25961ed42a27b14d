"""The Segmenter loop, FCN's backbone weights, the mask writer, and FCN through the real CLI."""

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, last_metrics, run_cli
from PIL import Image

from lit_models import FCN, VGG
from lit_models.datamodules.sources.shapes import CLASS_NAMES, export_shapes
from lit_models.datamodules.voc_layout import voc_palette
from lit_models.metrics import SEGMENTATION_SCORES, SegmentationScores, segmentation_scores
from lit_models.nets.resnet import ResNet as ResNetNet
from lit_models.nets.vgg import VGG as VGGNet
from lit_models.predictions import MaskPrediction
from lit_models.writers import SegmentationWriter

TINY = {"width_mult": 0.125, "representation_size": 16, "batch_norm": True}
SHAPES = REPO / "configs" / "segmentation"


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory) -> Path:
    """A VOC-layout folder of 40-pixel scenes: 6 train, 3 val, 2 test."""
    return export_shapes(tmp_path_factory.mktemp("seg") / "VOC", num_train=6, num_val=3, num_test=2, size=40)


def test_loss_ignores_void_and_sum_reduction_is_per_image():
    torch.manual_seed(0)
    model = FCN(num_classes=3, variant="32s", **TINY)
    scores = torch.randn(2, 3, 5, 6, requires_grad=True)
    masks = torch.randint(0, 3, (2, 5, 6))
    masks[0, :2] = 255
    loss = model.loss(scores, masks)
    labelled = masks != 255
    torch.testing.assert_close(loss, F.cross_entropy(scores.permute(0, 2, 3, 1)[labelled], masks[labelled]))
    loss.backward()
    assert not scores.grad[0, :, :2].any()  # void pixels get no gradient
    model.hparams.loss_reduction = "sum"
    torch.testing.assert_close(model.loss(scores, masks), loss * labelled.sum() / 2)
    all_void = torch.full((2, 5, 6), 255)
    assert model.loss(scores, all_void) == 0 and model.loss(scores, all_void).requires_grad


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # a bare step, no Trainer attached
def test_metrics_are_dataset_level_and_skip_void():
    model = FCN(num_classes=3, variant="32s", **TINY)
    metrics = model.val_metrics
    # Batch 1: class 1 predicted right on 3 pixels; batch 2: class 2 half right. Void pixels are never counted.
    metrics.update(torch.tensor([[1, 1, 1, 0]]), torch.tensor([[1, 1, 1, 255]]))
    metrics.update(torch.tensor([[2, 0, 0, 0]]), torch.tensor([[2, 2, 0, 255]]))
    values = metrics.compute()
    # Confusion over both batches: class 0 IoU 1/2, class 1 IoU 3/3, class 2 IoU 1/2 -> mean 2/3.
    assert values["miou"].item() == pytest.approx(2 / 3)
    assert values["pixel_acc"].item() == pytest.approx(5 / 6)


def test_fcn_metrics_by_hand():
    # Rows true, columns predicted. Class 2 is predicted but never true; class 3 is neither true nor predicted.
    confusion = torch.tensor([[6, 2, 2, 0], [1, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    scores = segmentation_scores(confusion)
    # t = (10, 4, 0, 0); n_ii = (6, 3, 0, 0); predicted = (7, 5, 2, 0); IU = 6/11, 3/6, 0/2, undefined.
    assert scores["pixel_acc"].item() == pytest.approx(9 / 14)
    assert scores["mean_acc"].item() == pytest.approx((6 / 10 + 3 / 4) / 2)  # n_cl = 2: classes never true left out
    assert scores["miou"].item() == pytest.approx((6 / 11 + 3 / 6 + 0) / 3)  # n_cl = 3: class 2 counts 0
    assert scores["fwiou"].item() == pytest.approx((10 * 6 / 11 + 4 * 3 / 6) / 14)
    assert scores["iou"][:3].tolist() == pytest.approx([6 / 11, 1 / 2, 0]) and scores["iou"][3].isnan()
    assert scores["acc"][:2].tolist() == pytest.approx([0.6, 0.75]) and scores["acc"][2:].isnan().all()


def reference_scores(truth: np.ndarray, predicted: np.ndarray, classes: int) -> dict[str, float]:
    """The FCN authors' evaluation (fcn.berkeleyvision.org, score.py), in numpy over flattened label arrays."""
    labelled = (truth >= 0) & (truth < classes)
    hist = np.bincount(classes * truth[labelled] + predicted[labelled], minlength=classes**2).reshape(classes, classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        freq = hist.sum(1) / hist.sum()
        return {
            "pixel_acc": np.diag(hist).sum() / hist.sum(),
            "mean_acc": np.nanmean(np.diag(hist) / hist.sum(1)),
            "miou": np.nanmean(iu),
            "fwiou": (freq[freq > 0] * iu[freq > 0]).sum(),
        }


def test_fcn_metrics_match_the_reference_code_over_batches():
    generator = torch.Generator().manual_seed(0)
    classes = 6
    metric = SegmentationScores(classes, ignore_index=255)
    truths, guesses = [], []
    for _ in range(3):
        truth = torch.randint(0, classes - 1, (2, 9, 11), generator=generator)  # class 5 never true
        truth[torch.rand(truth.shape, generator=generator) < 0.2] = 255
        guess = torch.where(torch.rand(truth.shape, generator=generator) < 0.6, truth.clamp(max=classes - 1),
                            torch.randint(0, classes, truth.shape, generator=generator))  # fmt: skip
        metric.update(guess, truth)
        truths.append(truth.flatten())
        guesses.append(guess.flatten())
    expected = reference_scores(torch.cat(truths).numpy(), torch.cat(guesses).numpy(), classes)
    computed = metric.compute()
    assert {name: computed[name].item() for name in expected} == pytest.approx(expected, abs=1e-6)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # a bare step, no Trainer attached
def test_test_keeps_the_images_of_lowest_iou(one_thread):
    model = FCN(num_classes=3, variant="32s", **TINY).eval()
    model.lowest_iou_count = 2
    model.on_test_epoch_start()
    truth = torch.zeros(4, 6, 6, dtype=torch.long)
    truth[:, :3] = 1
    guesses = truth.clone()
    guesses[0, :3, :2] = 0  # image a: IU 18/24 for background, 12/18 for class 1 -> 0.71
    guesses[1] = 2  # image b: every pixel wrong -> 0
    guesses[3, 0, 0] = 2  # image d: one pixel of a class not in the truth -> (1 + 17/18 + 0) / 3
    truth[2] = 255  # image c: all void, no IoU
    batch = {"image": torch.randn(4, 3, 6, 6), "mask": truth, "size": [(6, 6)] * 4, "name": list("abcd"),
             "path": [""] * 4}  # fmt: skip
    model.keep_lowest_iou(batch, 0, guesses)
    assert [round(iou, 4) for iou, _ in model.lowest_iou] == [0, round((1 + 17 / 18) / 3, 4)]
    assert model.lowest_iou[0][1].caption == "b\ntruth | predicted, IoU 0.00"
    assert model.lowest_iou[0][1].image.shape == (3, 6, 6 + 4 + 6)  # truth | predicted, like the samples
    # A second batch: e (all wrong, 0) displaces d; f (right, 1) and h (0.71) do not.
    model.keep_lowest_iou({**batch, "name": list("efgh")}, 1, guesses.roll(-1, dims=0))
    assert [sample.caption.split("\n")[0] for _, sample in model.lowest_iou] == ["b", "e"]
    picture = model.summary_pictures("test")["test/lowest_iou"]
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype == np.uint8
    assert model.summary_pictures("val") == {}


def test_caffe_bias_rule_puts_biases_in_their_own_group():
    optimizer = partial(torch.optim.SGD, lr=0.1, momentum=0.99, weight_decay=5e-4)
    model = FCN(num_classes=3, bias_lr_mult=2.0, bias_weight_decay=False, optimizer=optimizer, **TINY)
    weights, biases = model.configure_optimizers().param_groups
    names = {id(p): name for name, p in model.named_parameters()}
    assert all(names[id(p)].endswith("bias") for p in biases["params"])
    assert not any(names[id(p)].endswith("bias") for p in weights["params"])
    assert len(weights["params"]) + len(biases["params"]) == len(list(model.parameters()))
    assert (weights["lr"], weights["weight_decay"]) == (0.1, 5e-4)
    assert (biases["lr"], biases["weight_decay"]) == (0.2, 0)
    plain = FCN(num_classes=3, optimizer=optimizer, **TINY).configure_optimizers()
    assert len(plain.param_groups) == 1  # the default: one group, as the factory made it


@pytest.mark.parametrize("backbone", ["vgg16", "resnet18"])
def test_backbone_weights_from_a_classifier(backbone, tmp_path):
    torch.manual_seed(0)
    if backbone == "vgg16":
        classifier = VGGNet(depth=16, num_classes=1000, batch_norm=True, width_mult=0.125, representation_size=16)
    else:
        classifier = ResNetNet(depth=18, num_classes=1000, width_mult=0.125)
    path = tmp_path / "classifier.pth"
    torch.save(classifier.state_dict(), path)  # torchvision's format: same keys
    model = FCN(num_classes=4, backbone=backbone, weights_backbone=str(path), **TINY)
    if backbone == "vgg16":
        torch.testing.assert_close(model.net.encoder.features[0].weight, classifier.features[0].weight)
        torch.testing.assert_close(model.net.encoder.features[1].running_var, classifier.features[1].running_var)
        torch.testing.assert_close(model.net.encoder.fc6.weight.flatten(1), classifier.classifier[0].weight)
    else:
        torch.testing.assert_close(model.net.encoder.net.layer4[1].conv2.weight, classifier.layer4[1].conv2.weight)
    assert not model.net.score_fr.weight.isnan().any()


def test_backbone_weights_from_a_lit_models_checkpoint(tmp_path):
    vgg = VGG(num_classes=10, depth=16, batch_norm=True, width_mult=0.125, representation_size=16)
    path = tmp_path / "vgg.ckpt"
    torch.save({"state_dict": vgg.state_dict()}, path)
    model = FCN(num_classes=4, weights_backbone=str(path), **TINY)
    torch.testing.assert_close(model.net.encoder.fc7.weight.flatten(1), vgg.net.classifier[3].weight)
    with pytest.raises(ValueError, match="does not fit this network"):
        FCN(num_classes=4, weights_backbone=str(path), width_mult=0.25, representation_size=16, batch_norm=True)


def test_predict_step_crops_padding_away():
    model = FCN(num_classes=3, variant="16s", **TINY).eval()
    batch = {"image": torch.randn(2, 3, 30, 40), "size": [(30, 40), (21, 17)], "name": ["a", "b"], "path": ["", ""]}
    out = model.predict_step(batch, 0)
    assert [tuple(r.mask.shape) for r in out] == [(30, 40), (21, 17)] and out[0].mask.dtype == torch.uint8
    assert [r.name for r in out] == ["a", "b"]


def test_writer_saves_palette_masks_and_overlays(tmp_path):
    image_path = tmp_path / "in.png"
    Image.fromarray(np.full((6, 8, 3), 200, np.uint8)).save(image_path)
    mask = torch.zeros(6, 8, dtype=torch.uint8)
    mask[2:4, 3:6] = 2
    writer = SegmentationWriter(output=str(tmp_path / "out"))
    prediction = [MaskPrediction(path=str(image_path), name="sub/in", mask=mask)]
    writer.write_on_batch_end(None, None, prediction, None, None, 0, 0)
    written = Image.open(tmp_path / "out" / "masks" / "sub" / "in.png")
    assert written.mode == "P" and written.getpalette()[:9] == voc_palette()[:9]
    assert (np.array(written) == mask.numpy()).all()  # reads back as class indices
    overlay = np.array(Image.open(tmp_path / "out" / "overlays" / "sub" / "in.png"))
    assert (overlay[0, 0] == 200).all()  # background untouched
    red_green = voc_palette()[6:9]  # class 2's colour, blended half over the image
    assert overlay[2, 3].tolist() == [round(0.5 * 200 + 0.5 * c) for c in red_green]


def tiny_fcn(config: Path, root: Path) -> list[str]:
    return [
        "--config", str(config),
        "--data.init_args.root", str(root),
        "--data.init_args.crop_size", "32",
        "--data.init_args.base_size", "40",
        "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "3",
        "--model.init_args.width_mult", "0.125",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_fcn_fit_test_predict_in_new_processes(variant, voc_tree, tmp_path):
    args = tiny_fcn(SHAPES / f"fcn{variant}_shapes.yaml", voc_tree)
    run_cli("fit", *args, "--trainer.max_epochs", "2", cwd=tmp_path)
    runs = tmp_path / "runs" / f"fcn{variant}_shapes"
    checkpoint = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["class_names"] == CLASS_NAMES and checkpoint["epoch"] == 1

    run_cli("test", *args, "--ckpt_path", "best", cwd=tmp_path)
    metrics = (runs / "version_0" / "test" / "metrics.csv").read_text()  # beside the run it evaluates
    for key in ("test/loss", *(f"test/{name}" for name in SEGMENTATION_SCORES), "test/iou/background",
                "test/iou/triangle", "test/acc/background", "test/acc/triangle"):  # fmt: skip
        assert key in metrics
    assert (runs / "version_0" / "test" / "pictures" / "test_lowest_iou.png").is_file()

    run_cli("predict", *args, "--ckpt_path", "last", cwd=tmp_path)
    predictions = runs / "version_0" / "predict" / "predictions"
    test_ids = (voc_tree / "ImageSets" / "Segmentation" / "test.txt").read_text().split()
    assert sorted(p.stem for p in (predictions / "masks").iterdir()) == test_ids
    for image_id in test_ids:
        mask = Image.open(predictions / "masks" / f"{image_id}.png")
        assert mask.size == (40, 40) and np.array(mask).max() < len(CLASS_NAMES)
        assert Image.open(predictions / "overlays" / f"{image_id}.png").size == (40, 40)
    # What a user already has is never overwritten.
    with pytest.raises(AssertionError, match="already exists"):
        run_cli("predict", *args, "--ckpt_path", "last", "--prediction_writer.output", str(predictions), cwd=tmp_path)


def test_voc_recipe_fits_and_tests_at_full_size(voc_tree, tmp_path, monkeypatch):
    """One real step of the paper recipe (full-width VGG-16 FCN-8s, summed loss, lr 1e-10) on a VOC-layout tree."""
    from lit_models.cli import LitModelsCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lit-models"])
    common = ["--config", str(REPO / "configs" / "segmentation" / "fcn8s_voc.yaml"),
              "--data.init_args.root", str(voc_tree), "--data.init_args.num_workers", "0",
              "--model.init_args.weights_backbone", "null", "--trainer.fast_dev_run", "1",
              "--trainer.enable_progress_bar", "false"]  # fmt: skip
    cli = LitModelsCLI(args=["fit", *common])
    assert cli.trainer.global_step == 1 and cli.model.num_classes == len(CLASS_NAMES)  # from class_names.txt
    assert cli.model.net.encoder.fc6.weight.shape == (4096, 512, 7, 7)
    biases = cli.trainer.optimizers[0].param_groups[1]  # the reference solver's lr_mult 2, decay_mult 0
    assert biases["lr"] == pytest.approx(2e-10) and biases["weight_decay"] == 0
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    tested = LitModelsCLI(args=["test", *common])
    assert 0.0 <= float(tested.trainer.callback_metrics["test/miou"]) <= 1.0


def test_ddp_on_two_cpu_processes_matches_single_process(voc_tree, tmp_path):
    args = tiny_fcn(SHAPES / "fcn8s_shapes.yaml", voc_tree)
    ddp = ["--trainer", str(REPO / "configs" / "trainer" / "ddp_cpu.yaml")]
    single = ["--trainer", str(REPO / "configs" / "trainer" / "default.yaml"), "--trainer.accelerator", "cpu"]
    run_cli("fit", *args, *ddp, "--trainer.max_epochs", "1", cwd=tmp_path)
    runs = tmp_path / "runs" / "fcn8s_shapes"
    validated = []  # each validate writes into the fit's run folder, replacing the one before
    for trainer in (ddp, single):
        run_cli("validate", *args, *trainer, "--ckpt_path", "last", cwd=tmp_path)
        logged = last_metrics(runs / "version_0" / "validate" / "metrics.csv")
        validated.append({name: logged[f"val/{name}"] for name in SEGMENTATION_SCORES})
    # 3 val scenes over 2 ranks: the confusion matrices are summed across ranks, each scene counted once.
    assert validated[0] == pytest.approx(validated[1], abs=1e-6)
    run_cli("test", *args, *ddp, "--ckpt_path", "last", cwd=tmp_path)
    # The 2 test scenes, one per rank, in one row (one scene alone makes a picture half as wide).
    width, height = Image.open(runs / "version_0" / "test" / "pictures" / "test_lowest_iou.png").size
    assert width > 3 * height
    run_cli("predict", *args, *ddp, "--ckpt_path", "last", cwd=tmp_path)
    written = sorted(p.stem for p in (runs / "version_0" / "predict" / "predictions" / "masks").iterdir())
    assert written == (voc_tree / "ImageSets" / "Segmentation" / "test.txt").read_text().split()
