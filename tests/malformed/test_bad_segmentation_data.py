"""``image_segmentation`` meets malformed pictures and label maps (CamVid layout and ``kind: images``
folders) with one error line naming the file, exit code 2 and no traceback; ``data.bad_samples:
drop`` leaves bad images out with one warning line that counts them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from malformed_helpers import error_line, warnings_of
from PIL import Image

# A TransUNet small enough that building it and one CPU step take about a second.
TINY_MODEL = dict(img_size=[32, 32], hidden=32, depth=1, num_heads=2, mlp_dim=64, resnet_layers=[1, 1, 1],
                  resnet_width=32, head_channels=16, decoder_channels=[16, 8, 8, 8])
ONE_STEP = dict(iters=1, batch_size=2, eval_every=0, checkpoint_every=0, final_eval="skip", log_every=1,
                progress=False, tensorboard=False, plot_curves=False, precision="fp32", num_workers=0)
HEIGHT, WIDTH = 40, 48


# ----------------------------------------------------------------------------- helpers


def write_config(folder: Path, data: dict[str, Any], num_classes: int, **train: Any) -> str:
    config = {"task": "image_segmentation", "name": "malformed", "seed": 0,
              "model": {"name": "transunet_r50_vitb16", "num_classes": num_classes, "kwargs": TINY_MODEL},
              "data": {"crop_size": [32, 32], "size_divisor": 16, "scale_range": [1.0, 1.0], **data},
              "optim": {"name": "adamw", "lr": 1e-3}, "train": {**ONE_STEP, **train}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))


def label_map(seed: int, num_classes: int, void: int | None = None) -> np.ndarray:
    """Class blocks (every class present), and a strip of ``void`` when given."""
    labels = np.repeat(np.arange(WIDTH) * num_classes // WIDTH, HEIGHT).reshape(WIDTH, HEIGHT).T
    labels = np.roll(labels, seed, axis=1).astype(np.uint8)
    if void is not None:
        labels[:3] = void
    return labels


@pytest.fixture
def camvid(tmp_path) -> Path:
    """CamVid's layout: ``train/``, ``trainannot/``, ``val/``, ``valannot/``; 11 classes, 11 = void."""
    root = tmp_path / "camvid"
    for split, count in (("train", 3), ("val", 1)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(count):
            picture(i).save(root / split / f"0001TP_{i:04d}.png")
            Image.fromarray(label_map(i, 11, void=11)).save(root / f"{split}annot" / f"0001TP_{i:04d}.png")
    return root


def camvid_config(root: Path, **data: Any) -> str:
    train = data.pop("train", {})
    return write_config(root.parent, {"kind": "camvid", "root": str(root), "void_labels": [11], **data}, 11, **train)


def annot(root: Path, i: int = 1, split: str = "train") -> Path:
    return root / f"{split}annot" / f"0001TP_{i:04d}.png"


def image(root: Path, i: int = 1, split: str = "train") -> Path:
    return root / split / f"0001TP_{i:04d}.png"


@pytest.fixture
def folders(tmp_path) -> Path:
    """``kind: images``: pictures (JPEG) and 3-class label maps paired by name, two for training, one for validation."""
    root = tmp_path / "folders"
    for split, count in (("train", 2), ("val", 1)):
        for part in ("images", "labels"):
            (root / split / part).mkdir(parents=True)
        for i in range(count):
            picture(i).save(root / split / "images" / f"case{i}.jpg", quality=95)
            Image.fromarray(label_map(i, 3)).save(root / split / "labels" / f"case{i}.png")
    return root


def folders_config(root: Path, train: dict | None = None, **data: Any) -> str:
    parts = {f"{split}_{part}": str(root / split / part) for split in ("train", "val") for part in ("images", "labels")}
    return write_config(root.parent, {"kind": "images", **parts, **data}, 3, **(train or {}))


# ----------------------------------------------------------------------------- label values


def test_the_clean_sets_train(camvid, folders, cli):
    for cfg in (camvid_config(camvid), folders_config(folders)):
        rc, err = cli("train", cfg)
        assert rc == 0 and not warnings_of(err), err


def test_label_values_above_num_classes_name_the_file_values_and_range(camvid, cli):
    labels = label_map(1, 11, void=11)
    labels[10:12, 5] = 40
    Image.fromarray(labels).save(annot(camvid))
    line = error_line(*cli("train", camvid_config(camvid)), annot(camvid), "label value(s) 40", "2 pixel(s)", "0..10")
    assert "255 (data.ignore_index)" in line


def test_label_values_are_checked_after_the_void_mapping(camvid, cli):
    rc, err = cli("train", camvid_config(camvid, void_labels=[]))  # 11 is then a class beyond 0..10
    error_line(rc, err, annot(camvid, 0), "label value(s) 11")


def test_label_values_of_the_validation_split_too(folders, cli):
    Image.fromarray(label_map(0, 6)).save(folders / "val" / "labels" / "case0.png")
    error_line(*cli("train", folders_config(folders)), folders / "val" / "labels" / "case0.png", "3, 4, 5", "0..2")


# ----------------------------------------------------------------------------- unreadable and wrong files


def test_an_empty_label_map_names_the_file(camvid, cli):
    annot(camvid).write_bytes(b"")
    error_line(*cli("train", camvid_config(camvid)), annot(camvid), "empty (0 bytes)")


def test_a_truncated_png_names_the_file(camvid, cli):
    data = image(camvid).read_bytes()
    image(camvid).write_bytes(data[: len(data) // 2])
    error_line(*cli("train", camvid_config(camvid)), image(camvid), "cannot read the image")


def test_a_file_that_is_not_a_picture_names_the_file(camvid, cli):
    annot(camvid).write_text("sky,road\n")
    error_line(*cli("train", camvid_config(camvid)), annot(camvid), "not a picture")


def test_an_rgb_label_map_is_refused_and_a_palette_one_is_read(camvid, cli):
    labels = label_map(1, 11, void=11)
    Image.fromarray(labels).convert("RGB").save(annot(camvid))
    error_line(*cli("train", camvid_config(camvid)), annot(camvid), "single-channel", "RGB")
    indexed = Image.fromarray(labels).convert("P")  # palette PNG: the indices are the class ids
    indexed.putpalette([v for c in range(256) for v in (c, 255 - c, c // 2)])
    indexed.save(annot(camvid))
    assert np.array_equal(np.asarray(Image.open(annot(camvid))), labels)
    rc, err = cli("train", camvid_config(camvid))
    assert rc == 0, err


def test_image_and_label_sizes_that_differ_name_both_files_and_sizes(camvid, cli):
    Image.fromarray(label_map(1, 11)[:, :40]).save(annot(camvid))
    error_line(*cli("train", camvid_config(camvid)), annot(camvid), image(camvid), "40x40", "48x40")


def test_a_field_of_view_mask_of_another_size_names_it(folders, cli):
    fov = folders / "train" / "fov"
    fov.mkdir()
    for i in range(2):
        Image.fromarray(np.full((HEIGHT, WIDTH - 8 * i), 255, np.uint8)).save(fov / f"case{i}.png")
    error_line(*cli("train", folders_config(folders, train_fov=str(fov))), fov / "case1.png", "field-of-view")


def test_a_truncated_jpeg_is_met_on_read_and_named(folders, cli):
    path = folders / "train" / "images" / "case1.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # the header is whole: only decoding finds the end missing
    error_line(*cli("train", folders_config(folders)), path, "cannot read image", "truncated")


def test_a_truncated_jpeg_met_in_a_loader_worker_gives_the_same_line(folders, cli):
    path = folders / "train" / "images" / "case1.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    error_line(*cli("train", folders_config(folders, train={"num_workers": 2})), path, "cannot read image", "truncated")


# ----------------------------------------------------------------------------- policy and config


def test_drop_leaves_bad_images_out_with_one_warning(camvid, cli):
    (camvid / "train" / "0001TP_0003.png").write_bytes(b"")
    picture(3).save(camvid / "trainannot" / "0001TP_0003.png")  # an RGB label map
    labels = label_map(1, 11, void=11)
    labels[0, 0] = 40
    Image.fromarray(labels).save(annot(camvid))
    rc, err = cli("train", camvid_config(camvid, bad_samples="drop"))
    assert rc == 0, err
    (warning,) = warnings_of(err)
    assert "dropped 2 of 4 images" in warning, warning
    assert str(annot(camvid)) in warning and str(camvid / "train" / "0001TP_0003.png") in warning
    assert "Traceback" not in err


def test_drop_with_every_image_bad_is_an_error(camvid, cli):
    for i in range(3):
        annot(camvid, i).write_bytes(b"")
    error_line(*cli("train", camvid_config(camvid, bad_samples="drop")), "all 3 images are bad", annot(camvid, 0))


@pytest.mark.parametrize(("key", "value", "shown"), [
    ("eval_overlap", 1.0, "[0, 1)"), ("size_divisor", 0, "1 or more"), ("eval_chunk", 0, "1 or more"),
    ("spacing", [1.0, -0.5], "data.spacing[1]"), ("crop_size", [32, 0], "positive"), ("ignore_index", 3, "0..10"),
    ("void_labels", [300], "0..255"), ("bad_samples", "skip", "raise"),
])
def test_data_values_out_of_range_name_the_key(camvid, cli, key, value, shown):
    error_line(*cli("train", camvid_config(camvid, **{key: value})), f"data.{key}", shown)


def test_loss_values_out_of_range_name_the_key(camvid, cli):
    cfg = Path(camvid_config(camvid))
    config = yaml.safe_load(cfg.read_text())
    for loss, shown in (({"ce_weight": -1.0}, "loss.ce_weight"), ({"ce_weight": 0, "dice_weight": 0}, "both 0"),
                        ({"class_weights": [1.0, 2.0]}, "loss.class_weights: expected 11")):
        cfg.write_text(yaml.safe_dump({**config, "loss": loss}))
        error_line(*cli("train", str(cfg)), shown)


def test_a_one_channel_model_for_rgb_pictures_is_refused(camvid, cli):
    cfg = Path(camvid_config(camvid))
    config = yaml.safe_load(cfg.read_text())
    config["model"]["kwargs"]["in_chans"] = 1
    cfg.write_text(yaml.safe_dump(config))
    error_line(*cli("train", str(cfg)), "model.kwargs.in_chans", "3 channels")
