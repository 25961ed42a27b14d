"""Every DataModule describes its data once (``spec``), and rebuilds its evaluation preprocessing for prediction."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES, make_image_tree
from PIL import Image

from lit_models.datamodules.adding import AddingProblemDataModule
from lit_models.datamodules.array import ArrayDataModule
from lit_models.datamodules.detection import DetectionDataModule
from lit_models.datamodules.files import DataError
from lit_models.datamodules.image_folder import ImageFolderDataModule
from lit_models.datamodules.mnist1d import MNIST1DDataModule
from lit_models.datamodules.segmentation import SegmentationDataModule
from lit_models.datamodules.sources.shapes import CLASS_NAMES as SHAPES
from lit_models.datamodules.spec import DataSpec
from lit_models.datamodules.text import TextDataModule
from lit_models.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

TEXT = "the quick brown fox jumps over the lazy dog\n" * 40


def test_image_specs_are_known_after_init_without_decoding(image_tree, shapes_tree):
    for path in (image_tree / "train").rglob("*.png"):
        path.write_bytes(b"not an image")  # a spec must not open any image
    small = ImageFolderDataModule(root=str(image_tree), preset="small", image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert small.spec == DataSpec("classification", "images", CLASSES, 16, "resize", (0.5,) * 3, (0.25,) * 3)
    assert ImageFolderDataModule(root=str(image_tree)).spec.resize == "center_crop"  # preset imagenet

    segmentation = SegmentationDataModule(root=str(shapes_tree), crop_size=48).spec
    assert segmentation == DataSpec("segmentation", "images", SHAPES, 48, "keep", IMAGENET_MEAN, IMAGENET_STD)
    detection = DetectionDataModule(root=str(shapes_tree), image_size=32, proposals="fast").spec
    assert (detection.task, detection.class_names, detection.image_size) == ("detection", tuple(SHAPES), 32)
    assert (detection.resize, detection.proposals) == ("resize", "fast")
    plain = DetectionDataModule(root=str(shapes_tree)).spec
    assert (plain.image_size, plain.resize, plain.proposals) == (None, "keep", None)


def test_sequence_specs(tmp_path):
    assert MNIST1DDataModule().spec == DataSpec("classification", "features", [str(d) for d in range(10)],
                                                 input_size=1, seq_len=40)  # fmt: skip
    assert AddingProblemDataModule(length=30).spec == DataSpec("regression", "features", ["sum"], input_size=2,
                                                               seq_len=30)  # fmt: skip
    np.savez(tmp_path / "fixed.npz", x=np.ones((4, 7, 3)), y=np.array([0, 1, 2, 1]))
    fixed = ArrayDataModule(str(tmp_path / "fixed.npz")).spec
    assert (fixed.task, fixed.class_names, fixed.input_size, fixed.seq_len) == ("classification", ("0", "1", "2"), 3, 7)
    np.savez(tmp_path / "ragged.npz", x=np.ones((4, 7)), y=np.zeros((4, 2)), lengths=np.array([7, 3, 7, 7]))
    ragged = ArrayDataModule(str(tmp_path / "ragged.npz"), task="regression").spec
    assert (ragged.class_names, ragged.input_size, ragged.seq_len) == (("y0", "y1"), 1, None)  # lengths differ

    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    words = TextDataModule(str(text), level="word", seq_len=5).spec
    assert (words.task, words.inputs, words.seq_len, words.level) == ("language_model", "tokens", 5, "word")
    assert words.class_names[:2] == ("<unk>", "<eos>") and "fox" in words.class_names


def picture(seed: int = 0, size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("preset", ["imagenet", "small"])
def test_spec_preprocess_is_the_image_folders_evaluation_transform(image_tree, preset):
    dm = ImageFolderDataModule(root=str(image_tree), preset=preset, image_size=16, num_workers=0)
    image = picture()
    expected = dm.images_dataset([image])[0]["image"]  # what a predict batch holds
    assert expected.shape == (3, 16, 16)
    assert torch.equal(dm.spec.preprocess()(image), expected)
    saved = DataSpec.from_dict(dm.spec.to_dict())  # as a checkpoint carries it
    assert torch.equal(saved.preprocess()(image), expected)


def test_spec_preprocess_is_the_segmentation_and_detection_evaluation_transform(shapes_tree):
    image = picture()
    for dm in (
        SegmentationDataModule(root=str(shapes_tree), num_workers=0),
        DetectionDataModule(root=str(shapes_tree), num_workers=0),
        DetectionDataModule(root=str(shapes_tree), image_size=24, num_workers=0),
    ):
        expected = dm.images_dataset([image])[0]["image"]
        assert expected.shape[-2:] == ((24, 24) if dm.spec.image_size == 24 else (30, 40))
        assert torch.equal(dm.spec.preprocess()(image), expected)


def first(data) -> dict:
    data.prepare_data()
    data.setup("predict")
    return data.on_before_batch_transfer(next(iter(data.predict_dataloader())), 0)


def test_image_prediction_data_after_fit_and_from_a_checkpoint_without_the_training_data(tmp_path):
    root = make_image_tree(tmp_path / "photos", {"train": 3, "val": 1})
    photos = tmp_path / "new"
    photos.mkdir()
    for index in range(3):
        picture(index).save(photos / f"{index}.png")
    trained = ImageFolderDataModule(root=str(root), preset="small", image_size=16, batch_size=8, num_workers=0)
    trained.setup("fit")
    after_fit = trained.prediction_data(str(photos), batch_size=2)
    assert type(after_fit) is ImageFolderDataModule and after_fit.spec == trained.spec
    batch = first(after_fit)
    assert batch["image"].shape == (2, 3, 16, 16) and [Path(p).name for p in batch["path"]] == ["0.png", "1.png"]

    hparams, names = dict(trained.hparams), list(trained.class_names)
    shutil.rmtree(root)  # a checkpoint predicts on another machine: the training data is not there
    rebuilt = ImageFolderDataModule.from_checkpoint(hparams, names)
    assert rebuilt.spec == trained.spec
    again = first(rebuilt.prediction_data(str(photos / "*.png"), batch_size=2))
    assert torch.equal(again["image"], batch["image"])


def test_sequence_prediction_data_reads_files_with_the_models_classes(tmp_path):
    np.savez(tmp_path / "new.npz", x=np.ones((3, 40)))
    mnist = MNIST1DDataModule(batch_size=2)  # nothing generated: prediction reads only the file
    data = mnist.prediction_data(str(tmp_path / "new.npz"))
    assert type(data) is ArrayDataModule and data.spec == mnist.spec
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert batch["inputs"].shape == (2, 40, 1) and batch["index"].tolist() == [0, 1]

    rebuilt = AddingProblemDataModule.from_checkpoint(dict(AddingProblemDataModule().hparams), ["sum"])
    assert (rebuilt.task, rebuilt.class_names) == ("regression", ["sum"])
    csv = tmp_path / "steps.csv"
    csv.write_text("0.5,0,0.25,1\n0.1,1,0.2,0\n")  # two steps of (value, marker) per line
    assert rebuilt.prediction_data(str(csv)).spec.input_size == 2
    with pytest.raises(DataError, match="one NPZ or CSV file"):
        rebuilt.prediction_data([str(csv), str(csv)])


def test_text_prediction_data_serves_prompts_with_the_trained_vocabulary(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    trained = TextDataModule(str(path), seq_len=8, batch_size=2)
    vocabulary = trained.class_names
    path.unlink()
    rebuilt = TextDataModule.from_checkpoint(dict(trained.hparams), vocabulary)
    assert rebuilt.spec == trained.spec and rebuilt.prompts == []
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the fox\n\nlazy\n")
    data = rebuilt.prediction_data([str(prompts), "dog"])
    assert [batch["text"] for batch in data.predict_dataloader()] == ["the fox", "lazy", "dog"]
    assert data.decode(data.encode("the lazy dog")) == "the lazy dog"


def test_every_datamodule_names_a_split_it_does_not_have(tmp_path):
    with pytest.raises(DataError, match=r"no train split: call setup\(\) first"):
        MNIST1DDataModule().train_dataloader()
    with pytest.raises(DataError, match=r"no test split: .*nope/test does not exist"):
        root = make_image_tree(tmp_path / "nope", {"train": 2, "val": 1})
        dm = ImageFolderDataModule(root=str(root), num_workers=0)
        dm.setup("fit")
        dm.test_dataloader()
    with pytest.raises(DataError, match=r"call setup\(\) before asking for a dataloader"):
        TextDataModule(seq_len=4).val_dataloader()
