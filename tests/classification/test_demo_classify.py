"""``densevit demo classify``: generated shapes, a CNN trained on the CPU, top-1 and a confusion matrix."""
from __future__ import annotations

import csv

import pytest

from densevit.demos.classify import generate_shape_folders, run_demo


def test_the_shape_folders_hold_one_labelled_shape_per_picture(tmp_path):
    generate_shape_folders(tmp_path, {"train": 12, "val": 6})
    counts = {split: sum(1 for _ in (tmp_path / split).rglob("*.png")) for split in ("train", "val")}
    assert counts == {"train": 12, "val": 6}
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["circle", "square", "triangle"]
    assert not (tmp_path / "coco").exists()


@pytest.mark.slow
def test_the_demo_learns_the_shapes(tmp_path):
    result = run_demo(tmp_path, device="cpu")
    assert result["top1"] >= 0.9
    assert (tmp_path / "confusion.png").stat().st_size > 0
    with open(tmp_path / "predictions" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and sum(row["path"].split("/")[-2] == row["label"] for row in rows) >= 8
