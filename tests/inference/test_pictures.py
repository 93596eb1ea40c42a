"""Pictures people can read: stable class colours, text that grows with the picture, labels inside
the picture, legends that list the classes shown, and ``densevit evaluate --save-pictures``."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from checkpoint_helpers import untrained_checkpoint
from PIL import Image

from densevit.cli import main
from densevit.config import build_config
from densevit.data.shapes import generate_shapes
from densevit.inference.pictures import (
    class_palette,
    draw_detections,
    font,
    font_size,
    overlay,
    place_tag,
)

NAMES = ["circle", "square", "triangle", "a much longer class name"]


def _draw(image: np.ndarray, boxes: list[list[float]], labels: list[int], names=NAMES, **kw) -> np.ndarray:
    detection = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                 "scores": torch.linspace(0.9, 0.8, len(labels))}
    return np.asarray(draw_detections(image, detection, names, 0.5, **kw))


def _mask_of(picture: np.ndarray, colour) -> np.ndarray:
    return np.all(picture == np.asarray(colour, dtype=np.uint8), axis=-1)


def _tag_rows(picture: np.ndarray, colour, above: int) -> np.ndarray:
    """Rows above row ``above`` holding pixels of ``colour`` (the label's filled tag)."""
    return np.flatnonzero(_mask_of(picture[:above], colour).any(axis=1))


def test_a_class_has_one_colour_in_every_picture_and_run():
    palette = class_palette(len(NAMES))
    blank, other = np.zeros((300, 300, 3), np.uint8), np.full((200, 400, 3), 255, np.uint8)
    # class 2 alone in one picture, after classes 3 and 0 in another: its box edge has the same colour
    alone = _draw(blank, [[50, 100, 150, 200]], [2], min_side=0)
    crowd = _draw(other, [[10, 60, 60, 120], [200, 60, 260, 120], [300, 100, 380, 180]], [3, 0, 2], min_side=0)
    assert tuple(alone[150, 50]) == palette[2] == tuple(crowd[140, 300])
    assert tuple(crowd[90, 10]) == palette[3] and tuple(crowd[90, 200]) == palette[0]
    assert len(set(class_palette(80))) == 80  # distinct classes, distinct colours


@pytest.mark.slow  # a fresh interpreter importing torch: seconds alone, much more on a busy machine
def test_another_run_gives_the_same_colours():
    code = "from densevit.inference.pictures import class_palette; print(list(class_palette(80)))"
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(printed) == class_palette(80)


def test_text_grows_with_the_picture_and_is_legible():
    heights = []
    for side in (200, 800, 1600):
        picture = _draw(np.zeros((side, side, 3), np.uint8), [[side / 4, side / 2, side / 2, 3 * side / 4]], [0],
                        min_side=0)
        rows = _tag_rows(picture, class_palette(len(NAMES))[0], round(side / 2) - 1)
        heights.append(len(rows))
        tag = picture[rows.min() : rows.max() + 1]
        assert _mask_of(tag, (0, 0, 0)).any() or _mask_of(tag, (255, 255, 255)).any()  # contrasting text on it
    assert heights[0] >= 12 and heights[1] >= 1.5 * heights[0] and heights[2] >= 1.5 * heights[1]


def test_small_pictures_are_enlarged_before_drawing():
    picture = _draw(np.zeros((128, 96, 3), np.uint8), [[10, 20, 50, 60]], [1])
    assert picture.shape[:2] == (128 * 6, 96 * 6)  # the shorter side reaches 512 by a whole factor
    assert tuple(picture[40 * 6, 10 * 6]) == class_palette(len(NAMES))[1]  # boxes scaled with the picture


def test_labels_stay_whole_inside_the_picture():
    palette = [(250, 20, 20), (20, 20, 250)]
    width = 300
    # a box at the top-right corner with a long name: its tag goes inside the box, shifted left, uncut
    picture = _draw(np.zeros((200, width, 3), np.uint8), [[250, 0, 299, 60]], [3], palette=palette * 2,
                    min_side=0)
    face, pad = font(font_size(200)), max(2, font_size(200) // 6)
    left, top, right, bottom = face.getbbox(f"{NAMES[3]} 0.90")
    tag = _mask_of(picture, palette[1])
    tag_cols, tag_rows = np.flatnonzero(tag.sum(axis=0) > 5), np.flatnonzero(tag.sum(axis=1) > 5)
    assert tag_rows.min() == 0 and tag_cols.max() == width - 1
    assert tag_cols.max() - tag_cols.min() + 1 == right - left + 2 * pad  # as wide as PIL says the text is
    # any box, anywhere: the tag lies inside the picture
    rng = np.random.default_rng(0)
    for _ in range(200):
        x1, y1 = rng.uniform(-20, 300, 2)
        box = [x1, y1, x1 + rng.uniform(1, 100), y1 + rng.uniform(1, 100)]
        w, h = int(rng.integers(5, 120)), int(rng.integers(5, 40))
        x_1, y_1, x_2, y_2 = place_tag(box, w, h, 320, 240, [])
        assert 0 <= x_1 and 0 <= y_1 and x_2 <= 320 and y_2 <= 240 and (x_2 - x_1, y_2 - y_1) == (w, h)


def test_labels_of_boxes_at_the_same_place_do_not_pile_up():
    palette = [(250, 20, 20), (20, 20, 250)]
    picture = _draw(np.zeros((300, 300, 3), np.uint8), [[40, 100, 200, 200], [42, 102, 198, 198]], [0, 1],
                    names=["red", "blue"], palette=palette, min_side=0)
    first = _mask_of(picture, palette[0]) & (np.arange(300)[:, None] < 98)
    second = _mask_of(picture, palette[1])
    rows = np.flatnonzero(second.sum(axis=1) > 10)  # the blue tag's filled rows (not its box's thin lines)
    assert first.sum() > 100 and len(rows) >= 12
    assert not (first & second).any()
    # the second tag is below the first (inside the box top), not over it
    assert rows.min() >= np.flatnonzero(first.any(axis=1)).max()


def test_the_legend_lists_exactly_the_classes_present_in_their_colours():
    palette = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48)]
    names = ["background", "liver", "kidney", "spleen", "pancreas"]
    labels = np.zeros((80, 120), np.int64)
    labels[5:30, 5:40] = 1
    labels[40:70, 60:110] = 3
    labels[0, 0] = 255  # void: no class
    picture = overlay(np.full((80, 120, 3), 128, np.uint8), labels, [None, *palette[1:]], class_names=names)
    strip = picture[80:]
    assert picture.shape[1] == 120 and strip.shape[0] > font_size(80)
    side = font_size(80)
    for c, colour in enumerate(palette):
        swatch = _mask_of(strip, colour)
        full_rows = np.flatnonzero(swatch.sum(axis=1) >= side - 2)
        assert (len(full_rows) >= side - 2) == (c in (1, 3)), names[c]  # a filled square for classes 1 and 3 only
    # the overlay itself is unchanged by the legend
    assert np.array_equal(picture[:80], overlay(np.full((80, 120, 3), 128, np.uint8), labels, [None, *palette[1:]]))


# ----------------------------------------------------------------------------- evaluate --save-pictures


def _checkpoint(folder, data: dict):
    path = untrained_checkpoint(folder / "model.pth", data)
    config = folder / "config.yaml"
    config.write_text(json.dumps(build_config(data).to_dict()))
    return config, path


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("det")
    files = generate_shapes(tmp / "shapes", {"train": 2, "val": 3}, image_size=64, min_side=12, max_side=30, seed=1)
    return _checkpoint(tmp, {
        "task": "detection", "model": {"name": "detr_tiny", "num_classes": 3},
        "data": {"train_images": str(tmp / "shapes" / "images" / "train"), "train_annotations": str(files["train"]),
                 "val_images": str(tmp / "shapes" / "images" / "val"), "val_annotations": str(files["val"]),
                 "val_size": 64, "max_size": 64},
        "loss": {"classification": "sigmoid"}, "train": {"batch_size": 2},
    }), 64 * 8  # each panel: the 64x64 picture enlarged 8 times (its shorter side reaches 512)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seg")
    rng = np.random.default_rng(0)
    for folder in ("images", "labels"):
        (tmp / folder).mkdir()
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp / "images" / f"p{k}.png")
        label = np.zeros((48, 64), np.uint8)
        label[8:30, 10 + k : 40 + k] = 1 + k % 2
        Image.fromarray(label).save(tmp / "labels" / f"p{k}.png")
    return _checkpoint(tmp, {
        "task": "image_segmentation",
        "model": {"name": "transunet_vit_t16", "num_classes": 3,
                  "kwargs": {"head_channels": 16, "decoder_channels": [16, 16, 8, 8]}},
        "data": {"kind": "images", "train_images": str(tmp / "images"), "train_labels": str(tmp / "labels"),
                 "val_images": str(tmp / "images"), "val_labels": str(tmp / "labels"), "crop_size": [48, 64],
                 "size_divisor": 16, "class_names": ["background", "left", "right"]},
    }), 64 * 11  # the 48x64 picture enlarged 11 times


@pytest.mark.parametrize("which", ["detector", "segmenter"])
def test_evaluate_saves_side_by_side_pictures_and_the_same_metrics(which, request, tmp_path, capsys):
    (config, checkpoint), single = request.getfixturevalue(which)
    plain, drawn = tmp_path / "plain.json", tmp_path / "drawn" / "metrics.json"
    common = ["evaluate", str(config), "--checkpoint", str(checkpoint), "--device", "cpu"]
    assert main([*common, "--out", str(plain)]) == 0
    printed_plain = capsys.readouterr().out
    assert main([*common, "--out", str(drawn), "--save-pictures", "2"]) == 0
    assert capsys.readouterr().out == printed_plain
    assert json.loads(drawn.read_text()) == json.loads(plain.read_text())
    pictures = sorted((tmp_path / "drawn" / "pictures").glob("*.png"))
    assert len(pictures) == 2
    for path in pictures:
        width = Image.open(path).size[0]
        assert abs(width - 2 * single) <= 0.02 * 2 * single, (path.name, width, single)


def test_save_pictures_needs_a_folder(detector, capsys):
    (config, checkpoint), _ = detector
    assert main(["evaluate", str(config), "--checkpoint", str(checkpoint), "--device", "cpu",
                 "--save-pictures", "2"]) == 2
    assert "--save-pictures" in capsys.readouterr().err
