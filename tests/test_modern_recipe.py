"""The modern recipe's options, each applied where it belongs: MixUp / CutMix on training batches only (soft labels),
the automatic augmentation and random erasing in the training transform, no weight decay on normalisation layers,
an EMA of the weights in validation and in the checkpoints (and what loads from them), the evaluation size apart from
the training crop, channels_last, bf16 autocast and torch.compile."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_lightning.callbacks import Callback, EMAWeightAveraging
from torch import nn
from torchvision.transforms import v2

import lit_models
from lit_models import ImageFolderDataModule, ResNet
from lit_models.classification import ImageClassifier
from lit_models.datamodules.spec import DataSpec
from lit_models.optim import NORM_LAYERS, build_optimizers

pytestmark = pytest.mark.usefixtures("seeded_one_thread")

TINY_NET = {"num_classes": 3, "depth": 18, "small_input": True, "width_mult": 0.125}
MODERN_DATA = {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "auto_augment": "randaugment", "random_erasing": 0.1}


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)


def trainer(root: Path, *callbacks: Callback, **options) -> pl.Trainer:
    return pl.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
        callbacks=list(callbacks), **{"max_epochs": 2, "limit_val_batches": 1, **options},
    )  # fmt: skip


class Batches(Callback):
    """The labels of the batches the module's steps receive (after the transfer to the device)."""

    def __init__(self) -> None:
        self.train: list[torch.Tensor] = []
        self.val: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.append(batch["label"].clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val.append(batch["label"].clone())


@pytest.fixture(scope="module")
def modern_fit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two epochs of a tiny ResNet with every data option on, an EMA of its weights and no weight decay on its
    BatchNorm parameters, trained at 16 px and evaluated at 20 (resized to 24)."""
    from conftest import make_image_tree

    tmp = tmp_path_factory.mktemp("modern")
    root = make_image_tree(tmp / "shapes", {"train": 8, "val": 3, "test": 3})
    torch.manual_seed(0)
    data = ImageFolderDataModule(str(root), image_size=16, eval_image_size=20, eval_resize_size=24, batch_size=8,
                                 num_workers=0, **MODERN_DATA)  # fmt: skip
    model = ResNet(**TINY_NET, label_smoothing=0.1, norm_weight_decay=0.0, channels_last=True, optimizer=sgd)
    ema, batches = EMAWeightAveraging(decay=0.5), Batches()
    fit = trainer(tmp / "run", ema, batches)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit.fit(model, data)
    finally:
        torch.set_num_threads(threads)
    checkpoints = tmp / "run" / "checkpoints"
    return {"model": model, "data": data, "trainer": fit, "ema": ema, "batches": batches, "root": root,
            "last": checkpoints / "last.ckpt", "best": next(checkpoints.glob("best-*.ckpt"))}  # fmt: skip


# ------------------------------------------------------------------------------------------------ MixUp / CutMix


def test_training_batches_are_mixed_into_soft_labels_that_sum_to_one(modern_fit):
    train, val = modern_fit["batches"].train, modern_fit["batches"].val
    assert train and val
    for labels in train:
        assert labels.shape == (8, 3) and labels.is_floating_point()
        assert torch.allclose(labels.sum(dim=1), torch.ones(8))
    assert any(((labels > 0) & (labels < 1)).any() for labels in train)  # mixed, not one-hot
    for labels in val:  # validation sees the images' own classes
        assert labels.dtype == torch.int64 and labels.dim() == 1
    metrics = modern_fit["trainer"].callback_metrics
    assert 0 <= metrics["train/acc_top1"] <= 1  # counted on the dominant class of each mixed image


def test_soft_labels_are_smoothed_as_torchvision_smooths_them():
    model = ResNet(**TINY_NET, label_smoothing=0.1)
    logits = torch.randn(4, 3)
    soft = torch.softmax(torch.randn(4, 3), dim=1)
    smoothed = 0.9 * soft + 0.1 / 3  # torchvision: one-hot -> MixUp/CutMix -> CrossEntropyLoss(label_smoothing)
    expected = -(smoothed * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    assert torch.allclose(model.training_loss(logits, soft), expected)
    hard = torch.tensor([0, 2, 1, 1])  # a one-hot target is the class index
    assert torch.allclose(model.training_loss(logits, F.one_hot(hard, 3).float()), model.training_loss(logits, hard))


def test_mixing_is_off_by_default_and_chooses_at_random_with_both_alphas(image_tree):
    assert ImageFolderDataModule(str(image_tree), num_workers=0).batch_mix is None  # the digits recipes' default
    one = ImageFolderDataModule(str(image_tree), mixup_alpha=0.2).batch_mix
    both = ImageFolderDataModule(str(image_tree), mixup_alpha=0.2, cutmix_alpha=1.0).batch_mix
    assert isinstance(one, v2.MixUp) and isinstance(both, v2.RandomChoice)
    assert [type(t) for t in both.transforms] == [v2.MixUp, v2.CutMix]
    with pytest.raises(ValueError, match="cutmix_alpha.*-1"):
        ImageFolderDataModule(str(image_tree), cutmix_alpha=-1)


# ------------------------------------------------------------------------------------ auto-augment, random erasing


@pytest.mark.parametrize(
    ("policy", "kind"),
    [("randaugment", v2.RandAugment), ("trivialaugment", v2.TrivialAugmentWide), ("autoaugment", v2.AutoAugment)],
)
def test_auto_augment_on_uint8_and_erasing_after_normalize(image_tree, policy, kind):
    data = ImageFolderDataModule(str(image_tree), image_size=16, auto_augment=policy, random_erasing=0.25)
    steps = [type(t) for t in data.transform(train=True).transforms]
    # torchvision's presets.py order: geometry, auto-augment (uint8), to float, normalise, erase
    assert steps.index(v2.RandomHorizontalFlip) < steps.index(kind) < steps.index(v2.ToDtype)
    assert steps[-2:] == [v2.Normalize, v2.RandomErasing]
    assert data.transform(train=True).transforms[-1].p == 0.25
    assert kind not in [type(t) for t in data.transform(train=False).transforms]
    image = Image.new("RGB", (20, 20), (120, 40, 200))
    assert data.transform(train=True)(image).shape == (3, 16, 16)


def test_default_transform_has_neither_and_bad_values_name_the_choices(image_tree):
    steps = [type(t) for t in ImageFolderDataModule(str(image_tree)).transform(train=True).transforms]
    assert not {v2.RandAugment, v2.TrivialAugmentWide, v2.AutoAugment, v2.RandomErasing} & set(steps)
    with pytest.raises(ValueError, match="auto_augment must be one of none, randaugment, trivialaugment"):
        ImageFolderDataModule(str(image_tree), auto_augment="randaug")
    with pytest.raises(ValueError, match="random_erasing is a probability.*1.5"):
        ImageFolderDataModule(str(image_tree), random_erasing=1.5)


# --------------------------------------------------------------------------------------- norm-layer weight decay


def test_norm_parameters_found_by_type_get_their_own_weight_decay():
    model = ResNet(**TINY_NET, norm_weight_decay=0.0, optimizer=sgd)
    optimizer = model.configure_optimizers()
    norm = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    assert norm
    rest, zero = optimizer.param_groups
    assert {id(p) for p in zero["params"]} == norm and zero["weight_decay"] == 0.0
    assert not norm & {id(p) for p in rest["params"]} and rest["weight_decay"] == 5e-4
    assert len(ResNet(**TINY_NET, optimizer=sgd).configure_optimizers().param_groups) == 1  # default: one group


def test_norm_rule_composes_with_the_bias_rule_whatever_the_names():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LayerNorm(4), nn.Linear(4, 2))
    groups = build_optimizers(net, sgd, None, bias_lr_mult=2.0, bias_weight_decay=False, norm_weight_decay=1e-5)
    settings = {(g["lr"], g["weight_decay"]): {id(p) for p in g["params"]} for g in groups.param_groups}
    assert settings == {
        (0.1, 5e-4): {id(net[0].weight), id(net[4].weight)},
        (0.2, 0.0): {id(net[0].bias), id(net[4].bias)},
        (0.1, 1e-5): {id(net[1].weight), id(net[3].weight)},
        (0.2, 1e-5): {id(net[1].bias), id(net[3].bias)},
    }
    with pytest.raises(ValueError, match="norm_weight_decay must be >= 0"):
        ResNet(**TINY_NET, norm_weight_decay=-1.0)


# ------------------------------------------------------------------------------------------------ EMA of weights


def net_weights(state: dict) -> dict:
    return {key: value for key, value in state.items() if key.startswith("net.")}


def test_checkpoints_hold_the_averaged_weights_not_the_raw_ones(modern_fit):
    averaged = modern_fit["ema"]._average_model.module.state_dict()
    for name in ("best", "last"):
        saved = torch.load(modern_fit[name], weights_only=True)
        raw = net_weights(saved["current_model_state"])
        ema = net_weights(saved["state_dict"])
        assert ema.keys() == raw.keys()
        assert any(not torch.equal(ema[key], raw[key]) for key in ema)  # the average is not the raw weights
    last = net_weights(torch.load(modern_fit["last"], weights_only=True)["state_dict"])
    assert all(torch.equal(last[key], averaged[key]) for key in last)
    # What loads from it (lit_models.load, so predict CKPT and export) holds the averaged weights.
    loaded = lit_models.load(modern_fit["last"], device="cpu").state_dict()
    assert all(torch.equal(loaded[key], last[key]) for key in last)


def test_validation_scores_the_averaged_weights(modern_fit, tmp_path):
    logged = modern_fit["trainer"].callback_metrics["val/loss"]
    saved = torch.load(modern_fit["last"], weights_only=True)
    data = modern_fit["data"]
    scores = {}
    for weights in ("state_dict", "current_model_state"):
        model = ResNet(**TINY_NET, channels_last=True)
        model.load_state_dict(saved[weights])
        scores[weights] = trainer(tmp_path).validate(model, data, verbose=False)
    assert scores["state_dict"][0]["val/loss"] == pytest.approx(float(logged), rel=1e-5)
    assert scores["current_model_state"][0]["val/loss"] != pytest.approx(float(logged), rel=1e-3)


def test_a_resumed_fit_goes_on_averaging_from_the_saved_average(modern_fit, tmp_path):
    data, ema = modern_fit["data"], EMAWeightAveraging(decay=0.5)
    model = ResNet(**TINY_NET, label_smoothing=0.1, norm_weight_decay=0.0, channels_last=True, optimizer=sgd)
    resumed = trainer(tmp_path, ema, max_epochs=3)
    resumed.fit(model, data, ckpt_path=str(modern_fit["last"]))
    first = modern_fit["ema"]._average_model.n_averaged.item()
    assert resumed.global_step == first * 3 // 2  # one update per step: the two saved epochs' and this one's
    assert ema._average_model.n_averaged.item() == resumed.global_step
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert checkpoints[-1] == "last.ckpt" and checkpoints[0].startswith("best-")  # the module's own two callbacks


# ------------------------------------------------------------------------------------- train small, test large


def test_evaluation_size_reaches_validation_and_prediction_from_the_checkpoint(modern_fit):
    data = modern_fit["data"]
    assert data.spec.image_size == 20 and data.spec.resize_size == 24
    assert DataSpec.from_dict(data.spec.to_dict()) == data.spec
    resize = next(t for t in data.spec.preprocess().transforms if isinstance(t, v2.Resize))
    assert resize.size == [24]
    assert next(iter(data.val_dataloader()))["image"].shape[-2:] == (20, 20)
    assert next(iter(data.train_dataloader()))["image"].shape[-2:] == (16, 16)
    loaded = lit_models.load(modern_fit["last"], device="cpu")
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    assert loaded.preprocess(image).shape == (3, 20, 20)
    assert loaded.prediction_source.spec == data.spec
    assert len(loaded.predict([image])) == 1


def test_evaluation_sizes_that_cannot_serve_are_refused(image_tree):
    with pytest.raises(ValueError, match="eval_resize_size 200 is smaller than the evaluation crop 224"):
        ImageFolderDataModule(str(image_tree), image_size=176, eval_image_size=224, eval_resize_size=200)
    with pytest.raises(ValueError, match="preset 'small' resizes evaluation images to the square"):
        ImageFolderDataModule(str(image_tree), preset="small", image_size=16, eval_resize_size=20)


# ------------------------------------------------------------------------------- channels_last, bf16, compile


def test_channels_last_net_and_inputs(modern_fit):
    model = modern_fit["model"]
    first = next(m for m in model.net.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    handle = first.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    model.eval()(torch.randn(2, 3, 16, 16))
    handle.remove()
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()


def test_a_tiny_fit_runs_in_bf16_autocast_on_the_cpu(image_tree, tmp_path):
    data = ImageFolderDataModule(str(image_tree), image_size=16, batch_size=8, num_workers=0)
    model = ResNet(**TINY_NET, optimizer=sgd)
    dtypes = []
    model.net.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    fit = trainer(tmp_path, precision="bf16-mixed", max_epochs=1, limit_train_batches=2, enable_checkpointing=False)
    fit.fit(model, data)
    assert torch.bfloat16 in dtypes and torch.isfinite(fit.callback_metrics["train/loss"])


class TinyClassifier(ImageClassifier):
    """A classifier whose net is six layers: what torch.compile turns into kernels quickly."""

    def build_net(self, num_classes: int, **net_args) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, num_classes))  # fmt: skip


def test_compiled_net_checkpoint_loads_into_a_plain_module(image_tree, tmp_path, monkeypatch):
    # Two training steps through the compiled forward and backward, no validation (evaluation mode would compile a
    # second graph). Compiled with the "aot_eager" backend: Dynamo's graph capture and AOTAutograd's forward and
    # backward graphs, what the module's option touches, without inductor's C++ build (20-70 s on 2 cores with an
    # empty cache: a benchmark's cost, not a test's). `lit-models benchmark --backends compile` runs inductor.
    inductor_compile = nn.Module.compile
    monkeypatch.setattr(nn.Module, "compile", lambda net: inductor_compile(net, backend="aot_eager"))
    data = ImageFolderDataModule(str(image_tree), image_size=16, batch_size=8, num_workers=0)
    model = TinyClassifier(num_classes=3, compile=True, optimizer=sgd)
    fit = trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0)
    fit.fit(model, data)
    assert model.net._compiled_call_impl is not None and fit.global_step == 2  # the net trained compiled
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert saved.keys() == TinyClassifier(num_classes=3).state_dict().keys()  # no _orig_mod. prefix
    plain = TinyClassifier.load_from_checkpoint(checkpoint, compile=False, weights_only=True).eval()
    assert plain.net._compiled_call_impl is None
    assert all(torch.equal(value, saved[key]) for key, value in plain.state_dict().items())
    assert plain(torch.randn(2, 3, 16, 16)).shape == (2, 3)
