"""``densevit demo classify``: generated shapes -> a small CNN classifier trained on the CPU -> top-1, confusion matrix.

Writes under ``out_dir``: ``shapes/`` (the generated ImageFolder set: ``train/<class>/`` and
``val/<class>/``, one shape per picture), ``run/`` (the training run), ``predictions/``
(``predictions.csv`` for a few validation pictures, top-5 with probabilities) and
``confusion.png`` (the validation confusion matrix; needs matplotlib, the ``logs`` extra).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from densevit.config import load_config
from densevit.data.coco_json import read_json
from densevit.data.shapes import SHAPE_CLASSES, generate_shapes
from densevit.demos import demo_config_path
from densevit.engine.checkpoint import LAST
from densevit.engine.trainer import train
from densevit.errors import note
from densevit.inference import PredictOptions, Predictor

TRAIN_IMAGES = 900
VAL_IMAGES = 150
PREDICTED = 3  # validation pictures per class shown by densevit predict


def generate_shape_folders(root: Path, splits: dict[str, int], seed: int = 0) -> None:
    """``root/<split>/<shape>/*.png``: the detection demo's shapes, one per 64x64 picture."""
    coco_dir = root / "coco"
    files = generate_shapes(coco_dir, splits, image_size=64, max_objects=1, min_side=24, max_side=48, seed=seed)
    for split, annotation_file in files.items():
        coco = read_json(annotation_file)
        names = {c["id"]: c["name"] for c in coco["categories"]}
        label = {a["image_id"]: names[a["category_id"]] for a in coco["annotations"]}
        for name in SHAPE_CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for image in coco["images"]:
            shutil.move(coco_dir / "images" / split / image["file_name"],
                        root / split / label[image["id"]] / image["file_name"])
    shutil.rmtree(coco_dir)


def plot_confusion(confusion: Sequence[Sequence[int]], names: Sequence[str], path: Path) -> bool:
    """The confusion matrix as a PNG (rows: truth, columns: predicted); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from densevit.io import atomic_path

    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.2 * len(names) + 1.5))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    peak = max(max(row) for row in confusion) or 1
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


def run_demo(out_dir: Path, device: str = "auto", overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Generate shapes, train, evaluate, predict and plot; returns top-1 and timings.

    ``overrides`` are extra ``--set`` style config overrides (tests shorten the run with them).
    """
    out_dir = Path(out_dir).resolve()
    start = time.perf_counter()
    data_dir = out_dir / "shapes"
    if data_dir.exists():
        shutil.rmtree(data_dir)  # a set left by an earlier run would mix with the new one
    generate_shape_folders(data_dir, {"train": TRAIN_IMAGES, "val": VAL_IMAGES})
    cfg = load_config(demo_config_path("classify"), [f"data.root={data_dir}", *overrides])
    cfg.train.progress = False
    metrics = train(cfg, out_dir / "run", device=device)
    train_seconds = time.perf_counter() - start

    predictor = Predictor.from_checkpoint(out_dir / "run" / LAST, PredictOptions(device=device))
    shown = [path for name in SHAPE_CLASSES for path in sorted((data_dir / "val" / name).glob("*.png"))[:PREDICTED]]
    predictor.predict(shown, out_dir / "predictions")
    picture = out_dir / "confusion.png"
    if not plot_confusion(metrics["confusion"], [row["class"] for row in metrics["per_class"]], picture):
        note("matplotlib is not installed (pip install densevit[logs]): no confusion.png")
        picture = None
    return {
        "top1": round(float(metrics["top1"]), 4),
        "mean_class_acc": round(float(metrics["mean_class_acc"]), 4),
        "train_seconds": round(train_seconds, 1),
        "predictions": str(out_dir / "predictions"),
        "confusion": str(picture) if picture else None,
    }
