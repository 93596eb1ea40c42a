"""Every dataset config has a CPU-sized sibling that a laptop can train in minutes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from densevit.config import load_config
from densevit.engine.build import build_task

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FULL = sorted(p for p in CONFIGS.rglob("*.yaml") if not p.stem.endswith("_cpu") and not p.stem.startswith("demo"))
CPU = sorted(CONFIGS.rglob("*_cpu.yaml"))


def dataset_of(path: Path) -> tuple:
    """What identifies a config's data: its kind and where its training data lies."""
    data = load_config(path).data
    return tuple(getattr(data, key, None) for key in ("kind", "root", "train_root", "train_images",
                                                      "train_annotations"))


@pytest.mark.parametrize("path", FULL, ids=lambda p: p.stem)
def test_every_dataset_config_has_a_cpu_sibling(path):
    assert dataset_of(path) in {dataset_of(cpu) for cpu in CPU}


@pytest.mark.parametrize("path", CPU, ids=lambda p: p.stem)
def test_cpu_configs_are_laptop_sized(path):
    cfg = load_config(path)
    if cfg.task in ("detection", "classification"):  # the class count comes from data not at hand here
        cfg = load_config(path, ["model.num_classes=20"])
    assert cfg.train.num_workers == 0 and (cfg.train.iters or 0) <= 1000 and cfg.train.epochs == 0
    assert cfg.train.final_eval == "full" or cfg.train.eval_samples > 0
    assert cfg.model.pretrained is None  # nothing to fetch before the first step
    with torch.device("meta"):
        model = build_task(cfg).build_model()
    assert sum(p.numel() for p in model.parameters()) < 3e6
    header = path.read_text().splitlines()[0]
    assert header.startswith("# CPU-sized sibling of")
