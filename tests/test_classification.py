import pytest
import pytorch_lightning as pl
import torch
import torchvision
from conftest import CLASSES

from lit_models import VGG, AlexNet, DenseNet, GoogLeNet, ImageFolderDataModule, ResNet
from lit_models.class_names import ClassNamesMismatchError
from lit_models.nets.googlenet import GoogLeNetOutputs

TINY = {
    AlexNet: {"width_mult": 0.125, "representation_size": 32},
    VGG: {"depth": 11, "width_mult": 0.125, "representation_size": 32, "batch_norm": True},
    GoogLeNet: {"width_mult": 0.125},
    ResNet: {"depth": 18, "width_mult": 0.125, "small_input": True},
    DenseNet: {"growth_rate": 4, "num_init_features": 8, "small_input": True},
}


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # a bare step, no Trainer attached
@pytest.mark.parametrize("cls", list(TINY))
def test_training_step_and_one_output_type(cls):
    torch.manual_seed(0)
    model = cls(num_classes=4, **TINY[cls])
    size = 64 if cls is AlexNet else 32
    batch = {"image": torch.randn(2, 3, size, size), "label": torch.tensor([0, 3])}
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    train_type = type(model(batch["image"]))
    model.eval()
    assert type(model(batch["image"])) is train_type
    assert model.logits(model(batch["image"])).shape == (2, 4)
    assert model.training_step((batch["image"], batch["label"]), 0).ndim == 0  # plain tuples work too


def test_googlenet_adds_weighted_auxiliary_losses():
    torch.manual_seed(0)
    model = GoogLeNet(num_classes=3, aux_weight=0.3, width_mult=0.125)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    out = model(x)
    assert isinstance(out, GoogLeNetOutputs) and out.aux_logits1 is not None
    ce = torch.nn.functional.cross_entropy
    expected = ce(out.logits, y) + 0.3 * (ce(out.aux_logits1, y) + ce(out.aux_logits2, y))
    torch.testing.assert_close(model.training_loss(out, y), expected)
    without = GoogLeNet(num_classes=3, aux_weight=0.0, width_mult=0.125)
    assert without(x).aux_logits1 is None


def tiny_trainer(tmp_path, **kwargs) -> pl.Trainer:
    options = {
        "max_epochs": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        "deterministic": True,
    }
    return pl.Trainer(**{**options, **kwargs})


def tiny_data(root, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(root=str(root), preset="small", image_size=24, hflip=False, num_workers=0, **kwargs)


class LossHistory(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.losses.append(float(trainer.callback_metrics["train/loss_epoch"]))


def test_overfits_a_few_batches(image_tree, tmp_path):
    pl.seed_everything(0)
    model = ResNet(
        num_classes=3,
        depth=18,
        width_mult=0.25,
        small_input=True,
        optimizer=lambda p: torch.optim.Adam(p, lr=3e-3),
    )
    history = LossHistory()
    trainer = tiny_trainer(
        tmp_path,
        overfit_batches=2,
        max_epochs=20,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[history],
    )
    trainer.fit(model, datamodule=tiny_data(image_tree, batch_size=12))
    assert history.losses[-1] < 0.1 * history.losses[0], history.losses


def test_checkpoint_keeps_class_names_and_loads_weights_only(image_tree, tmp_path):
    model = ResNet(num_classes=3, depth=18, width_mult=0.125, small_input=True)
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(model, datamodule=tiny_data(image_tree))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # primitive hyperparameters only
    assert checkpoint["class_names"] == CLASSES
    assert checkpoint["hyper_parameters"]["depth"] == 18
    restored = ResNet.load_from_checkpoint(path)
    assert restored.class_names == CLASSES
    # A lit-models checkpoint also serves as `weights` for a new model (here with a 5-class head).
    started = ResNet(num_classes=5, depth=18, width_mult=0.125, small_input=True, weights=str(path))
    torch.testing.assert_close(started.net.conv1.weight, model.net.conv1.weight)

    # The same classes in another order: every index would mean another class.
    renamed = tmp_path / "renamed"
    (renamed / "train").mkdir(parents=True)
    for index, name in enumerate(CLASSES):
        (image_tree / "train" / name).rename(renamed / "train" / f"{index}_{name}")
    with pytest.raises(ClassNamesMismatchError, match=r"checkpoint classes \['circle'.*data's classes \['0_circle'"):
        tiny_trainer(tmp_path).validate(
            model=ResNet(num_classes=3, depth=18, width_mult=0.125, small_input=True),
            datamodule=tiny_data(renamed, val_fraction=0.3),
            ckpt_path=path,
        )


def test_torchvision_weight_file_loads_and_head_is_replaced(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = ResNet(num_classes=10, depth=18, weights=str(path))
    torch.testing.assert_close(model.net.conv1.weight, reference.conv1.weight)
    assert model.net.fc.weight.shape == (10, 512)
    with pytest.raises(ValueError, match=r"does not fit this network.*depth/variant/width"):
        ResNet(num_classes=10, depth=34, weights=str(path))


def test_densenet_and_vgg_take_torchvision_weight_files(tmp_path):
    torch.manual_seed(0)
    for cls, reference, kwargs in (
        (DenseNet, torchvision.models.densenet121(num_classes=1000), {"depth": 121}),
        (VGG, torchvision.models.vgg11(num_classes=1000), {"depth": 11}),
    ):
        path = tmp_path / f"{cls.__name__}.pth"
        torch.save(reference.state_dict(), path)
        model = cls(num_classes=5, weights=str(path), **kwargs)
        first = next(iter(reference.state_dict()))
        torch.testing.assert_close(model.net.state_dict()[first], reference.state_dict()[first])
