"""Classification end to end on real photos: the VOC sample cut into object crops (one folder per
class), a few training steps, ``evaluate``, then ``predict`` -> ``score`` gives the same numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from densevit.cli import main
from densevit.config import build_config
from densevit.engine.checkpoint import LAST
from densevit.engine.evaluate import evaluate
from densevit.engine.trainer import train
from densevit.evaluation.classification import score_files

MIN_SIDE = 24  # smaller boxes are too few pixels to call


def cut_crops(voc: Path, out: Path) -> dict[str, int]:
    """``out/<split>/<class>/<ann id>.jpg``: every third image's boxes go to val (classes seen in train only)."""
    coco = json.loads((voc / "annotations" / "instances.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    images = {i["id"]: i for i in coco["images"]}
    order = {image_id: n for n, image_id in enumerate(sorted(images))}
    crops: dict[str, list[tuple[dict, str]]] = {"train": [], "val": []}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        if min(w, h) >= MIN_SIDE and not ann.get("iscrowd"):
            crops["val" if order[ann["image_id"]] % 3 == 0 else "train"].append((ann, names[ann["category_id"]]))
    trained = {name for _, name in crops["train"]}
    counts = {}
    for split, items in crops.items():
        kept = [(a, n) for a, n in items if n in trained]
        for ann, name in kept:
            x, y, w, h = ann["bbox"]
            with Image.open(voc / "images" / images[ann["image_id"]]["file_name"]) as photo:
                (out / split / name).mkdir(parents=True, exist_ok=True)
                photo.convert("RGB").crop((x, y, x + w, y + h)).save(out / split / name / f"{ann['id']}.jpg")
        counts[split] = len(kept)
    counts["classes"] = len(trained)
    return counts


@pytest.fixture(scope="module")
def voc_crops(real_data, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("voc_crops")
    return out, cut_crops(real_data / "voc100", out)


def test_train_evaluate_then_predict_and_score_agree(voc_crops, tmp_path, capsys):
    root, counts = voc_crops
    assert counts["classes"] >= 15 and counts["train"] >= 120 and counts["val"] >= 50
    cfg = build_config({
        "task": "classification", "seed": 0,
        "model": {"name": "classifier_tiny_cnn", "num_classes": 0},
        "data": {"kind": "folder", "root": str(root), "img_size": 64, "crop_pct": 1.0},
        "loss": {"label_smoothing": 0.1, "mixup_alpha": 0.2, "cutmix_alpha": 1.0},
        "optim": {"lr": 0.003},
        "train": {"iters": 12, "batch_size": 16, "eval_every": 0, "checkpoint_every": 0, "progress": False,
                  "tensorboard": False, "plot_curves": False, "device": "cpu", "best_metric": "top1"},
    })
    final = train(cfg, tmp_path / "run", device="cpu")
    checkpoint = tmp_path / "run" / LAST
    evaluated = evaluate(cfg, checkpoint, device="cpu")
    assert evaluated["samples"] == counts["val"] and final["top1"] == evaluated["top1"]
    assert sorted(row["class"] for row in evaluated["per_class"]) == sorted(p.name for p in (root / "train").iterdir())

    assert main(["predict", "--checkpoint", str(checkpoint), *[str(p) for p in (root / "val").iterdir()],
                 "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(".jpg: ") == counts["val"]
    scored = score_files(tmp_path / "pred" / "predictions.csv", root / "val")
    assert scored["samples"] == evaluated["samples"]
    for key in ("top1", "top5", "mean_class_acc"):
        assert scored[key] == pytest.approx(evaluated[key], abs=1e-12), key
    evaluated_acc = {row["class"]: row["acc"] for row in evaluated["per_class"] if row["samples"]}
    assert {row["class"]: row["acc"] for row in scored["per_class"] if row["samples"]} == evaluated_acc

    # export -> predict --onnx: the same ranked classes
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "cls.onnx")]) == 0
    assert main(["predict", "--onnx", str(tmp_path / "cls.onnx"), *[str(p) for p in (root / "val").iterdir()],
                 "--out", str(tmp_path / "onnx"), "--device", "cpu"]) == 0
    from_graph = score_files(tmp_path / "onnx" / "predictions.csv", root / "val")
    assert {key: from_graph[key] for key in ("top1", "top5")} == {key: scored[key] for key in ("top1", "top5")}
