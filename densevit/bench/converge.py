"""Detection convergence: DETR's paper recipe, two-stage focal DETR and RT-DETR, AP against steps and time.

All three train from scratch with the same backbone trunk (``tiny_cnn``; RT-DETR also reads its
fifth stage for the stride-32 map), the same generated shapes (those of ``densevit demo
detect``), optimiser, schedule, batch and seed: only the head and its loss differ.

- ``detr_paper``: learned queries, softmax cross-entropy with a 0.1 no-object weight;
- ``detr_two_stage``: the demo's recipe, sigmoid focal loss and two-stage queries;
- ``rtdetr``: ``rtdetr_tiny`` (hybrid encoder, query selection, denoising, varifocal loss).

Each is validated (COCO AP on the validation set) every ``--eval-every`` steps. The JSON holds,
per variant, AP and AP50 against steps and training seconds (validation time excluded), and
the goal's two figures: the step at which RT-DETR first reaches the two-stage DETR's final AP50
(against that run's step count) and the final APs. ``--plot`` draws them into one PNG.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from densevit.config import load_config
from densevit.data.shapes import generate_shapes
from densevit.demos import demo_config_path
from densevit.engine.trainer import train

VARIANTS: dict[str, tuple[str, ...]] = {
    "detr_paper": ("model.name=detr_tiny", "model.kwargs.query_type=learned", "model.kwargs.num_queries=20",
                   "loss.classification=softmax", "loss.cost_class=1.0", "loss.weight_class=1.0"),
    "detr_two_stage": (),
    "rtdetr": ("model.name=rtdetr_tiny", "data.pipeline=detr"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per variant")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--work-dir", type=Path, default=Path("bench_out") / "converge")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--plot", type=Path, default=Path("bench_out") / "converge.png")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override applied to every variant (repeatable)")


def _curve(run_dir: Path) -> list[dict[str, float]]:
    """(step, training seconds, AP, AP50) of each validation in a run's ``metrics.jsonl``."""
    seconds, last_step, points = 0.0, 0, {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["split"] == "train" and entry.get("steps_per_s"):
            seconds += (entry["step"] - last_step) / entry["steps_per_s"]
            last_step = entry["step"]
        elif entry["split"] == "val":
            points[entry["step"]] = {"step": entry["step"], "seconds": round(seconds, 1),
                                     "AP": round(entry["AP"], 4), "AP50": round(entry["AP50"], 4)}
    return [points[step] for step in sorted(points)]


def train_variant(name: str, data_dir: Path, args: argparse.Namespace) -> list[dict[str, float]]:
    paths = (f"data.train_images={data_dir / 'images' / 'train'}", f"data.train_annotations={data_dir / 'train.json'}",
             f"data.val_images={data_dir / 'images' / 'val'}", f"data.val_annotations={data_dir / 'val.json'}")
    schedule = (f"train.iters={args.steps}", f"train.eval_every={args.eval_every}", f"train.log_every={args.eval_every}")
    cfg = load_config(demo_config_path("detect"), [*paths, *schedule, *VARIANTS[name], *args.overrides])
    cfg.train.progress = False
    run_dir = args.work_dir / name
    train(cfg, run_dir, device=args.device)
    return _curve(run_dir)


def first_step_reaching(curve: list[dict[str, float]], ap50: float) -> int | None:
    return next((point["step"] for point in curve if point["AP50"] >= ap50), None)


def plot(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for index, (name, curve) in enumerate(curves.items()):
        for axis, x in zip(axes, ("step", "seconds")):
            xs, color = [p[x] for p in curve], f"C{index}"
            axis.plot(xs, [p["AP50"] for p in curve], marker="o", color=color, label=f"{name} AP50")
            axis.plot(xs, [p["AP"] for p in curve], linestyle="--", color=color, label=f"{name} AP")
    for axis, label in zip(axes, ("optimiser steps", "training seconds")):
        axis.set_xlabel(label)
        axis.set_ylabel("COCO AP on the validation shapes")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = args.work_dir / "shapes"
    generate_shapes(data_dir, {"train": args.train_images, "val": 100}, image_size=128, seed=0)
    curves = {name: train_variant(name, data_dir, args) for name in args.variants}
    results: dict[str, Any] = {
        "setting": {"data": f"generated shapes, {args.train_images} train / 100 val images, 128x128",
                    "steps": args.steps, "batch": 16, "optimiser": "AdamW 1e-3, cosine, 30 warm-up steps",
                    "seed": 0, "device": args.device, "overrides": args.overrides},
        "curves": curves,
    }
    if {"detr_two_stage", "rtdetr"} <= set(curves):
        target = curves["detr_two_stage"][-1]["AP50"]
        reached = first_step_reaching(curves["rtdetr"], target)
        results["goal"] = {
            "detr_two_stage_final_AP50": target,
            "rtdetr_first_step_at_that_AP50": reached,
            "steps_ratio": round(reached / args.steps, 3) if reached else None,
            "final_AP": {name: curve[-1]["AP"] for name, curve in curves.items()},
            "rtdetr_beats_two_stage_AP": curves["rtdetr"][-1]["AP"] > curves["detr_two_stage"][-1]["AP"],
        }
    if args.plot:
        plot(curves, args.plot)
        results["plot"] = str(args.plot)
    return results
