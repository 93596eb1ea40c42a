"""RT-DETR through the commands a user chains, on real photos (voc100): ``train`` (RT-DETR's
pipeline, batch scales, EMA) -> ``evaluate`` -> ``predict`` -> ``score coco`` -> ``export`` ->
``predict --onnx``; the numbers must agree. Then the small model learns the generated shapes (slow)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from densevit.cli import main
from densevit.data.shapes import generate_shapes
from densevit.demos import demo_config_path
from densevit.engine.checkpoint import load_checkpoint
from densevit.evaluation.coco import STAT_NAMES


def last_json(text: str) -> dict:
    return json.loads(text[text.index("{"):])


@pytest.fixture(scope="module")
def voc_run(real_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rtdetr")
    root = real_data / "voc100"
    config = {
        "task": "detection", "name": "rtdetr_voc", "seed": 0,
        "model": {"name": "rtdetr_tiny", "num_classes": 0},
        "data": {"train_images": str(root / "images"), "train_annotations": str(root / "annotations" / "instances.json"),
                 "val_images": str(root / "images"), "val_annotations": str(root / "annotations" / "instances.json"),
                 "input_size": 96, "batch_scales": [64, 96, 128], "augment_stop_epoch": 1, "max_detections": 30},
        "optim": {"lr": 0.0005},
        "train": {"iters": 4, "batch_size": 50, "eval_batch_size": 20, "eval_every": 0, "checkpoint_every": 0,
                  "precision": "fp32", "progress": False, "tensorboard": False, "plot_curves": False,
                  "log_every": 1, "ema": {"decay": 0.9, "warmup": 2}},
    }
    path = tmp / "rtdetr_voc.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--out", str(tmp / "run"), "--device", "cpu"]) == 0
    return tmp, path, root


def test_evaluate_and_predict_then_score_give_the_training_runs_numbers(voc_run, tmp_path, capsys):
    tmp, config, root = voc_run
    trained = json.loads((tmp / "run" / "metrics.json").read_text())
    checkpoint = load_checkpoint(tmp / "run" / "last.pth")
    assert checkpoint["ema_updates"] == 4 and "train_model" in checkpoint  # validated with the EMA weights
    capsys.readouterr()
    assert main(["evaluate", str(config), "--checkpoint", str(tmp / "run" / "last.pth"), "--device", "cpu"]) == 0
    assert last_json(capsys.readouterr().out) == trained

    pictures = sorted((root / "images").glob("*.jpg"))
    assert main(["predict", "--checkpoint", str(tmp / "run" / "last.pth"), *map(str, pictures), "--out",
                 str(tmp_path / "pred"), "--device", "cpu", "--batch-size", "8"]) == 0
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert len(results) == 30 * len(pictures)  # top max_detections over queries x classes, no NMS
    capsys.readouterr()
    scored_file = tmp_path / "scored.json"
    assert main(["score", "coco", str(root / "annotations" / "instances.json"), str(tmp_path / "pred" / "results.json"),
                 "--out", str(scored_file)]) == 0
    scored = json.loads(scored_file.read_text())["bbox"]
    assert {k: scored[k] for k in STAT_NAMES} == {k: trained[k] for k in STAT_NAMES}


def test_exported_graph_predicts_as_the_checkpoint(voc_run, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    tmp, _, root = voc_run
    onnx_file = tmp_path / "rtdetr.onnx"
    assert main(["export", str(tmp / "run" / "last.pth"), "--out", str(onnx_file)]) == 0
    pictures = sorted((root / "images").glob("*.jpg"))[:4]
    for source, out in ((["--checkpoint", str(tmp / "run" / "last.pth")], "pt"), (["--onnx", str(onnx_file)], "onnx")):
        assert main(["predict", *source, *map(str, pictures), "--out", str(tmp_path / out), "--device", "cpu",
                     "--batch-size", "2"]) == 0
    pt, onnx = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("pt", "onnx"))
    assert len(pt) == len(onnx) == 4 * 30
    assert np.allclose([r["score"] for r in pt], [r["score"] for r in onnx], atol=1e-4)
    assert np.allclose([r["bbox"] for r in pt], [r["bbox"] for r in onnx], atol=0.05)


@pytest.mark.slow
def test_rtdetr_tiny_learns_the_generated_shapes(tmp_path, capsys):
    """The convergence benchmark's RT-DETR run on a 200-step schedule (measured: AP50 0.74, AP 0.64)."""
    data = tmp_path / "shapes"
    generate_shapes(data, {"train": 1000, "val": 100}, image_size=128, seed=0)
    overrides = [f"data.train_images={data / 'images' / 'train'}", f"data.train_annotations={data / 'train.json'}",
                 f"data.val_images={data / 'images' / 'val'}", f"data.val_annotations={data / 'val.json'}",
                 "model.name=rtdetr_tiny", "data.pipeline=detr", "train.iters=200"]
    args = ["train", str(demo_config_path("detect")), "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main([*args, *(x for o in overrides for x in ("--set", o))]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["AP50"] >= 0.65 and metrics["AP"] >= 0.55


def test_the_detection_demo_runs_with_rtdetr(tmp_path, capsys):
    assert main(["demo", "detect", "--out", str(tmp_path), "--device", "cpu", "--set", "model.name=rtdetr_tiny",
                 "--set", "train.iters=2", "--set", "train.log_every=1"]) == 0
    printed = capsys.readouterr().out
    assert "demo detect:" in printed and yaml.safe_load((tmp_path / "detect" / "run" / "config.yaml").read_text())[
        "model"]["name"] == "rtdetr_tiny"
    assert len(list((tmp_path / "detect" / "predictions" / "pictures").glob("*.png"))) == 8
    assert main(["demo", "--out", str(tmp_path), "--set", "train.iters=2"]) == 2  # which demo?
    assert "name the demo" in capsys.readouterr().err
