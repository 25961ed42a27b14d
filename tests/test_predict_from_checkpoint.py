"""A checkpoint copied alone into an empty folder predicts on images the training never saw: from the command line
(``lit-models predict CHECKPOINT INPUTS``) and from Python (``lit_models.load(...).predict(...)``)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_tree, run_cli
from families import TEXT, classifier, detector, fit_and_save, language_model, segmenter, sequence_classifier
from PIL import Image

import lit_models
from lit_models.datamodules.files import DataError
from lit_models.datamodules.sources import shapes

FAMILIES = {"classification": classifier, "segmentation": segmenter, "detection": detector}


def train_and_move(family: str, tmp_path: Path) -> Path:
    """Fit on data under tmp_path, keep only the checkpoint, in a new folder, and delete the data."""
    data_root = tmp_path / "training"
    if family == "classification":
        make_image_tree(data_root, {"train": 4, "val": 2})
    else:
        shapes.export_shapes(data_root, 4, 2, 0)
    torch.manual_seed(0)
    alone = fit_and_save(*FAMILIES[family](data_root), tmp_path)
    shutil.rmtree(data_root)
    return alone


def new_images(folder: Path) -> Path:
    """Three images no training saw, in sub-folders, of other sizes."""
    rng = np.random.default_rng(7)
    for index, size in enumerate([(40, 30), (50, 50), (36, 64)]):
        path = folder / f"set{index % 2}" / f"photo{index}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return folder


@pytest.mark.parametrize("family", FAMILIES)
def test_a_checkpoint_alone_predicts_from_the_command_line_and_from_python(family, tmp_path, one_thread):
    checkpoint = train_and_move(family, tmp_path)
    photos = new_images(tmp_path / "photos")
    names = lit_models.load(checkpoint, device="cpu").class_names

    run_cli("predict", str(checkpoint), str(photos), "--output", "out", cwd=checkpoint.parent)
    out = checkpoint.parent / "out"
    if family == "classification":
        rows = list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))
        assert sorted(Path(row["path"]).name for row in rows) == ["photo0.jpg", "photo1.jpg", "photo2.jpg"]
        assert {row["class_1"] for row in rows} <= set(names) and (out / "predictions.png").is_file()
    elif family == "segmentation":
        masks = sorted(
            p.relative_to(out / "predictions" / "masks") for p in (out / "predictions" / "masks").rglob("*.png")
        )
        assert masks == [Path("set0/photo0.png"), Path("set0/photo2.png"), Path("set1/photo1.png")]
        assert Image.open(out / "predictions" / "masks" / "set1" / "photo1.png").size == (50, 50)
    else:
        records = json.loads((out / "predictions" / "detections.json").read_text())
        assert [record["name"] for record in records] == ["set0/photo0", "set0/photo2", "set1/photo1"]
        assert all(d["label"] in names for record in records for d in record["detections"])
    with pytest.raises(AssertionError):  # an output that holds predictions is not overwritten
        run_cli("predict", str(checkpoint), str(photos), "--output", "out", cwd=checkpoint.parent)

    model = lit_models.load(checkpoint, device="cpu")
    assert not model.training and model.device.type == "cpu" and isinstance(model.net, torch.nn.Module)
    from_files = model.predict(str(photos / "*" / "*.jpg"))
    picture = Image.open(photos / "set1" / "photo1.jpg")
    from_memory = model.predict([picture, torch.from_numpy(np.array(picture)).permute(2, 0, 1)])
    assert len(from_files) == 3 and len(from_memory) == 2
    first = next(result for result in from_files if result["path"].endswith("photo1.jpg"))
    if family == "classification":
        assert first["classes"][0] in names and first["probs"] == pytest.approx(from_memory[0]["probs"], abs=1e-4)
    elif family == "segmentation":
        assert first["mask"].shape == (50, 50) and torch.equal(first["mask"], from_memory[1]["mask"])
    else:
        assert set(first["names"]) <= set(names) and torch.allclose(first["boxes"], from_memory[0]["boxes"])
    network_input = model.preprocess(picture)  # the plain-torch pieces, without Lightning
    assert isinstance(network_input, torch.Tensor) and network_input.dtype == torch.float32


def test_a_module_predicts_straight_after_fit_and_an_older_checkpoint_still_loads(tmp_path, one_thread):
    make_image_tree(tmp_path / "training", {"train": 4, "val": 2})
    torch.manual_seed(0)
    model, data = classifier(tmp_path / "training")
    checkpoint = fit_and_save(model, data, tmp_path)
    photos = new_images(tmp_path / "photos")
    fresh = model.predict(str(photos))  # neither saved nor loaded: the DataModule it trained on rebuilds the input
    for mode in ("RGBA", "L", "P"):  # any image a user has, converted as the files are
        assert model.preprocess(Image.new(mode, (30, 20))).shape == (3, 16, 16)
    mixed = model.predict([Image.new("RGBA", (40, 40)), str(photos / "set1" / "photo1.jpg")])  # in input order
    assert [record.path for record in mixed] == ["", str((photos / "set1" / "photo1.jpg").resolve())]
    assert [r.classes for r in lit_models.load(checkpoint, device="cpu").predict(str(photos))] == [
        r.classes for r in fresh
    ]
    # Written before checkpoints carried the data's description, naming classes by their module paths.
    saved = torch.load(checkpoint, weights_only=True)
    saved["lit_models"] = {"version": "0.1.0", "model": "lit_models.classification.ResNet",
                           "data": "lit_models.datamodules.image_folder.ImageFolderDataModule"}  # fmt: skip
    torch.save(saved, tmp_path / "older.ckpt")
    older = lit_models.load(tmp_path / "older.ckpt", device="cpu")
    assert older.data_spec == model.data_spec == data.spec
    assert [r.classes for r in older.predict(str(photos))] == [r.classes for r in fresh]
    # A checkpoint is data: one naming code lit-models does not provide is refused, and nothing is imported.
    saved["lit_models"]["model"] = "os.system"
    torch.save(saved, tmp_path / "foreign.ckpt")
    with pytest.raises(DataError, match="'os.system' is not one of lit-models'"):
        lit_models.load(tmp_path / "foreign.ckpt")


def test_what_is_not_a_lit_models_checkpoint_or_an_image_says_so(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(DataError, match="was not written by lit-models"):
        lit_models.load(tmp_path / "foreign.ckpt")
    with pytest.raises(DataError, match="does not exist"):
        lit_models.load(tmp_path / "missing.ckpt")
    with pytest.raises(AssertionError, match=r"\nerror: .*foreign.ckpt was not written by lit-models"):
        run_cli("predict", str(tmp_path / "foreign.ckpt"), str(tmp_path), cwd=tmp_path)


def test_a_language_model_checkpoint_alone_continues_prompts(tmp_path, one_thread):
    torch.manual_seed(0)
    checkpoint = fit_and_save(*language_model(tmp_path), tmp_path)
    (tmp_path / "book.txt").unlink()  # the training text is gone
    (checkpoint.parent / "prompts.txt").write_text("a truth\n\nman in\n", encoding="utf-8")

    run_cli("predict", str(checkpoint), "It is", "prompts.txt", "--output", "out", cwd=checkpoint.parent)
    written = (checkpoint.parent / "out" / "predictions" / "generated.txt").read_text(encoding="utf-8")
    assert [line for line in written.splitlines() if line.startswith("=== prompt")] == [
        "=== prompt: 'It is'", "=== prompt: 'a truth'", "=== prompt: 'man in'"
    ]  # fmt: skip
    # Greedy (temperature 0) and 5 tokens: the same continuation every time, as long as asked.
    for output in ("greedy", "greedy_again"):
        args = ("It is", "--output", output, "--temperature", "0", "--generate_length", "5")
        run_cli("predict", str(checkpoint), *args, cwd=checkpoint.parent)
    greedy, again = (checkpoint.parent / o / "predictions" / "generated.txt" for o in ("greedy", "greedy_again"))
    written = greedy.read_text(encoding="utf-8")
    assert written == again.read_text(encoding="utf-8")
    continuation = written.split("\n", 1)[1].removeprefix("It is").removesuffix("\n\n")
    assert len(continuation.replace("<unk>", "?")) == 5

    loaded = lit_models.load(checkpoint, device="cpu")
    results = loaded.predict(["It is", "fortune"])
    assert [result["prompt"] for result in results] == ["It is", "fortune"]
    for result in results:  # generate_length tokens of the training vocabulary ("<unk>" one of them)
        assert len(result["generated"].replace("<unk>", "?")) == loaded.generate_length
        assert set(result["generated"].replace("<unk>", "")) <= set(TEXT)
    with pytest.raises(DataError, match=r"holds characters \['Z'\] that are not in the vocabulary"):
        loaded.predict("Zebra")


def test_a_sequence_classifier_checkpoint_alone_predicts_on_an_array_file(tmp_path, one_thread):
    torch.manual_seed(0)
    checkpoint = fit_and_save(*sequence_classifier(tmp_path), tmp_path)
    (tmp_path / "signs.npz").unlink()
    new = np.random.default_rng(3).normal(0, 1, (5, 7, 1)).astype(np.float32)  # unlabelled, another length
    np.savez(checkpoint.parent / "new.npz", x=new)

    run_cli("predict", str(checkpoint), "new.npz", "--output", "out", cwd=checkpoint.parent)
    rows = list(csv.reader((checkpoint.parent / "out" / "predictions" / "predictions.csv").read_text().splitlines()))
    assert len(rows) == 1 + 5

    loaded = lit_models.load(checkpoint, device="cpu")
    results = loaded.predict(checkpoint.parent / "new.npz")
    assert [result["index"] for result in results] == [0, 1, 2, 3, 4]
    assert all(result["classes"][0] in loaded.class_names and len(result["probs"]) == 2 for result in results)
    np.savez(checkpoint.parent / "wide.npz", x=np.zeros((2, 7, 3), np.float32))
    with pytest.raises(ValueError, match="with input_size 1, but the data serves .* with input_size 3"):
        loaded.predict(checkpoint.parent / "wide.npz")


def test_a_region_proposal_detector_checkpoint_alone_searches_the_new_images(tmp_path, one_thread, monkeypatch):
    monkeypatch.setenv("LIT_MODELS_CACHE", str(tmp_path / "cache"))
    shapes.export_shapes(tmp_path / "VOC", num_train=4, num_val=2, num_test=0, size=64)
    options = {"proposals": "fast", "proposal_width": None, "num_workers": 0, "batch_size": 2}
    data = lit_models.DetectionDataModule(str(tmp_path / "VOC"), proposal_dir=str(tmp_path / "proposals"), **options)
    model = lit_models.FastRCNN(num_classes=data.num_classes, backbone="resnet18", width_mult=0.125,
                                representation_size=32, min_size=None)  # fmt: skip
    torch.manual_seed(0)
    checkpoint = fit_and_save(model, data, tmp_path)
    shutil.rmtree(tmp_path / "VOC")
    shutil.rmtree(tmp_path / "proposals")
    photos = new_images(tmp_path / "photos")

    loaded = lit_models.load(checkpoint, device="cpu")
    results = loaded.predict(photos)
    assert len(results) == 3 and all(set(result["names"]) <= set(loaded.class_names) for result in results)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 3  # the new images' proposals, cached
    assert not (tmp_path / "cache" / "shapes" / "JPEGImages").exists()  # no embedded data was generated
    in_memory = loaded.predict(Image.open(photos / "set1" / "photo1.jpg"))
    assert torch.allclose(in_memory[0]["boxes"], next(r for r in results if r["name"] == "set1/photo1")["boxes"])
