"""Two gloo processes, each with half of the data, give the single-process numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from densevit.evaluation import COCOEvaluator, MedicalEvaluator, SemanticEvaluator

WORLD = 2


def make_data():
    rng = np.random.default_rng(0)
    gt = {"images": [{"id": 10 + i, "width": 100, "height": 80} for i in range(6)],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": []}
    predictions = []
    for img in gt["images"]:
        boxes = []
        for _ in range(3):
            x, y, w, h = *rng.uniform(0, 50, 2), *rng.uniform(5, 40, 2)
            cat = int(rng.integers(1, 3))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": img["id"], "category_id": cat,
                                      "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            boxes.append(([x + 2, y, x + w, y + h + 1], cat))
        predictions.append({"image_id": img["id"], "boxes": torch.tensor([b for b, _ in boxes]),
                            "scores": torch.from_numpy(rng.random(3)), "labels": torch.tensor([c for _, c in boxes])})
    maps = [(torch.from_numpy(rng.integers(0, 4, (12, 10))), torch.from_numpy(rng.integers(0, 4, (12, 10))))
            for _ in range(4)]
    volumes = []
    for _ in range(4):
        gt_volume = np.zeros((8, 9, 10), dtype=np.int64)
        gt_volume[2:6, 2:7, 3:8] = 1
        pred_volume = gt_volume.copy()
        pred_volume[rng.random(gt_volume.shape) < 0.1] = 1
        volumes.append((pred_volume, gt_volume))
    return gt, predictions, maps, volumes


def evaluate(rank: int, world: int) -> dict:
    gt, predictions, maps, volumes = make_data()
    coco = COCOEvaluator(gt, backend="pycocotools")
    semantic = SemanticEvaluator(4)
    medical = MedicalEvaluator(2)
    coco.process(predictions[rank::world])
    if rank == 1:
        coco.process(predictions[:1])  # a padded sampler repeats an image on another rank
    for pred, target in maps[rank::world]:
        semantic.process(pred, target)
    for k in range(rank, len(volumes), world):
        medical.process(*volumes[k], case_id=f"case{k}")
    return {"coco": coco.compute()["bbox"]["AP"], "semantic": semantic.compute()["mIoU"],
            "medical": medical.compute()["per_class"][0]["hd95"]}


def worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        Path(f"{out}.{rank}").write_text(json.dumps(evaluate(rank, WORLD)))
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=WORLD, join=True)
    single = evaluate(0, 1)
    assert all(not math.isnan(v) and v > 0 for v in single.values())
    for rank in range(WORLD):
        assert json.loads((tmp_path / f"out.{rank}").read_text()) == single
