"""Checkpoint files: atomic writes, refusal of poisoned weights and of pickled objects, clear errors."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from densevit.engine.checkpoint import (
    NonFiniteCheckpointError,
    find_resume_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from densevit.errors import UserInputError


class FailsWhenPickled:
    """Pickling this raises, after torch.save has already written the tensors before it."""

    def __reduce__(self):
        raise OSError("disk full")


class Payload:
    """An arbitrary class: loading it would mean running code named by the file."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((64, 64), value), "b": torch.zeros(64)}, "step": 3, "config": {"a": [1, 2]}}


def test_round_trip(tmp_path):
    path = tmp_path / "ck.pth"
    save_checkpoint(_state(1.5), path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.full((64, 64), 1.5))
    assert loaded["step"] == 3 and loaded["config"] == {"a": [1, 2]}


def test_failure_mid_write_leaves_old_file_intact(tmp_path):
    path = tmp_path / "last.pth"
    save_checkpoint(_state(1.0), path)
    before = _digest(path)
    broken = _state(2.0)
    broken["extra"] = FailsWhenPickled()
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(broken, path)
    assert _digest(path) == before
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((64, 64), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temporary file left behind


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_never_written(tmp_path, bad):
    path = tmp_path / "last.pth"
    save_checkpoint(_state(1.0), path)
    before = _digest(path)
    poisoned = _state(1.0)
    poisoned["model"]["w"][3, 7] = bad
    with pytest.raises(NonFiniteCheckpointError, match=r"last\.pth.*non-finite.*\bw\b"):
        save_checkpoint(poisoned, path)
    assert _digest(path) == before
    with pytest.raises(NonFiniteCheckpointError):
        save_checkpoint(poisoned, tmp_path / "new.pth")
    assert not (tmp_path / "new.pth").exists()


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_truncated_checkpoint_gives_clear_error(tmp_path, keep):
    path = tmp_path / "ck.pth"
    save_checkpoint(_state(1.0), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(UserInputError, match=r"ck\.pth: cannot read checkpoint: the file is truncated or corrupt"):
        load_checkpoint(path)


def test_garbage_and_missing_files(tmp_path):
    garbage = tmp_path / "notes.pth"
    garbage.write_text("this is not a checkpoint\n")
    with pytest.raises(UserInputError, match=r"notes\.pth: cannot read checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(UserInputError, match=r"absent\.pth: checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pth")


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(2)}, "payload": Payload()}, path)  # a plain torch.save
    with pytest.raises(UserInputError, match=r"evil\.pth: refused to load.*Payload.*never code"):
        load_checkpoint(path)


def test_resume_auto_takes_last_pth_never_the_weights_only_best(tmp_path):
    assert find_resume_checkpoint(tmp_path) is None
    save_checkpoint(_state(1.0), tmp_path / "best.pth")
    assert find_resume_checkpoint(tmp_path) is None  # best.pth holds no optimiser: not resumable
    save_checkpoint(_state(2.0), tmp_path / "last.pth")
    os.utime(tmp_path / "last.pth", ns=(1, 1))  # older than best.pth, still the one to resume
    assert find_resume_checkpoint(tmp_path) == tmp_path / "last.pth"
