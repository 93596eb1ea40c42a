"""DDP on CPU: two gloo processes under torchrun train exactly as one process with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_segmentation_task import CONFIG, toy_config

from densevit.engine.checkpoint import load_checkpoint
from densevit.engine.logs import read_records
from densevit.engine.trainer import train
from densevit.errors import UserInputError

HERE = Path(__file__).resolve().parent
# Dropout and flips draw per-process random numbers, which one process cannot reproduce.
SAME_DATA = ("model.kwargs={dropout: 0.0}", "data.flip=false", "train.epochs=2")


def test_two_gloo_processes_match_one_process(tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    sets = [arg for s in (*SAME_DATA, "train.batch_size=4") for arg in ("--set", s)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "densevit", "train", str(CONFIG), "--out", str(ddp_dir), "--device", "cpu", *sets]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # only rank 0 reports

    single_metrics = train(toy_config(*SAME_DATA, "train.batch_size=8"), single_dir, device="cpu")

    ddp_state, single_state = load_checkpoint(ddp_dir / "last.pth"), load_checkpoint(single_dir / "last.pth")
    assert ddp_state["step"] == single_state["step"] == 4
    assert ddp_state["world_size"] == 2 and len(ddp_state["rng"]) == 2
    for name, value in single_state["model"].items():
        torch.testing.assert_close(ddp_state["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)

    ddp_records, single_records = read_records(ddp_dir / "metrics.jsonl"), read_records(single_dir / "metrics.jsonl")
    assert [(r["split"], r["step"]) for r in ddp_records] == [(r["split"], r["step"]) for r in single_records]
    for a, b in zip(ddp_records, single_records):  # training losses averaged over both processes
        for key in ("loss", "loss_ce", "lr", "mIoU"):
            if key in b:
                assert abs(a[key] - b[key]) < 1e-4, (a, b)
    with pytest.raises(UserInputError, match="written by 2 processes; resume with the same number"):
        train(toy_config(*SAME_DATA, "train.batch_size=8"), tmp_path / "other", resume=str(ddp_dir / "last.pth"), device="cpu")
    ddp_metrics = json.loads((ddp_dir / "metrics.json").read_text())
    assert ddp_metrics["images"] == 8  # every validation image scored once across the two shards
    assert abs(ddp_metrics["mIoU"] - single_metrics["mIoU"]) < 1e-4
