"""``densevit export`` and ``predict --onnx``: the graph gives PyTorch's outputs, or no file is written."""
from __future__ import annotations

import json

import numpy as np
import pytest
from checkpoint_helpers import untrained_checkpoint
from PIL import Image
from torch import nn

from densevit.cli import main
from densevit.inference import PredictOptions, Predictor
from densevit.inference.export import export_onnx, read_metadata
from densevit.models import MODELS

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _pictures(folder, sizes) -> list:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for k, (h, w) in enumerate(sizes):
        coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((w, h), Image.BICUBIC).save(folder / f"p{k}.png")
        paths.append(folder / f"p{k}.png")
    return paths


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("det")
    path = untrained_checkpoint(tmp / "model.pth", {
        "task": "detection", "model": {"name": "detr_tiny", "num_classes": 3},
        "data": {"class_names": ["a", "b", "c"], "val_size": 96, "max_size": 128},
        "loss": {"classification": "sigmoid"},
    })
    report = export_onnx(path, tmp / "det.onnx")
    return tmp, path, report


def test_detector_exports_with_dynamic_sizes_and_predicts_as_the_checkpoint(detector, tmp_path):
    tmp, checkpoint, report = detector
    assert report["sizes"] == "dynamic batch and image size" and report["max_abs_difference"] <= 1e-4
    metadata = read_metadata(tmp / "det.onnx")
    assert metadata["task"] == "detection" and json.loads(metadata["class_names"]) == ["a", "b", "c"]
    pictures = _pictures(tmp_path / "in", [(96, 128), (80, 96), (128, 96)])  # three sizes, one batch
    options = PredictOptions(batch_size=3, device="cpu")
    Predictor.from_checkpoint(checkpoint, options).predict(pictures, tmp_path / "pt")
    Predictor.from_onnx(tmp / "det.onnx", options).predict(pictures, tmp_path / "onnx")
    pt, onnx = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("pt", "onnx"))
    assert len(pt) == len(onnx) == 3 * 20 * 3  # top 60: every (query, class) pair of 20 queries and 3 classes
    assert [r["category_id"] for r in pt] == [r["category_id"] for r in onnx]
    assert np.allclose([r["score"] for r in pt], [r["score"] for r in onnx], atol=2e-5)
    assert np.allclose([r["bbox"] for r in pt], [r["bbox"] for r in onnx], atol=0.02)


def test_a_graph_that_does_not_match_is_not_written(detector, tmp_path):
    tmp, checkpoint, _ = detector
    target = tmp_path / "det.onnx"
    target.write_bytes(b"the previous file")
    code = main(["export", str(checkpoint), "--out", str(target), "--tolerance", "0"])
    # onnxruntime's float rounding differs from PyTorch's, so a zero tolerance refuses the file
    assert code == 2 and target.read_bytes() == b"the previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["det.onnx"]  # no temporary file left behind


class SizeBound(nn.Module):
    """A segmenter whose computation depends on the input's width: its graph holds at one size only."""

    size_divisor = 8
    in_chans = 3

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

    def forward(self, x):
        return self.conv(x) * float(x.shape[-1])  # a Python float of the width: fixed when exported


MODELS.register("test_size_bound")(lambda num_classes, **kw: SizeBound(num_classes))


def test_a_model_bound_to_one_size_is_exported_at_that_size_and_says_so(tmp_path):
    checkpoint = untrained_checkpoint(tmp_path / "model.pth", {
        "task": "image_segmentation", "model": {"name": "test_size_bound", "num_classes": 4},
        "data": {"kind": "camvid", "crop_size": [16, 24], "class_names": ["a", "b", "c", "d"]},
    })
    report = export_onnx(checkpoint, tmp_path / "seg.onnx", sample=_pictures(tmp_path / "in", [(16, 24)])[0])
    assert report["sizes"] == "dynamic batch, image size fixed at 16x24"
    assert read_metadata(tmp_path / "seg.onnx")["sizes"] == json.dumps(report["sizes"])


def test_predict_onnx_through_the_command_line_gives_the_checkpoints_label_maps(tmp_path, capsys):
    checkpoint = untrained_checkpoint(tmp_path / "model.pth", {
        "task": "image_segmentation", "model": {"name": "test_size_bound", "num_classes": 4},
        "data": {"kind": "camvid", "crop_size": [16, 24], "class_names": ["a", "b", "c", "d"]},
    })
    small, large = _pictures(tmp_path / "in", [(16, 24), (40, 56)])
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "seg.onnx"), "--sample", str(small)]) == 0
    for mode, picture in (("whole", small), ("slide", large)):
        for source in ("--checkpoint", "--onnx"):
            model = checkpoint if source == "--checkpoint" else tmp_path / "seg.onnx"
            out = tmp_path / f"{mode}{source}"
            assert main(["predict", source, str(model), str(picture), "--out", str(out), "--mode", mode]) == 0
        pt, onnx = (np.asarray(Image.open(tmp_path / f"{mode}{s}" / f"{picture.stem}.png")) for s in ("--checkpoint", "--onnx"))
        assert pt.shape == picture_shape(picture) and np.array_equal(pt, onnx)
    capsys.readouterr()
    # the graph holds at 16 x 24 only: a larger picture in one piece is refused, naming the graph's sizes
    assert main(["predict", "--onnx", str(tmp_path / "seg.onnx"), str(large), "--out", str(tmp_path / "x"),
                 "--mode", "whole"]) == 2
    assert "image size fixed at 16x24" in capsys.readouterr().err


def picture_shape(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.height, image.width
