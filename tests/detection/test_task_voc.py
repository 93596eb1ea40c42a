"""The detection task end to end on real photos (voc100): train a few steps, evaluate, predict."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from densevit.config import build_config, load_config
from densevit.engine.checkpoint import LAST
from densevit.engine.trainer import train
from densevit.evaluation.coco import STAT_NAMES, COCOEvaluator
from densevit.inference import PredictOptions, Predictor

REPO = Path(__file__).resolve().parents[2]


def _voc_config(real_data: Path, **train) -> dict:
    root = real_data / "voc100"
    return {
        "task": "detection",
        "name": "voc_smoke",
        "seed": 0,
        "model": {"name": "detr_tiny", "num_classes": 0, "kwargs": {"num_queries": 10}},
        "data": {"train_images": str(root / "images"), "train_annotations": str(root / "annotations" / "instances.json"),
                 "val_images": str(root / "images"), "val_annotations": str(root / "annotations" / "instances.json"),
                 "train_scales": [96, 128], "max_size": 160, "crop_resize_scales": [128], "crop_size": [64, 112],
                 "val_size": 96},
        "loss": {"classification": "sigmoid", "cost_class": 2.0, "weight_class": 2.0},
        "optim": {"lr": 0.0002},
        "train": {"iters": 3, "batch_size": 2, "eval_batch_size": 25, "eval_every": 0, "checkpoint_every": 0, "precision": "fp32",
                  "progress": False, "tensorboard": False, "plot_curves": False, "log_every": 1, **train},
    }


def test_train_evaluate_predict_on_voc100(real_data, tmp_path):
    # One image per forward pass in both: DETR's outputs depend a little on how a batch pads its
    # images (BatchNorm's bias reaches the padded pixels, which convolutions then see).
    cfg = build_config(_voc_config(real_data, eval_batch_size=1))
    metrics = train(cfg, tmp_path / "run", device="cpu")

    predictor = Predictor.from_checkpoint(tmp_path / "run" / LAST, PredictOptions(score_threshold=0.0, batch_size=1))
    assert predictor.task.class_names()[:2] == ["person", "aeroplane"]
    every = sorted((real_data / "voc100" / "images").glob("*.jpg"))
    predictor.predict(every, tmp_path / "all")
    gt_file = real_data / "voc100" / "annotations" / "instances.json"
    # predict, then score the file: the numbers evaluation gave at the end of training, exactly
    scorer = COCOEvaluator(gt_file, backend="pycocotools")
    scorer.add_results(json.loads((tmp_path / "all" / "results.json").read_text()))
    scored = scorer.compute()["bbox"]
    assert {name: scored[name] for name in STAT_NAMES} == {name: metrics[name] for name in STAT_NAMES}

    images = every[:3]
    predictor.predict(images, tmp_path / "pred")
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert len(results) == 3 * 100  # max_detections (query, class) pairs per image
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        dt = gt.loadRes(results)
    by_name = {img["file_name"]: img["id"] for img in gt.dataset["images"]}
    assert {r["image_id"] for r in results} == {by_name[p.name] for p in images}
    assert {r["category_id"] for r in results} <= set(gt.getCatIds())
    assert len(dt.getAnnIds()) == len(results)
    for path in images:
        (width, height), (w, h) = Image.open(tmp_path / "pred" / "pictures" / f"{path.stem}.png").size, Image.open(path).size
        zoom = width // w  # pictures under 512 px on their shorter side are enlarged by a whole factor to be read
        assert (width, height) == (w * zoom, h * zoom) and min(width, height) >= 512 > min(width - w, height - h)


def test_every_detection_config_loads():
    configs = sorted((REPO / "configs" / "detection").glob("*.yaml"))
    assert {p.name for p in configs} >= {"detr_r50_coco.yaml", "detr_vit_s16_coco.yaml", "detr_swin_t_coco.yaml",
                                         "detr_custom.yaml", "demo_detect.yaml", "rtdetr_r50_coco.yaml",
                                         "rtdetr_custom.yaml"}
    for path in configs:
        cfg = load_config(path)
        assert cfg.task == "detection" and cfg.model.name.startswith(("detr", "rtdetr"))
    paper = load_config(REPO / "configs" / "detection" / "detr_r50_coco.yaml")
    assert (paper.optim.lr, paper.optim.backbone_lr_mult, paper.optim.weight_decay) == (1e-4, 0.1, 1e-4)
    assert (paper.train.clip_grad_norm, paper.train.epochs, paper.schedule.milestone_epochs) == (0.1, 500, [400])
    assert paper.loss.classification == "softmax" and paper.loss.eos_coef == 0.1
    rtdetr = load_config(REPO / "configs" / "detection" / "rtdetr_r50_coco.yaml")  # RT-DETRv2's 6x recipe
    assert (rtdetr.optim.lr, rtdetr.optim.backbone_lr_mult, rtdetr.optim.weight_decay) == (1e-4, 0.1, 1e-4)
    assert (rtdetr.train.epochs, rtdetr.train.clip_grad_norm, rtdetr.train.ema.decay, rtdetr.train.sync_bn) == (
        72, 0.1, 0.9999, True)
    assert rtdetr.data.augment_stop_epoch == 71 and min(rtdetr.data.batch_scales) == 480
    assert max(rtdetr.data.batch_scales) == 800


def test_identity_labelled_coco_head_scores_ground_truth_boxes_perfectly(real_data):
    """A 91-class head whose labels are category ids (converted official weights): detections of
    ids absent from the ground truth are left out, the rest score AP 1 on the true boxes."""
    import torch
    from torchvision.ops import box_convert

    from densevit.detection.task import DetectionEvaluator

    gt_file = real_data / "voc100" / "annotations" / "instances.json"
    raw = json.loads(gt_file.read_text())
    evaluator = DetectionEvaluator(str(gt_file), list(range(91)))
    evaluator.reset()
    for image in raw["images"]:
        anns = [a for a in raw["annotations"] if a["image_id"] == image["id"]]
        boxes = box_convert(torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4), "xywh", "xyxy")
        labels = torch.tensor([a["category_id"] for a in anns] + [0, 55])  # 0 and 55: no such category
        junk = torch.tensor([[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 9.0, 9.0]], dtype=torch.float64)
        evaluator.process([{"boxes": torch.cat([boxes, junk]), "labels": labels,
                            "scores": torch.ones(len(labels), dtype=torch.float64)}],
                          [{"image_id": torch.tensor(image["id"])}])
    metrics = evaluator.compute()
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
