"""The detection and segmentation demo configs as shipped (augmentation on), shortened: a seeded run
gives the same weights bit for bit when repeated, and with loader workers."""
from __future__ import annotations

import pytest
import torch

from densevit.config import load_config
from densevit.data.shapes import generate_shapes
from densevit.demos import demo_config_path
from densevit.engine.checkpoint import load_checkpoint
from densevit.engine.trainer import train

SHORT = ("train.iters=4", "train.batch_size=4", "train.final_eval=skip", "train.log_every=1")


def _detection(tmp_path) -> tuple[str, ...]:
    data = tmp_path / "shapes"
    generate_shapes(data, {"train": 24, "val": 4}, image_size=128, seed=0)
    return (f"data.train_images={data / 'images' / 'train'}", f"data.train_annotations={data / 'train.json'}",
            f"data.val_images={data / 'images' / 'val'}", f"data.val_annotations={data / 'val.json'}")


def _segmentation(tmp_path) -> tuple[str, ...]:
    return (f"data.root={tmp_path / 'phantoms'}", "data.phantom_cases=3", "data.phantom_val_cases=1")


@pytest.mark.parametrize(("demo", "data"), [("detect", _detection), ("segment", _segmentation)])
def test_a_seeded_demo_config_repeats_exactly_with_and_without_workers(tmp_path, demo, data):
    overrides = (*data(tmp_path), *SHORT)
    finals = []
    for run, workers in (("first", 0), ("again", 0), ("workers", 2)):
        cfg = load_config(demo_config_path(demo), [*overrides, f"train.num_workers={workers}"])
        cfg.train.progress = False
        train(cfg, tmp_path / run, device="cpu")
        finals.append(load_checkpoint(tmp_path / run / "last.pth")["model"])
    shipped = load_config(demo_config_path(demo))
    assert getattr(shipped.data, "hflip", 0) > 0 or getattr(shipped.data, "augment", "none") != "none"
    for other in finals[1:]:
        assert all(torch.equal(finals[0][name], other[name]) for name in finals[0])
