"""The prediction writers of each family, fed what its predict_step returns: files, their content, and the refusal
to overwrite what is already there."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from lit_models.predictions import BoxPrediction, ClassPrediction, MaskPrediction, TextPrediction, ValuesPrediction
from lit_models.writers import ClassificationWriter, DetectionWriter, SegmentationWriter, SequenceWriter


def one_process(log_dir: Path, **datamodule) -> SimpleNamespace:
    """What the writers read of a trainer in a single process."""
    return SimpleNamespace(world_size=1, global_rank=0, is_global_zero=True, log_dir=str(log_dir),
                           strategy=SimpleNamespace(barrier=lambda: None),
                           datamodule=SimpleNamespace(**datamodule))  # fmt: skip


def images(folder: Path, count: int, size: int = 20) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        Image.fromarray(np.full((size, size, 3), 40 * index, np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_a_writer_refuses_to_overwrite_unless_told(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("the user's")
    trainer = one_process(tmp_path)
    with pytest.raises(FileExistsError, match="out already exists.*--overwrite"):
        SegmentationWriter(output=str(tmp_path / "out")).on_predict_start(trainer, None)
    SegmentationWriter(output=str(tmp_path / "out"), overwrite=True).on_predict_start(trainer, None)
    assert (tmp_path / "out" / "mine.txt").read_text() == "the user's"
    writer = SegmentationWriter()  # default: predictions/ in the run folder, which is still empty
    writer.on_predict_start(trainer, None)
    assert writer.path == tmp_path / "predictions"


def test_classification_csv_is_sorted_by_path_with_names_and_probabilities(tmp_path):
    paths = images(tmp_path / "new", 3)
    writer = ClassificationWriter(output=str(tmp_path / "out.csv"), grid=2)
    writer.on_predict_start(one_process(tmp_path), None)
    names = ["cat", "dog"]

    def record(path, indices, probs):
        return ClassPrediction(path=path, name=path, classes=[names[i] for i in indices], indices=indices, probs=probs)

    batches = [
        [record(paths[2], [1, 0], [0.9, 0.1])],
        [record(paths[0], [0, 1], [0.6, 0.4]), record(paths[1], [1, 0], [0.7, 0.3])],
    ]
    writer.write_on_epoch_end(one_process(tmp_path), SimpleNamespace(class_names=names), [batches], [])
    with open(tmp_path / "out.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "class_1", "prob_1", "class_2", "prob_2"]
    assert [row[:3] for row in rows[1:]] == [[paths[0], "cat", "0.600000"], [paths[1], "dog", "0.700000"],
                                             [paths[2], "dog", "0.900000"]]  # fmt: skip
    assert Image.open(tmp_path / "out.png").size[0] > 100  # the first 2, captioned


def test_segmentation_masks_read_back_as_class_indices_beside_overlays(tmp_path):
    paths = images(tmp_path / "new", 2)
    writer = SegmentationWriter(output=str(tmp_path / "out"))
    writer.on_predict_start(one_process(tmp_path), None)
    masks = [torch.zeros(20, 20, dtype=torch.uint8) for _ in paths]
    masks[1][5:10, 5:15] = 3
    prediction = [MaskPrediction(path=p, name=n, mask=m) for p, n, m in zip(paths, "ab", masks, strict=True)]
    writer.write_on_batch_end(one_process(tmp_path), None, prediction, None, None, 0, 0)
    for name, mask in zip("ab", masks, strict=True):
        saved = Image.open(tmp_path / "out" / "masks" / f"{name}.png")
        assert saved.mode == "P" and np.array_equal(np.array(saved), mask.numpy())  # VOC's palette PNG
        assert Image.open(tmp_path / "out" / "overlays" / f"{name}.png").size == (20, 20)
    overlay = np.array(Image.open(tmp_path / "out" / "overlays" / "b.png"))
    assert (overlay[7, 7] != overlay[0, 0]).any() and (overlay[0, 0] == 40).all()  # only the class is painted


def test_detection_json_lists_every_detection_and_draws_the_confident_ones(tmp_path):
    paths = images(tmp_path / "new", 2, size=40)
    writer = DetectionWriter(output=str(tmp_path / "out"), draw_score=0.5)
    trainer = one_process(tmp_path)
    writer.on_predict_start(trainer, None)
    prediction = [
        BoxPrediction(path=paths[1], name="1", boxes=torch.tensor([[2.0, 2.0, 30.0, 30.0], [1.0, 1.0, 5.0, 5.0]]),
                      scores=torch.tensor([0.9, 0.2]), labels=torch.tensor([2, 1]), names=["dog", "cat"]),
        BoxPrediction(path=paths[0], name="0", boxes=torch.zeros(0, 4), scores=torch.zeros(0),
                      labels=torch.zeros(0, dtype=torch.int64), names=[]),
    ]  # fmt: skip
    module = SimpleNamespace(display_names=["background", "cat", "dog"])
    writer.write_on_batch_end(trainer, module, prediction, None, None, 0, 0)
    writer.on_predict_end(trainer, module)
    records = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [record["path"] for record in records] == paths  # sorted
    found = records[1]["detections"]
    assert [(d["label"], d["label_index"], d["score"]) for d in found] == [("dog", 2, 0.9), ("cat", 1, 0.2)]
    assert found[0]["box"] == [2.0, 2.0, 30.0, 30.0] and records[0]["detections"] == []
    drawn = np.array(Image.open(tmp_path / "out" / "images" / "1.png"))
    assert (drawn[2, 2:30] != 40).any() and (drawn[1, 1] == 40).all()  # the 0.9 box drawn, not the 0.2 one


def test_sequence_writer_tables_and_generated_text(tmp_path):
    trainer = one_process(tmp_path)
    writer = SequenceWriter(output=str(tmp_path / "cls"))
    writer.on_predict_start(trainer, None)
    records = [
        ClassPrediction(name="1", index=1, classes=["down", "up"], indices=[1, 0], probs=[0.8, 0.2]),
        ClassPrediction(name="0", index=0, classes=["up", "down"], indices=[0, 1], probs=[0.6, 0.4]),
    ]
    writer.write_on_epoch_end(trainer, None, [records], [])
    with open(tmp_path / "cls" / "predictions.csv") as handle:
        assert list(csv.reader(handle)) == [["index", "class_1", "prob_1", "class_2", "prob_2"],
                                            ["0", "up", "0.600000", "down", "0.400000"],
                                            ["1", "down", "0.800000", "up", "0.200000"]]  # fmt: skip

    writer = SequenceWriter(output=str(tmp_path / "reg"))
    writer.on_predict_start(trainer, None)
    writer.write_on_epoch_end(trainer, None, [[ValuesPrediction(name="0", index=0, values=[0.25, 1.5],
                                                                targets=["target_0", "target_1"])]], [])  # fmt: skip
    with open(tmp_path / "reg" / "predictions.csv") as handle:
        assert list(csv.reader(handle)) == [["index", "target_0", "target_1"], ["0", "0.25", "1.5"]]

    writer = SequenceWriter(output=str(tmp_path / "lm"))
    writer.on_predict_start(trainer, None)
    writer.write_on_epoch_end(trainer, None, [[TextPrediction(name="0", prompt="ab", generated="bab")]], [])
    assert (tmp_path / "lm" / "generated.txt").read_text() == "=== prompt: 'ab'\nabbab\n\n"
