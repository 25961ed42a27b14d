"""Prepared shards (``lit-models data prepare``): the same batches as the files they were made from, shrunk
consistently, refused over existing data, damaged records named, every evaluation sample once across ranks, and a
run resumed mid-epoch going on where it stopped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from families import classifier, fit_and_save
from litdata import StreamingDataLoader

import lit_models
from lit_models import DataError, DetectionDataModule, ImageFolderDataModule, SegmentationDataModule
from lit_models.commands import main
from lit_models.datamodules.shard_writer import prepare_shards
from lit_models.datamodules.shards import DESCRIPTION

REPO = Path(__file__).resolve().parents[1]


def evaluation_batches(data: lit_models.ImageFolderDataModule, split: str) -> dict[str, dict]:
    """Each sample of a split's evaluation loader, by its file, as a dict of its batch entries."""
    loader = data.test_dataloader() if split == "test" else data.val_dataloader()
    samples = {}
    for batch in loader:
        assert not batch["errors"]
        entries = {key: value for key, value in batch.items() if key not in ("path", "errors", "skipped")}
        for index, path in enumerate(batch["path"]):
            samples[path] = {key: value[index] for key, value in entries.items()}
    return samples


def same(left: object, right: object) -> bool:
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[key], right[key]) for key in left)
    if isinstance(left, torch.Tensor):
        return torch.equal(left, right)
    return left == right


DATA = {  # each kind's DataModule on a root, and the fixture its files come from
    "classification": (lambda root: ImageFolderDataModule(str(root), image_size=16, batch_size=4, num_workers=0),
                       "image_tree"),
    "segmentation": (lambda root: SegmentationDataModule(str(root), crop_size=32, batch_size=2, num_workers=0),
                     "shapes_tree"),
    "detection": (lambda root: DetectionDataModule(str(root), image_size=None, batch_size=2, num_workers=0),
                  "shapes_tree"),
}  # fmt: skip


@pytest.mark.parametrize("kind", DATA)
def test_shards_give_the_batches_of_their_files(kind, request, tmp_path):
    make, fixture = DATA[kind]
    files = make(request.getfixturevalue(fixture))
    description = prepare_shards(files, tmp_path / "shards", workers=2)
    shards = make(tmp_path / "shards")
    assert shards.class_names == files.class_names and description["kind"] == kind
    assert shards.spec == files.spec  # what a checkpoint carries for prediction
    files.setup("fit")
    shards.setup("fit")
    assert type(shards.train_dataloader()).__name__ == "StreamingDataLoader"
    for split in ("val", "test"):
        from_files, from_shards = evaluation_batches(files, split), evaluation_batches(shards, split)
        assert description["splits"][split] == len(from_files) > 0
        assert from_shards.keys() == from_files.keys()  # the original file names, every sample once
        assert all(same(from_shards[path], from_files[path]) for path in from_files)
    train = [path for batch in shards.train_dataloader() for path in batch["path"]]
    assert len(train) == description["splits"]["train"]
    assert set(train) == {str(sample[0]) for sample in files.datasets["train"].samples}


def test_a_shorter_side_shrinks_images_with_their_masks_and_boxes(shapes_tree, tmp_path):
    """64-px scenes prepared at 48: every image, mask and box scaled by 3/4."""
    for make, name in ((DATA["segmentation"][0], "segmentation"), (DATA["detection"][0], "detection")):
        description = prepare_shards(make(shapes_tree), tmp_path / name, shorter_side=48, workers=1)
        assert description["shorter_side"] == 48
    segmentation = SegmentationDataModule(str(tmp_path / "segmentation"), num_workers=0)
    segmentation.setup("fit")
    for batch in segmentation.val_dataloader():
        assert batch["image"].shape[-2:] == batch["mask"].shape[-2:] == (48, 48)
        assert set(batch["mask"].unique().tolist()) <= {0, 1, 2, 3, 255}
    files, shrunk = DATA["detection"][0](shapes_tree), DATA["detection"][0](tmp_path / "detection")
    files.setup("fit")
    shrunk.setup("fit")
    for before, after in zip(files.val_dataloader(), shrunk.val_dataloader(), strict=True):
        assert after["orig_size"] == [(48, 48)] * len(after["name"]) and after["name"] == before["name"]
        for small, large in zip(after["target"], before["target"], strict=True):
            torch.testing.assert_close(small["boxes"], large["boxes"] * 0.75)
            assert torch.equal(small["labels"], large["labels"])


def prepare_command(tree: Path, output: Path, *extra: str) -> list[str]:
    recipe = str(REPO / "configs" / "quickstart.yaml")
    return ["data", "prepare", recipe, "--data.init_args.root", str(tree), "--output", str(output), "--workers", "1",
            *extra]  # fmt: skip


def test_prepare_refuses_to_write_over_data_and_names_an_unreadable_image(image_tree, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as stop:
        main(prepare_command(image_tree, output))
    assert stop.value.code == 2 and "is not empty" in capsys.readouterr().err
    assert (output / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit):
        main(prepare_command(image_tree, image_tree, "--overwrite"))  # the data itself: never
    assert "overlap: choose a folder outside the source" in capsys.readouterr().err
    broken = image_tree / "val" / "circle" / "001.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(SystemExit):
        main(prepare_command(image_tree, output, "--overwrite"))
    assert f"val: cannot decode image {broken}" in capsys.readouterr().err
    assert (output / "notes.txt").read_text() == "mine"  # nothing written when a sample cannot be read
    broken.unlink()
    main(prepare_command(image_tree, output, "--overwrite"))
    assert "classification shards of 3 classes (train 24, val 8, test 9)" in capsys.readouterr().out
    assert not (output / "notes.txt").exists() and (output / DESCRIPTION).is_file()


def test_a_damaged_record_is_named_in_the_main_process(image_tree, tmp_path):
    prepare_shards(DATA["classification"][0](image_tree), tmp_path / "shards", workers=1)
    chunk = next((tmp_path / "shards" / "val").glob("*.bin"))
    content = bytearray(chunk.read_bytes())
    start = content.index(b"IDAT")  # the first record's pixels
    content[start + 4 : start + 40] = bytes(36)
    chunk.write_bytes(bytes(content))
    data = ImageFolderDataModule(str(tmp_path / "shards"), image_size=16, batch_size=4, num_workers=2)
    data.setup("fit")
    damaged = next(iter(data.val_dataloader()))
    first = str(image_tree / "val" / "circle" / "000.png")
    assert damaged["errors"] and damaged["errors"][0].startswith(f"cannot decode image {first} (record 0 in {chunk})")
    with pytest.raises(DataError, match="prepare them again"):
        data.on_before_batch_transfer(damaged, 0)
    skipping = ImageFolderDataModule(str(tmp_path / "shards"), image_size=16, batch_size=4, num_workers=0,
                                     skip_corrupt=True)  # fmt: skip
    skipping.setup("fit")
    batches = list(skipping.val_dataloader())
    assert not any(batch["errors"] for batch in batches) and sum(len(batch["path"]) for batch in batches) == 9
    assert [message for batch in batches for message in batch["skipped"]] == damaged["errors"][:1]


def test_every_evaluation_sample_once_across_ranks(image_tree, tmp_path, monkeypatch):
    prepare_shards(DATA["classification"][0](image_tree), tmp_path / "shards", workers=1)
    seen = []
    for rank in range(2):  # LitData reads the DDP rank from the environment Lightning sets
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("GLOBAL_RANK", str(rank))
        data = ImageFolderDataModule(str(tmp_path / "shards"), image_size=16, batch_size=2, num_workers=0)
        data.setup("fit")
        seen.append([path for batch in data.val_dataloader() for path in batch["path"]])
    assert len(seen[0]) + len(seen[1]) == 9 and not set(seen[0]) & set(seen[1])


class TrainingPaths(pl.Callback):
    """The training files of every batch; a checkpoint saved after the second batch (as a preempted run saves)."""

    def __init__(self, checkpoint: Path) -> None:
        self.paths: list[str] = []
        self.checkpoint = checkpoint

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.paths += batch["path"]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx == 1 and not self.checkpoint.exists():
            trainer.save_checkpoint(self.checkpoint)


def epoch_paths(shards: Path, workers: int, checkpoint: Path, resume: bool = False) -> list[str]:
    """The training files of one epoch on the shards (6 batches), from its start or resumed from ``checkpoint``."""
    torch.manual_seed(0)
    model, _ = classifier(shards)
    data = ImageFolderDataModule(str(shards), image_size=16, batch_size=4, num_workers=workers)
    paths = TrainingPaths(checkpoint)
    trainer = pl.Trainer(max_epochs=1, limit_val_batches=0, logger=False, callbacks=[paths], enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(checkpoint.parent))  # fmt: skip
    trainer.fit(model, data, ckpt_path=str(checkpoint) if resume else None)
    return paths.paths


@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_resumed_mid_epoch_sees_the_rest_of_its_epoch(workers, image_tree, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # seed_everything's: the shuffled order
    prepare_shards(DATA["classification"][0](image_tree), tmp_path / "shards", workers=1)
    checkpoint = tmp_path / "run" / "after-two-batches.ckpt"
    whole = epoch_paths(tmp_path / "shards", workers, checkpoint)
    rest = epoch_paths(tmp_path / "shards", workers, checkpoint, resume=True)
    assert len(whole) == 24 and len(set(whole)) == 24
    assert whole[:8] + rest == whole


def test_persistent_workers_shuffle_each_epoch_as_fresh_ones_do(image_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    prepare_shards(DATA["classification"][0](image_tree), tmp_path / "shards", workers=1)
    data = ImageFolderDataModule(str(tmp_path / "shards"), image_size=16, batch_size=4, num_workers=2)
    data.setup("fit")
    persistent = data.train_dataloader()
    fresh = StreamingDataLoader(
        persistent.dataset, batch_size=4, num_workers=2, collate_fn=persistent.collate_fn, drop_last=True
    )
    assert persistent.persistent_workers and not fresh.persistent_workers

    def epochs(loader) -> list[list[str]]:
        """Three epochs, the second cut short after two batches (limit_train_batches)."""
        order = [[path for batch in loader for path in batch["path"]]]
        order.append([path for _, batch in zip(range(2), loader, strict=False) for path in batch["path"]])
        return order + [[path for batch in loader for path in batch["path"]]]

    first, cut, third = epochs(persistent)
    assert [first, cut, third] == epochs(fresh)
    assert sorted(first) == sorted(third) and len(set(first)) == 24 and first != third and cut != first[:8]


def test_a_checkpoint_trained_on_shards_predicts_image_files(image_tree, tmp_path, one_thread):
    prepare_shards(DATA["classification"][0](image_tree), tmp_path / "shards", workers=1)
    model, data = classifier(tmp_path / "shards")
    checkpoint = fit_and_save(model, data, tmp_path)
    shutil.rmtree(tmp_path / "shards")  # prediction reads image files, not the shards
    loaded = lit_models.load(checkpoint, device="cpu")
    assert loaded.class_names == ["circle", "square", "stripes"]
    records = loaded.predict(str(image_tree / "test" / "square"))
    assert len(records) == 3 and all(record.classes[0] in loaded.class_names for record in records)


def test_the_data_command_lists_its_verbs(capsys):
    main(["--help"])
    assert "data " in capsys.readouterr().out
    main(["data", "--help"])
    assert "prepare" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["data", "prepar"])
    assert "did you mean 'prepare'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["data", "prepare", "--help"])
    assert stop.value.code == 0 and "--shorter_side" in capsys.readouterr().out
