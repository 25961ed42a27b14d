import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import CLASSES, make_image_tree
from PIL import Image

from lit_models.datamodules.files import DataError, decode_rgb
from lit_models.datamodules.image_folder import ImageFolderDataModule
from lit_models.datamodules.sources import mnist5k
from lit_models.datamodules.transforms import training_transform


def make(root: Path, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(root=str(root), image_size=16, num_workers=0, **{"preset": "small", **kwargs})


def test_classes_known_after_init_without_decoding(image_tree):
    for path in (image_tree / "train").rglob("*.png"):
        path.write_bytes(b"not an image")  # __init__ must not open any image
    dm = make(image_tree)
    assert dm.class_names == CLASSES and dm.num_classes == 3


def test_val_folder_is_used_and_batches_are_three_channel(image_tree):
    dm = make(image_tree, batch_size=4)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 24 and len(dm.datasets["val"]) == 9 and len(dm.datasets["test"]) == 9
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].dtype == torch.int64
    assert all(Path(p).is_file() for p in batch["path"])


def test_training_batches_leave_the_loader_as_uint8_and_are_normalised_on_the_device(image_tree):
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    dm = make(image_tree, batch_size=4, preset="imagenet", mean=mean, std=std)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, 16, 16)
    assert dm.on_after_batch_transfer(batch, 0)["image"].dtype == torch.float32
    assert dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)["image"].dtype == torch.float32
    # The workers' steps, then the device's on the batch, equal the whole training transform image by image (the
    # same random crops and flips drawn), to float rounding.
    train = dm.datasets["train"]
    torch.manual_seed(0)
    images = torch.stack([train[i]["image"] for i in range(4)])
    normalised = dm.on_after_batch_transfer({"image": images}, 0)["image"]
    whole = training_transform("imagenet", 16, mean=mean, std=std)
    torch.manual_seed(0)
    expected = torch.stack([whole(decode_rgb(train.samples[i][0])) for i in range(4)])
    torch.testing.assert_close(normalised, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("options", [{"preset": "googlenet"}, {"random_erasing": 0.5}, {"lighting": 0.1}])
def test_per_image_steps_after_the_conversion_keep_training_batches_float(image_tree, options):
    dm = make(image_tree, batch_size=4, **options)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].dtype == torch.float32


def test_seeded_stratified_val_split_when_val_missing(tmp_path):
    root = make_image_tree(tmp_path / "t", {"train": 10})
    splits = []
    for _ in range(2):
        dm = make(root, val_fraction=0.2, split_seed=3)
        dm.setup("fit")
        splits.append([p for p, _ in dm.datasets["val"].samples])
    assert splits[0] == splits[1]  # the same on every rank and run
    val_labels = [label for _, label in dm.datasets["val"].samples]
    assert np.bincount(val_labels).tolist() == [2, 2, 2]
    train_paths = {p for p, _ in dm.datasets["train"].samples}
    assert not train_paths & set(splits[0]) and len(train_paths) == 24
    other = make(root, val_fraction=0.2, split_seed=4)
    other.setup("fit")
    assert [p for p, _ in other.datasets["val"].samples] != splits[0]


def test_grayscale_and_cmyk_become_rgb(image_tree):
    folder = image_tree / "train" / "circle"
    Image.new("L", (20, 20), 128).save(folder / "gray.png")
    Image.new("CMYK", (20, 20), (0, 50, 100, 0)).save(folder / "cmyk.jpg")
    dm = make(image_tree)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    for name in ("gray.png", "cmyk.jpg"):
        index = next(i for i, (p, _) in enumerate(dataset.samples) if p.endswith(name))
        assert dataset[index]["image"].shape == (3, 16, 16)


def test_non_image_files_are_ignored(image_tree):
    folder = image_tree / "train" / "square"
    (folder / "notes.txt").write_text("labels by hand")
    (folder / ".DS_Store").write_bytes(b"\0")
    dm = make(image_tree)
    dm.setup("fit")
    assert not any(p.endswith((".txt", ".DS_Store")) for p, _ in dm.datasets["train"].samples)


def test_empty_class_folder_is_an_error_naming_it(image_tree):
    for path in (image_tree / "train" / "square").iterdir():
        path.unlink()
    dm = make(image_tree)
    with pytest.raises(DataError, match=r"train/square holds no images"):
        dm.setup("fit")


def test_missing_root_and_missing_split(tmp_path, image_tree):
    with pytest.raises(DataError, match="does not exist"):
        make(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"nope/train is not a folder"):
        (tmp_path / "nope").mkdir()
        make(tmp_path / "nope")
    root = make_image_tree(tmp_path / "no_test", {"train": 4, "val": 2})
    dm = make(root)
    dm.setup("test")
    with pytest.raises(DataError, match=r"no_test/test does not exist"):
        dm.test_dataloader()


def test_split_with_other_class_folders_is_an_error(image_tree):
    (image_tree / "val" / "triangle").mkdir()
    Image.new("RGB", (8, 8)).save(image_tree / "val" / "triangle" / "a.png")
    with pytest.raises(DataError, match=r"extra \['triangle'\]"):
        make(image_tree).setup("fit")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class TinyModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3 * 16 * 16, 3)

    def training_step(self, batch, batch_idx):
        self.log("seen", float(len(batch["label"])), reduce_fx="sum", on_epoch=True, on_step=False)
        return torch.nn.functional.cross_entropy(self.layer(batch["image"].flatten(1)), batch["label"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit_one_epoch(dm):
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(TinyModel(), datamodule=dm)
    return trainer


def test_corrupt_image_error_names_the_file_from_the_main_process(image_tree):
    bad = image_tree / "train" / "stripes" / "002.png"
    truncate(bad)
    dm = make(image_tree, batch_size=8)
    dm.hparams.num_workers = 1  # the error must not surface as a worker traceback
    with pytest.raises(DataError, match=rf"cannot decode image {bad}.*skip_corrupt=true") as info:
        fit_one_epoch(dm)
    assert "DataLoader worker" not in str(info.value)


def test_skip_corrupt_logs_and_keeps_the_number_of_batches(image_tree, caplog):
    bad = image_tree / "train" / "circle" / "001.png"
    bad.write_bytes(b"\x89PNG garbage")
    dm = make(image_tree, batch_size=8, skip_corrupt=True)
    with caplog.at_level(logging.WARNING):
        trainer = fit_one_epoch(dm)
    assert trainer.num_training_batches == 3  # 24 files, batch 8: the replacement keeps the length
    assert trainer.callback_metrics["seen"] == 24
    assert sum(str(bad) in r.getMessage() for r in caplog.records) == 1


def test_eval_shards_cover_every_sample_once_under_ddp(image_tree):
    seen = []
    for rank in range(2):
        dm = make(image_tree, batch_size=2)
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        dm.setup("validate")
        seen += [p for batch in dm.val_dataloader() for p in batch["path"]]
    assert sorted(seen) == sorted(p for p, _ in dm.datasets["val"].samples)  # 9 samples, none twice


def test_predict_dir_lists_images_recursively(image_tree, tmp_path):
    loose = tmp_path / "loose" / "deeper"
    loose.mkdir(parents=True)
    Image.new("RGB", (10, 12)).save(loose / "x.jpg")
    (loose / "readme.md").write_text("-")
    dm = make(image_tree, predict_dir=str(tmp_path / "loose"))
    dm.setup("predict")
    assert [Path(p).name for p, _ in dm.datasets["predict"].samples] == ["x.jpg"]
    with pytest.raises(DataError, match="predict_dir .*missing does not exist"):
        make(image_tree, predict_dir=str(tmp_path / "missing")).setup("predict")


def test_embedded_digits_export_once_through_the_folder_path(isolated_cache):
    dm = ImageFolderDataModule(num_workers=0)
    assert dm.num_classes == 10 and dm.class_names == [str(d) for d in range(10)]
    dm.prepare_data()
    marker = dm.root / mnist5k.COMPLETE_MARKER
    stamp = marker.stat().st_mtime_ns
    dm.prepare_data()  # idempotent: nothing rewritten
    assert marker.stat().st_mtime_ns == stamp
    assert len(list((dm.root / "train").rglob("*.png"))) == 4000
    assert len(list((dm.root / "test" / "7").glob("*.png"))) == 100
    image = Image.open(next((dm.root / "test" / "3").glob("*.png")))
    assert image.size == (28, 28) and np.asarray(image).max() > 200  # real strokes, not blank
    dm.setup("fit")
    assert len(dm.datasets["val"]) == 400 and len(dm.datasets["train"]) == 3600


def test_export_refuses_a_foreign_folder(tmp_path):
    target = tmp_path / "mnist5k"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="nothing in it was changed"):
        mnist5k.export_mnist5k(target)
    assert (target / "mine.txt").read_text() == "keep me"
