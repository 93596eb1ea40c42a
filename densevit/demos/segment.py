"""``densevit demo segment``: phantom CT volumes -> a small TransUNet trained on the CPU -> Dice, HD95, pictures.

Writes under ``out_dir``: ``phantoms/`` (the generated NIfTI cases), ``run/`` (the training run:
config, logs, checkpoint, metrics), ``predictions/`` (the validation cases segmented by the
trained model as NIfTI, with PNG overlays) and ``comparisons/`` (per validation case, the slice
with the most foreground: ground truth | prediction, with a legend of the organs shown).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from densevit.config import load_config
from densevit.demos import demo_config_path
from densevit.engine.checkpoint import LAST
from densevit.engine.trainer import train
from densevit.inference import PredictOptions, Predictor
from densevit.inference.comparisons import save_comparisons


def run_demo(out_dir: Path, device: str = "auto", overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Generate phantoms, train, evaluate and draw; returns mean Dice, HD95 and timings.

    ``overrides`` are extra ``--set`` style config overrides."""
    out_dir = Path(out_dir).resolve()
    start = time.perf_counter()
    cfg = load_config(demo_config_path("segment"), [f"data.root={out_dir / 'phantoms'}", *overrides])
    cfg.train.progress = False
    metrics = train(cfg, out_dir / "run", device=device)
    train_seconds = time.perf_counter() - start

    predictor = Predictor.from_checkpoint(out_dir / "run" / LAST, PredictOptions(device=device))
    val_cases = sorted((out_dir / "phantoms" / "val" / "imagesTr").glob("*.nii.gz"))
    predictor.predict(val_cases, out_dir / "predictions")
    compared = save_comparisons(predictor.task, predictor.model, predictor.task.build_val_dataset(), len(val_cases),
                                out_dir / "comparisons", predictor.device)
    return {
        "mean_dice": round(float(metrics["mean_dice"]), 4),
        "mean_hd95_mm": round(float(metrics["mean_hd95"]), 2),
        **{k: round(float(v), 4) for k, v in metrics.items() if k.startswith("dice/")},
        "train_seconds": round(train_seconds, 1),
        "predictions": str(out_dir / "predictions"),
        "comparisons": str(compared[0].parent) if compared else None,
    }
