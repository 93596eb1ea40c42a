"""The generated shapes set is valid COCO; the detection demo reaches its AP50 (slow)."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from densevit.config import load_config
from densevit.data.shapes import SHAPE_CLASSES, generate_shapes
from densevit.demos import demo_config_path


def test_generated_shapes_are_valid_coco(tmp_path):
    files = generate_shapes(tmp_path, {"train": 6, "val": 3}, image_size=64, min_side=8, max_side=20, seed=3)
    train = json.loads(files["train"].read_text())
    val = json.loads(files["val"].read_text())
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(files["train"]))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
    assert len(coco.getAnnIds()) >= 6
    for ann in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = ann["bbox"]
        assert 8 <= w <= 20 and 8 <= h <= 20 and x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
        image = np.asarray(Image.open(tmp_path / "images" / "train" / coco.imgs[ann["image_id"]]["file_name"]))
        assert image.shape == (64, 64, 3)


def test_the_repository_demo_config_is_the_shipped_one_with_paths():
    from pathlib import Path

    shipped = load_config(demo_config_path("detect"))
    repo = load_config(Path(__file__).resolve().parents[2] / "configs" / "detection" / "demo_detect.yaml")
    assert repo.model == shipped.model and repo.loss == shipped.loss and repo.train == shipped.train
    assert repo.data.train_annotations.endswith("demo_out/detect/shapes/train.json")


@pytest.mark.slow
def test_demo_reaches_ap50(tmp_path):
    from densevit.demos.detect import run_demo

    metrics = run_demo(tmp_path, device="cpu")
    assert metrics["AP50"] >= 0.7
    assert len(list((tmp_path / "predictions" / "pictures").glob("*.png"))) == 8
