"""Exact resume on the demo configs as shipped (augmentation on): a run stopped by SIGINT at any
step, or killed by SIGKILL after a checkpoint, and resumed with ``--resume auto`` ends with the
same weights, bit for bit, as the run that was never stopped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_reproducible_demos import _detection, _segmentation

from densevit.demos import demo_config_path
from densevit.engine.checkpoint import load_checkpoint

LENGTH = ("train.iters=8", "train.batch_size=4", "train.checkpoint_every=2", "train.eval_every=0",
          "train.final_eval=skip", "train.log_every=1", "train.progress=false", "train.num_workers=1")
SETUPS = {"detect": (_detection, ()), "segment": (_segmentation, ()),
          "detect-rtdetr": (_detection, ("model.name=rtdetr_tiny",))}


def _command(demo: str, overrides: tuple[str, ...], out: Path, *extra: str) -> list[str]:
    sets = [a for s in overrides for a in ("--set", s)]
    return [sys.executable, "-m", "densevit", "train", str(demo_config_path(demo.split("-")[0])), *sets,
            "--out", str(out), "--device", "cpu", *extra]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name} appeared: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize(("demo", "stop"), [
    ("detect", signal.SIGINT),
    ("segment", signal.SIGKILL),
    pytest.param("detect", signal.SIGKILL, marks=pytest.mark.slow),
    pytest.param("segment", signal.SIGINT, marks=pytest.mark.slow),
    pytest.param("detect-rtdetr", signal.SIGKILL, marks=pytest.mark.slow),
])
def test_a_stopped_and_resumed_demo_run_ends_as_the_run_never_stopped(tmp_path, demo, stop):
    make_data, model = SETUPS[demo]
    overrides = (*make_data(tmp_path), *LENGTH, *model)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(_command(demo, overrides, tmp_path / "whole"), env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]

    run = tmp_path / "stopped"
    proc = subprocess.Popen(_command(demo, overrides, run), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # SIGINT as soon as training has begun (any step); SIGKILL once the first checkpoint exists.
    _wait_for(run / ("metrics.jsonl" if stop == signal.SIGINT else "last.pth"), proc)
    proc.send_signal(stop)
    proc.communicate(timeout=300)
    assert proc.returncode == (130 if stop == signal.SIGINT else -signal.SIGKILL), proc.returncode
    stopped_at = load_checkpoint(run / "last.pth")["step"]
    assert stopped_at < 8

    resumed = subprocess.run(_command(demo, overrides, run, "--resume", "auto"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {stopped_at}/8" in resumed.stderr
    final, reference = load_checkpoint(run / "last.pth"), load_checkpoint(tmp_path / "whole" / "last.pth")
    assert final["step"] == reference["step"] == 8
    for part in ("model", "optimizer"):
        a, b = final[part], reference[part]
        if part == "optimizer":
            a, b = a["state"], b["state"]
            a = {f"{k}.{n}": v for k, s in a.items() for n, v in s.items()}
            b = {f"{k}.{n}": v for k, s in b.items() for n, v in s.items()}
        assert a.keys() == b.keys()
        differ = [name for name in a if not torch.equal(a[name], b[name])]
        assert not differ, f"{part}: {len(differ)} tensors differ, first {differ[:3]}"
