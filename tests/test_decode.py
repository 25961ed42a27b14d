"""Images decoded by torchvision (libjpeg-turbo, libpng, libwebp, giflib) into uint8 tensors, PIL for the rest: the
pixels PIL's convert("RGB") gives, errors that name the file, and the GPU decoding option (its CPU-testable part)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import run_cli
from PIL import Image
from torchvision.transforms.v2 import functional as F

import lit_models.datamodules.detection as detection_data
import lit_models.datamodules.image_folder as image_folder
import lit_models.datamodules.segmentation as segmentation_data
from lit_models.check import main as check_command
from lit_models.datamodules.files import (
    DataError,
    check_jpeg_size,
    decode_on_device,
    decode_rgb,
    jpeg_size,
    load_rgb,
    read_bytes,
    read_encoded,
)
from lit_models.datamodules.image_folder import ImageFolderDataModule, decode_batch
from lit_models.datamodules.protocols import ProtocolViews
from lit_models.datamodules.transforms import PRESETS, AutoAugment, evaluation_transform, training_transform
from lit_models.errors import UsageError


def picture(width: int = 40, height: int = 30) -> Image.Image:
    """Gradients and a block: smooth enough that JPEG keeps it, varied enough that a wrong channel shows."""
    yy, xx = np.mgrid[:height, :width]
    pixels = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (width + height)], -1)
    pixels[5:15, 10:25] = (250, 30, 90)
    return Image.fromarray(pixels.astype(np.uint8))


def pil_rgb(path: str | Path) -> torch.Tensor:
    """What the PIL-only decoding gave: ``load_rgb``'s picture as 3 x H x W uint8."""
    return F.pil_to_tensor(load_rgb(str(path)))


# name: (the picture as saved, format, save options, largest difference allowed)
SAVED = {
    "jpeg_rgb": (lambda: picture(), "JPEG", {"quality": 90}, 1),
    "jpeg_progressive": (lambda: picture(), "JPEG", {"quality": 90, "progressive": True}, 1),
    "jpeg_gray": (lambda: picture().convert("L"), "JPEG", {}, 1),
    "jpeg_cmyk": (lambda: picture().convert("CMYK"), "JPEG", {}, 1),
    "png_rgb": (lambda: picture(), "PNG", {}, 0),
    "png_gray": (lambda: picture().convert("L"), "PNG", {}, 0),
    "png_bilevel": (lambda: picture().convert("1"), "PNG", {}, 0),
    "png_rgba": (lambda: picture().convert("RGBA"), "PNG", {}, 0),
    "png_gray_alpha": (lambda: picture().convert("LA"), "PNG", {}, 0),
    "png_palette": (lambda: picture().convert("P"), "PNG", {}, 0),
    "png_palette_transparency": (lambda: picture().convert("P"), "PNG", {"transparency": 0}, 0),
    "png_16_bit": (lambda: Image.fromarray(np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50), "PNG", {}, 0),
    "webp": (lambda: picture(), "WEBP", {"lossless": True}, 0),
    "gif": (lambda: picture().convert("P"), "GIF", {}, 0),
    "bmp": (lambda: picture(), "BMP", {}, 0),
    "tiff": (lambda: picture(), "TIFF", {}, 0),
    "ppm": (lambda: picture(), "PPM", {}, 0),
}


@pytest.mark.parametrize("name", SAVED)
def test_decode_equals_pils_rgb_conversion(tmp_path, name):
    # JPEG within 1 grey level: PIL and torchvision each bring their own libjpeg-turbo, whose rounding may differ
    # between versions (the two here agree exactly); lossless formats exactly.
    make, format, options, tolerance = SAVED[name]
    path = tmp_path / f"image.{format.lower()}"
    make().save(path, format, **options)
    decoded, expected = decode_rgb(str(path)), pil_rgb(path)
    assert decoded.dtype == torch.uint8 and decoded.shape == expected.shape == (3, 30, 40)
    assert (decoded.int() - expected.int()).abs().max() <= tolerance


def test_a_gif_gives_its_first_frame_and_exif_orientation_is_not_applied(tmp_path):
    frames = [picture().convert("P"), picture().transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    assert torch.equal(decode_rgb(str(tmp_path / "moving.gif")), pil_rgb(tmp_path / "moving.gif"))

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to display": the PIL-only decoding never applied it, nor does this one
    picture().save(tmp_path / "rotated.jpg", quality=90, exif=exif.tobytes())
    decoded = decode_rgb(str(tmp_path / "rotated.jpg"))
    assert decoded.shape == (3, 30, 40) and (decoded.int() - pil_rgb(tmp_path / "rotated.jpg").int()).abs().max() <= 1


def test_an_image_in_memory_is_only_converted():
    image = picture().convert("RGBA")
    assert torch.equal(decode_rgb(image), F.pil_to_tensor(image.convert("RGB")))


def broken_files(folder: Path) -> dict[str, Path]:
    """A truncated JPEG (half a download), a truncated PNG, a text file named .jpg, an empty file."""
    folder.mkdir(parents=True, exist_ok=True)
    encoded = io.BytesIO()
    picture(200, 150).save(encoded, "JPEG", quality=90)
    files = {
        "truncated.jpg": encoded.getvalue()[: len(encoded.getvalue()) // 2],
        "text.jpg": b"not an image",
        "empty.png": b"",
    }
    encoded = io.BytesIO()
    picture().save(encoded, "PNG")
    files["truncated.png"] = encoded.getvalue()[:100]
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def test_undecodable_files_raise_the_error_that_names_them(tmp_path):
    for path in [*broken_files(tmp_path).values(), tmp_path / "missing.jpg"]:
        with pytest.raises(DataError) as error:
            decode_rgb(str(path))
        assert re.fullmatch(
            rf"cannot decode image {re.escape(str(path))}: .+\. Replace or delete the file\.", str(error.value)
        )
        assert ".cpp:" not in str(error.value)  # torchvision's C++ source location is left out


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"exif": b"Exif\x00\x00" + bytes(3000)}])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_the_jpeg_size_is_read_from_its_header_as_pil_reads_it(tmp_path, options, mode):
    path = tmp_path / "picture.jpg"
    picture(37, 23).convert(mode).save(path, quality=90, **options)
    assert jpeg_size(read_bytes(str(path))) == Image.open(path).size == (37, 23)


def test_a_jpeg_declaring_more_pixels_than_pil_allows_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.jpg"
    picture(37, 23).save(path, quality=90)
    data = bytearray(path.read_bytes())
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = (60000).to_bytes(2, "big") * 2  # 60,000 x 60,000: 10.8 GB of pixels
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"cannot decode image {re.escape(str(path))}: it declares 60000 x 60000"):
        decode_rgb(str(path))
    check_jpeg_size(read_bytes(str(path))[:frame], "cut short")  # no frame header: left to the decoder


def jpeg_tree(root: Path, per_class: int = 4) -> Path:
    """root/train/<class>/*.jpg and root/val/<class>/*.jpg, 64 x 48 pictures, two classes."""
    for split, count in (("train", per_class), ("val", 1)):
        for label, name in enumerate(("left", "right")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                image = picture(64, 48).rotate(20 * index + 90 * label)
                image.save(folder / f"{index}.jpg", quality=90)
    return root


def test_a_truncated_jpeg_and_a_file_that_is_no_image_are_named_from_the_main_process_through_workers(tmp_path):
    root = jpeg_tree(tmp_path / "photos")
    truncated, text = root / "train" / "right" / "2.jpg", root / "train" / "left" / "1.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    text.write_text("not an image")
    data = ImageFolderDataModule(root=str(root), preset="small", image_size=16, batch_size=1, num_workers=2)
    data.setup("fit")
    messages = []
    for batch in data.train_dataloader():
        try:
            data.on_before_batch_transfer(batch, 0)
        except DataError as error:
            messages.append(str(error))
    assert len(messages) == 2 and not any("DataLoader worker" in message for message in messages)
    for path in (truncated, text):
        pattern = rf"cannot decode image {re.escape(str(path))}: .+\. Replace or delete the file\. .*skip_corrupt=true"
        assert any(re.match(pattern, message) for message in messages), messages


def test_lit_models_check_lists_the_truncated_jpeg_and_the_file_that_is_no_image(tmp_path, capsys):
    root = jpeg_tree(tmp_path / "photos")
    truncated, text = root / "train" / "left" / "1.jpg", root / "val" / "right" / "0.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    text.write_text("not an image")
    options = ["--data.root", str(root), "--data.num_workers", "0", "--data.image_size", "16"]
    with pytest.raises(SystemExit) as status:
        check_command(["classification/resnet18_digits", *options])
    out = capsys.readouterr().out
    assert status.value.code == 2 and "2 problem(s):" in out
    assert f"train: cannot decode image {truncated}: " in out and f"val: cannot decode image {text}: " in out


def test_transforms_give_the_same_tensors_from_a_decoded_tensor_as_from_a_pil_image():
    """Every pipeline turns a PIL image into a tensor first (v2.ToImage), so resizing is torch's antialiased kernel
    either way: the tensors are equal, not merely close."""
    image = picture(120, 90)
    tensor = F.pil_to_tensor(image)
    pipelines = [training_transform(preset, 32) for preset in PRESETS]
    pipelines += [training_transform("imagenet", 32, rotation=10, scale_jitter=0.1, random_erasing=0.5)]
    pipelines += [training_transform("imagenet", 32, auto_augment=policy) for policy in get_args(AutoAugment)]
    pipelines += [evaluation_transform(resize, 32, (0.5,) * 3, (0.25,) * 3) for resize in ("center_crop", "resize")]
    pipelines += [ProtocolViews(crops, None, 32, (0.5,) * 3, (0.25,) * 3) for crops in (10, 144, "dense")]
    for pipeline in pipelines:
        torch.manual_seed(0)
        from_pil = pipeline(image)
        torch.manual_seed(0)
        from_tensor = pipeline(tensor)
        for a, b in zip(*(x if isinstance(x, list) else [x] for x in (from_pil, from_tensor)), strict=True):
            assert torch.equal(a, b), pipeline


def pil_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DataModules decode as they did before torchvision did: PIL, then the tensor."""
    for module in (image_folder, segmentation_data, detection_data):
        monkeypatch.setattr(module, "decode_rgb", lambda path: F.pil_to_tensor(load_rgb(path)))


def test_datamodule_batches_equal_those_of_pil_decoding(tmp_path, monkeypatch):
    data = ImageFolderDataModule(root=str(jpeg_tree(tmp_path / "photos")), image_size=32, batch_size=8, num_workers=0)
    data.setup("fit")

    def batches() -> list[torch.Tensor]:
        torch.manual_seed(0)
        return [next(iter(data.train_dataloader()))["image"], next(iter(data.val_dataloader()))["image"]]

    torchvision_decoded = batches()
    pil_decoding(monkeypatch)
    for batch, pil_batch in zip(torchvision_decoded, batches(), strict=True):
        # 1 grey level of JPEG rounding, normalised: 1 / 255 / std
        assert torch.allclose(batch, pil_batch, rtol=0, atol=1 / 255 / 0.224 + 1e-6)


def test_segmentation_and_detection_samples_equal_those_of_pil_decoding(shapes_tree, monkeypatch):
    datasets = []
    for module in (segmentation_data.SegmentationDataModule, detection_data.DetectionDataModule):
        data = module(root=str(shapes_tree), num_workers=0)
        data.setup("fit")
        datasets += [data.datasets["train"], data.datasets["val"]]

    def samples() -> list[dict]:
        torch.manual_seed(0)
        return [dataset[index] for dataset in datasets for index in range(2)]

    torchvision_decoded = samples()
    pil_decoding(monkeypatch)
    for sample, pil_sample in zip(torchvision_decoded, samples(), strict=True):
        assert torch.allclose(sample["image"], pil_sample["image"], rtol=0, atol=1 / 255 / 0.224 + 1e-6)
        assert sample.get("orig_size") == pil_sample.get("orig_size")
        if "mask" in sample:
            assert torch.equal(sample["mask"], pil_sample["mask"])
        if "target" in sample:
            assert torch.equal(sample["target"]["boxes"], pil_sample["target"]["boxes"])


def test_gpu_decoding_fails_at_once_without_cuda(tmp_path, monkeypatch):
    root = str(jpeg_tree(tmp_path / "photos"))
    with pytest.raises(ValueError, match="decode_device must be 'cpu' .* or 'cuda' .*got 'gpu'"):
        ImageFolderDataModule(root=root, decode_device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"no CUDA device here \(torch.cuda.is_available\(\) is False\)"):
        ImageFolderDataModule(root=root, decode_device="cuda")


def gpu_decoding_data(root: Path, monkeypatch: pytest.MonkeyPatch, **options) -> ImageFolderDataModule:
    """An ImageFolderDataModule with decode_device "cuda", built as if a GPU were there: its workers read files."""
    with monkeypatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: True)
        data = ImageFolderDataModule(root=str(root), decode_device="cuda", num_workers=0, **options)
    data.setup("fit")
    return data


def test_gpu_decoding_path_on_the_cpu_gives_the_batches_of_worker_decoding(tmp_path, monkeypatch):
    root = jpeg_tree(tmp_path / "photos")
    picture(64, 48).save(root / "train" / "left" / "9.png")  # not a JPEG: decoded in the worker
    with (root / "train" / "right" / "9.jpg").open("wb") as file:  # bytes after the end marker: decoded there too
        picture(64, 48).save(file, "JPEG", quality=90)
        file.write(b"trailing bytes")
    options = {"image_size": 32, "batch_size": 10}
    gpu = gpu_decoding_data(root, monkeypatch, **options)
    cpu = ImageFolderDataModule(root=str(root), num_workers=0, **options)
    cpu.setup("fit")
    # JPEG bytes (1-D) or images decoded in the worker (3-D): train holds the PNG and the JPEG with trailing bytes
    handed_on = {"train": [1] * 8 + [3, 3], "val": [1, 1]}
    for split, loader in (("train", "train_dataloader"), ("val", "val_dataloader")):
        torch.manual_seed(0)
        expected = next(iter(getattr(cpu, loader)()))
        torch.manual_seed(0)
        batch = next(iter(getattr(gpu, loader)()))
        assert sorted(item.ndim for item in batch["encoded"]) == handed_on[split]
        decoded = decode_batch(batch, gpu.datasets[split].transform, torch.device("cpu"))
        assert decoded["path"] == expected["path"] and torch.equal(decoded["label"], expected["label"])
        assert torch.equal(decoded["image"], expected["image"])


def test_gpu_decoding_names_a_file_no_decoder_reads_and_needs_a_gpu_trainer(tmp_path, monkeypatch):
    good = tmp_path / "good.jpg"
    picture().save(good, quality=90)
    bad = tmp_path / "bad.jpg"  # a JPEG's start and end markers around nothing a decoder can read
    bad.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64) + b"\xff\xd9")
    items = [read_encoded(str(good)), read_encoded(str(bad))]
    assert [item.ndim for item in items] == [1, 1]  # both handed on as bytes
    with pytest.raises(DataError, match=rf"cannot decode image {re.escape(str(bad))}: "):
        decode_on_device(items, [str(good), str(bad)], torch.device("cpu"))
    (image,) = decode_on_device([read_bytes(str(good))], [str(good)], torch.device("cpu"))
    assert torch.equal(image, decode_rgb(str(good)))

    data = gpu_decoding_data(jpeg_tree(tmp_path / "photos"), monkeypatch, batch_size=2)
    data.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(
        UsageError, match="decode_device 'cuda' decodes on the trainer's GPU, but this trainer runs on cpu"
    ):
        data.on_before_batch_transfer(next(iter(data.train_dataloader())), 0)


def test_check_decodes_every_file_on_the_cpu_under_gpu_decoding(tmp_path, monkeypatch):
    root = jpeg_tree(tmp_path / "photos")
    bad = root / "train" / "left" / "0.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64) + b"\xff\xd9")  # ends as a JPEG does: the workers pass it on
    data = gpu_decoding_data(root, monkeypatch, batch_size=2)
    problems = data.check()
    assert len(problems) == 1 and problems[0].startswith(f"train: cannot decode image {bad}: ")
    assert data.datasets["train"].decode_device == "cuda"  # a run after the check decodes on the GPU again


def test_a_model_trained_with_gpu_decoding_predicts_where_there_is_no_gpu(tmp_path):
    root = jpeg_tree(tmp_path / "photos")
    hparams = {**ImageFolderDataModule(root=str(root), image_size=32).hparams, "decode_device": "cuda"}  # as saved
    data = ImageFolderDataModule.for_prediction(hparams, str(root / "val"), ["left", "right"])
    data.setup("predict")
    assert next(iter(data.predict_dataloader()))["image"].shape == (2, 3, 32, 32)


def test_the_command_line_refuses_gpu_decoding_without_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = jpeg_tree(tmp_path / "photos")
    with pytest.raises(AssertionError) as failed:  # run_cli's report of a command that exits with an error
        run_cli("check", "classification/resnet18_digits", "--data.root", str(root), "--data.decode_device", "cuda",
                cwd=tmp_path)  # fmt: skip
    last_line = str(failed.value).strip().splitlines()[-1]
    assert last_line.startswith(
        "error: ImageFolderDataModule: decode_device 'cuda' decodes JPEGs on the GPU with nvJPEG"
    )
