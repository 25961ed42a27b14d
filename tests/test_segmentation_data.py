"""SegmentationDataModule: VOC and folder-pair layouts, aligned joint transforms, padding and data errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import VOCSegmentation

from lit_models.datamodules.files import DataError
from lit_models.datamodules.segmentation import SegmentationDataModule
from lit_models.datamodules.sources import shapes
from lit_models.datamodules.sources.shapes import CLASS_NAMES, export_shapes
from lit_models.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD
from lit_models.datamodules.voc_layout import VOC_CLASS_NAMES, voc_palette

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def voc_tree(tmp_path: Path, num_test: int = 0) -> Path:
    """A tiny shapes export where torchvision expects VOC: tmp_path/VOCdevkit/VOC2012."""
    return export_shapes(tmp_path / "VOCdevkit" / "VOC2012", num_train=4, num_val=2, num_test=num_test, size=64)


def make(root: Path, **kwargs) -> SegmentationDataModule:
    """Whole images, no augmentation, no worker processes unless a test asks."""
    options = {"crop_size": None, "base_size": None, "hflip": False, "num_workers": 0, **kwargs}
    return SegmentationDataModule(root=str(root), **options)


def save_mask(values: np.ndarray, path: Path) -> None:
    """A VOC-style palette PNG of class indices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = Image.fromarray(values.astype(np.uint8), mode="P")
    mask.putpalette(voc_palette())
    mask.save(path)


def add_pair(root: Path, split: str, name: str, image: np.ndarray, mask: np.ndarray, ext: str = ".png") -> Path:
    """root/<split>/images/<name><ext> and its mask root/<split>/masks/<name>.png; returns the image path."""
    image_path = root / split / "images" / f"{name}{ext}"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.astype(np.uint8), mode="RGB").save(image_path)
    save_mask(mask, root / split / "masks" / f"{name}.png")
    return image_path


def random_pair(rng: np.random.Generator, height: int = 16, width: int = 16) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, (height, width, 3)), rng.integers(0, 4, (height, width))


def folder_tree(root: Path, train: int = 3, val: int = 1, seed: int = 0) -> Path:
    """Folder pairs of random 16 px images with 4 classes; class_names.txt written."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for index in range(count):
            add_pair(root, split, f"{split}{index}", *random_pair(rng))
    (root / "class_names.txt").write_text("bg\na\nb\nc\n")
    return root


def first_batch(dm: SegmentationDataModule, split: str = "val") -> dict:
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "predict": dm.predict_dataloader}[split]()
    return dm.on_before_batch_transfer(next(iter(loader)), 0)


def test_voc_layout_reads_what_torchvision_reads(tmp_path):
    root = voc_tree(tmp_path)
    dm = make(root)
    assert dm.class_names == ["background", "circle", "square", "triangle"] and dm.num_classes == 4
    dm.setup("fit")
    ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    train = dm.datasets["train"]
    assert [name for _, _, name in train.samples] == ids and len(dm.datasets["val"]) == 2
    reference = VOCSegmentation(root=str(tmp_path), year="2012", image_set="train")
    assert len(reference) == len(ids) == 4
    ours = dm.dataset(train.samples)  # the evaluation transform over the train samples
    for index, (image, target) in enumerate(reference):
        item = ours[index]
        assert item["name"] == ids[index] and item["error"] == ""
        expected = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(item["image"] * STD + MEAN, expected, atol=1e-5, rtol=0)
        assert torch.equal(item["mask"], torch.from_numpy(np.array(target)).long())
        assert item["mask"].max() > 0  # every scene holds a shape


def test_voc_without_class_names_file_defaults_to_the_voc_classes(tmp_path):
    root = voc_tree(tmp_path)
    (root / "class_names.txt").unlink()
    dm = make(root)
    assert dm.class_names == VOC_CLASS_NAMES and dm.num_classes == 21
    dm = make(root, class_names=["bg", "round", "box", "tri"])
    assert dm.class_names == ["bg", "round", "box", "tri"] and dm.num_classes == 4


def test_folder_pairs_with_nested_names(tmp_path):
    root = tmp_path / "pairs"
    rng = np.random.default_rng(0)
    add_pair(root, "train", "a", *random_pair(rng), ext=".jpg")
    add_pair(root, "train", "sub/b", *random_pair(rng, 12, 20))
    val_image, val_mask = random_pair(rng)
    add_pair(root, "val", "c", val_image, val_mask)
    with pytest.raises(DataError, match=re.escape(str(root / "class_names.txt"))):
        make(root)
    (root / "class_names.txt").write_text("bg\na\nb\nc\n")
    dm = make(root)
    assert dm.layout == "folders" and dm.num_classes == 4
    dm.setup("fit")
    assert [name for _, _, name in dm.datasets["train"].samples] == ["a", "sub/b"]
    assert dm.datasets["train"].samples[1][1] == str(root / "train" / "masks" / "sub" / "b.png")
    assert dm.datasets["train"][1]["image"].shape == (3, 12, 20)
    batch = first_batch(dm)
    assert batch["name"] == ["c"] and torch.equal(batch["mask"][0], torch.from_numpy(val_mask).long())


def test_folder_pairs_without_val_hold_out_a_seeded_split(tmp_path):
    root = folder_tree(tmp_path / "pairs", train=6, val=0)
    splits = []
    for _ in range(2):
        dm = make(root, val_fraction=0.34, split_seed=1)
        dm.setup("fit")
        splits.append([name for _, _, name in dm.datasets["val"].samples])
    assert splits[0] == splits[1] and len(splits[0]) == 2
    train = [name for _, _, name in dm.datasets["train"].samples]
    assert len(train) == 4 and not set(train) & set(splits[0])


def striped_pair(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of classes 0-3, asymmetric in both axes; red = 60 x class, green and blue 0."""
    x_band = np.searchsorted([10, 24, 42], np.arange(size), side="right")
    y_band = np.searchsorted([20], np.arange(size), side="right")
    mask = (x_band[None, :] + 2 * y_band[:, None]) % 4
    image = np.zeros((size, size, 3))
    image[..., 0] = 60 * mask
    return image, mask


def interior(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3 x 3 neighbourhood holds one mask value (away from edges where interpolation blends)."""
    padded = torch.nn.functional.pad(mask[None, None].float(), (1, 1, 1, 1), mode="replicate")
    windows = torch.nn.functional.unfold(padded, 3).view(9, *mask.shape)
    return (windows == windows[4]).all(0)


@pytest.mark.parametrize("scale_range", [(0.5, 2.0), (0.5, 0.5)])
def test_training_transform_keeps_image_and_mask_aligned(tmp_path, scale_range):
    root = tmp_path / "pairs"
    add_pair(root, "train", "stripes", *striped_pair())
    add_pair(root, "train", "other", *striped_pair())
    (root / "class_names.txt").write_text("bg\na\nb\nc\n")
    dm = make(root, crop_size=64, base_size=64, scale_range=scale_range, hflip=True, val_fraction=0.5)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    padded_seen = 0
    for seed in range(6):
        torch.manual_seed(seed)
        item = dataset[0]
        image, mask = item["image"] * STD + MEAN, item["mask"]
        assert image.shape == (3, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= {0, 1, 2, 3, 255}
        padding = mask == 255
        # The pad is the mean colour (green 116/255); the scene has no green: pad and void coincide exactly.
        assert torch.equal(padding, image[1] > 0.2)
        labelled = ~padding & interior(mask)
        decoded = (image[0] * 255 / 60).round().long()
        agree = (decoded[labelled] == mask[labelled]).float().mean()
        assert labelled.sum() > 200 and agree >= 0.98, (seed, float(agree))
        padded_seen += int(padding.any())
        if scale_range == (0.5, 0.5):  # 64 px scaled to 32 px inside a 64 px crop: exactly 3/4 is padding
            assert int(padding.sum()) == 64 * 64 - 32 * 32
    assert padded_seen > 0


def test_eval_batches_pad_images_with_zero_and_masks_with_void(tmp_path):
    root = tmp_path / "pairs"
    rng = np.random.default_rng(0)
    sizes = [(20, 30), (28, 16)]
    masks = []
    for index, (height, width) in enumerate(sizes):
        image, mask = random_pair(rng, height, width)
        add_pair(root, "train", f"t{index}", image, mask)
        add_pair(root, "val", f"v{index}", np.maximum(image, 200), mask)  # bright: never the mean colour
        masks.append(mask)
    (root / "class_names.txt").write_text("bg\na\nb\nc\n")
    dm = make(root, eval_batch_size=2)
    dm.setup("fit")
    batch = first_batch(dm)
    assert batch["image"].shape == (2, 3, 28, 30) and batch["mask"].shape == (2, 28, 30)
    assert batch["size"] == sizes and batch["name"] == ["v0", "v1"]
    for index, (height, width) in enumerate(sizes):
        image, mask = batch["image"][index], batch["mask"][index]
        assert torch.equal(mask[:height, :width], torch.from_numpy(masks[index]).long())
        assert (mask[height:] == 255).all() and (mask[:, width:] == 255).all()
        assert (image[:, height:] == 0).all() and (image[:, :, width:] == 0).all()
        assert (image[:, :height, :width] != 0).all()


def test_mask_size_mismatch_is_raised_in_the_main_process(tmp_path):
    root = folder_tree(tmp_path / "pairs")
    bad = root / "val" / "masks" / "val0.png"
    save_mask(np.zeros((15, 16)), bad)
    dm = make(root, num_workers=1)  # decoded in a worker, raised by on_before_batch_transfer
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    with pytest.raises(DataError, match=rf"mask {re.escape(str(bad))} is 16x15 pixels but its image .*16x16") as info:
        dm.on_before_batch_transfer(batch, 0)
    assert "DataLoader worker" not in str(info.value)


def test_mask_values_outside_the_classes_are_named(tmp_path):
    root = folder_tree(tmp_path / "pairs")
    bad = root / "val" / "masks" / "val0.png"
    values = np.zeros((16, 16))
    values[2, 3], values[5, 5] = 7, 255  # 255 is void, allowed; 7 is not a class of 4
    save_mask(values, bad)
    dm = make(root)
    dm.setup("fit")
    with pytest.raises(DataError, match=rf"mask {re.escape(str(bad))} holds values \[7\] outside 0..3"):
        first_batch(dm)


def test_split_list_naming_a_missing_image_fails_at_setup(tmp_path):
    root = voc_tree(tmp_path)
    listing = root / "ImageSets" / "Segmentation" / "train.txt"
    listing.write_text(listing.read_text() + "\nnope\n")  # a blank line 5 is skipped; "nope" is line 6
    missing = root / "JPEGImages" / "nope.jpg"
    with pytest.raises(DataError, match=re.escape(f"{listing} line 6 names 'nope', but {missing} does not exist")):
        make(root).setup("fit")


def test_rgb_mask_is_not_class_indices(tmp_path):
    root = folder_tree(tmp_path / "pairs")
    bad = root / "val" / "masks" / "val0.png"
    Image.new("RGB", (16, 16), (128, 0, 0)).save(bad)
    dm = make(root)
    dm.setup("fit")
    with pytest.raises(DataError, match=rf"mask {re.escape(str(bad))} is a mode-RGB image, not class indices"):
        first_batch(dm)


def test_missing_root_and_unknown_layout(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"data root {tmp_path / 'nowhere'} does not exist")):
        make(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"neither a VOC layout .* nor image/mask folder pairs"):
        make(tmp_path / "empty")
    voc = voc_tree(tmp_path)
    with pytest.raises(DataError, match=re.escape(f"a VOC tree is at {voc}: pass that folder as data.root")):
        make(tmp_path)


def test_skip_corrupt_mask_takes_the_next_sample(tmp_path):
    root = folder_tree(tmp_path / "pairs", train=2, val=2)
    bad = root / "val" / "masks" / "val0.png"
    bad.write_bytes(b"\x89PNG garbage")
    dm = make(root)
    dm.setup("fit")
    with pytest.raises(DataError, match=rf"cannot decode mask {re.escape(str(bad))}"):
        first_batch(dm)
    dm = make(root, skip_corrupt=True)
    dm.setup("fit")
    batch = first_batch(dm)
    assert batch["name"] == ["val1"] and len(batch["skipped"]) == 1
    assert batch["skipped"][0].startswith(f"cannot decode mask {root / 'val' / 'masks' / 'val0.png'}")


def test_predict_uses_test_then_val_then_predict_dir(tmp_path):
    with_test = voc_tree(tmp_path / "a", num_test=2)
    dm = make(with_test)
    dm.setup("predict")
    test_ids = (with_test / "ImageSets" / "Segmentation" / "test.txt").read_text().split()
    assert [name for _, _, name in dm.datasets["predict"].samples] == test_ids == ["000007", "000008"]
    batch = first_batch(dm, "predict")
    assert "mask" not in batch and batch["image"].shape == (1, 3, 64, 64) and batch["name"] == ["000007"]

    without_test = voc_tree(tmp_path / "b")
    dm = make(without_test)
    dm.setup("predict")
    assert dm.datasets["predict"].samples == [(image, None, name) for image, _, name in dm.datasets["val"].samples]

    loose = tmp_path / "loose"
    (loose / "deep").mkdir(parents=True)
    Image.new("RGB", (10, 12)).save(loose / "deep" / "x.jpg")
    (loose / "notes.txt").write_text("-")
    dm = make(without_test, predict_dir=str(loose))
    dm.setup("predict")
    assert dm.datasets["predict"].samples == [(str(loose / "deep" / "x.jpg"), None, "deep/x")]
    assert first_batch(dm, "predict")["size"] == [(12, 10)]
    with pytest.raises(DataError, match=re.escape(f"predict_dir {tmp_path / 'missing'} does not exist")):
        make(without_test, predict_dir=str(tmp_path / "missing")).setup("predict")


def test_embedded_shapes_are_generated_by_prepare_data(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes, "DEFAULT_TRAIN", 4)
    monkeypatch.setattr(shapes, "DEFAULT_VAL", 2)
    monkeypatch.setattr(shapes, "DEFAULT_TEST", 2)
    dm = SegmentationDataModule(cache_dir=str(tmp_path), num_workers=0)
    assert dm.root == tmp_path / "shapes" and dm.class_names == CLASS_NAMES and dm.num_classes == 4
    with pytest.raises(DataError, match="call prepare_data"):
        dm.setup("fit")
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == 2
    assert len(dm.test_dataloader().dataset) == 2
    batch = first_batch(dm)
    assert batch["image"].shape == (1, 3, 128, 128) and set(batch["mask"].unique().tolist()) <= {0, 1, 2, 3}


def test_check_lists_every_bad_mask_before_a_run(tmp_path):
    """data.check() decodes every split and names each bad file, where a run would stop at the first one."""
    root = folder_tree(tmp_path / "pairs", train=4, val=2)
    wrong_size, wrong_values = root / "train" / "masks" / "train1.png", root / "val" / "masks" / "val1.png"
    save_mask(np.zeros((15, 16)), wrong_size)
    values = np.zeros((16, 16))
    values[0, 0] = 9
    save_mask(values, wrong_values)
    problems = make(root, num_workers=0).check()
    assert len(problems) == 2
    assert problems[0].startswith(f"train: mask {wrong_size} is 16x15 pixels")
    assert problems[1].startswith(f"val: mask {wrong_values} holds values [9] outside 0..3")
    save_mask(np.zeros((16, 16)), wrong_size)
    save_mask(np.zeros((16, 16)), wrong_values)
    assert make(root, num_workers=0).check() == []
