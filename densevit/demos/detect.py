"""``densevit demo detect``: generated shapes -> a small DETR trained on the CPU -> COCO AP, pictures.

Writes under ``out_dir``: ``shapes/`` (the generated COCO-format set), ``run/`` (the training
run: config, logs, checkpoint, metrics), ``predictions/`` (validation images with the
detections drawn, enlarged to be read, and their COCO results JSON) and ``comparisons/``
(ground truth | prediction for the first validation images).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from densevit.config import load_config
from densevit.data.shapes import generate_shapes
from densevit.demos import demo_config_path
from densevit.engine.checkpoint import LAST
from densevit.engine.trainer import train
from densevit.inference import PredictOptions, Predictor
from densevit.inference.comparisons import save_comparisons

TRAIN_IMAGES = 1000
VAL_IMAGES = 100
PICTURES = 8
COMPARED = 4  # ground truth | prediction pictures
SCORE_THRESHOLD = 0.4  # focal-loss (sigmoid) scores of correct detections are often below 0.5


def run_demo(out_dir: Path, device: str = "auto", overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Generate shapes, train, evaluate and draw; returns AP, AP50 and timings.

    ``overrides`` are extra ``--set`` style config overrides (tests shorten the run with them).
    """
    out_dir = Path(out_dir).resolve()
    start = time.perf_counter()
    data_dir = out_dir / "shapes"
    generate_shapes(data_dir, {"train": TRAIN_IMAGES, "val": VAL_IMAGES}, image_size=128, seed=0)
    paths = [
        f"data.train_images={data_dir / 'images' / 'train'}",
        f"data.train_annotations={data_dir / 'train.json'}",
        f"data.val_images={data_dir / 'images' / 'val'}",
        f"data.val_annotations={data_dir / 'val.json'}",
    ]
    cfg = load_config(demo_config_path("detect"), [*paths, *overrides])
    cfg.train.progress = False
    metrics = train(cfg, out_dir / "run", device=device)
    train_seconds = time.perf_counter() - start

    predictor = Predictor.from_checkpoint(out_dir / "run" / LAST,
                                          PredictOptions(score_threshold=SCORE_THRESHOLD, batch_size=PICTURES, device=device))
    pictures = sorted((data_dir / "images" / "val").glob("*.png"))[:PICTURES]
    predictor.predict(pictures, out_dir / "predictions")
    compared = save_comparisons(predictor.task, predictor.model, predictor.task.build_val_dataset(), COMPARED,
                                out_dir / "comparisons", predictor.device, SCORE_THRESHOLD)
    return {
        "AP": round(float(metrics["AP"]), 4),
        "AP50": round(float(metrics["AP50"]), 4),
        "train_seconds": round(train_seconds, 1),
        "predictions": str(out_dir / "predictions"),
        "comparisons": str(compared[0].parent) if compared else None,
    }
