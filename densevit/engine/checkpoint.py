"""Checkpoint files: written atomically, read as data only.

A checkpoint is one ``torch.save`` file holding plain containers and tensors:

* ``model``: the model's state dict;
* ``config``: the experiment config as a plain dict (``ExperimentConfig.to_dict()``);
* ``class_names``: the names of the classes the model predicts;
* ``step``, ``epoch``, ``metrics``: when it was written and the validation metrics then;
* with ``train.ema``, ``model`` is the weights' moving average (what validation scored);
  ``last.pth`` adds ``train_model`` (the weights being trained) and ``ema_updates``;
* for resuming (``last.pth`` only; ``best.pth`` is weights, config and metrics):
  ``optimizer``, ``scheduler``, ``scaler``, ``batch_in_epoch`` (the sampler's position in the
  epoch), ``best`` and ``rng`` (python, numpy, torch and CUDA generator states, one entry per
  process).

Writing goes through a temporary file in the target's folder and ``os.replace``, so a crash
mid-write leaves the previous file whole. Reading uses ``torch.load(weights_only=True)``: a
checkpoint is data, never code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from densevit.errors import UserInputError
from densevit.io import atomic_path
from densevit.weights import read_weights

LAST = "last.pth"
BEST = "best.pth"


class NonFiniteCheckpointError(RuntimeError):
    """Refused to write a checkpoint whose model holds NaN or Inf values."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically.

    Refuses (``NonFiniteCheckpointError``, nothing written) when any floating-point tensor in
    ``state["model"]`` is NaN or Inf, so that a diverged run never replaces a good file.
    """
    path = Path(path)
    bad = nonfinite_tensors(state.get("model", {}))
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteCheckpointError(f"{path}: not written: non-finite values in model tensors {shown}")
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def nonfinite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state_dict`` holding a NaN or Inf."""
    return [
        name
        for name, value in state_dict.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()
    ]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (or any plain state-dict file).

    Raises ``UserInputError`` naming the file when it is missing, truncated or corrupt, or
    holds pickled objects other than tensors and plain containers (:func:`densevit.weights.read_weights`).
    """
    return read_weights(path, "checkpoint", map_location)


def model_state(checkpoint: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict inside ``checkpoint`` (a bare state dict is accepted as is)."""
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError(f"{path}: field 'model': expected a state dict of tensors")
    return state


def remove_partial_checkpoints(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that were killed (SIGKILL, out of memory)
    before they were renamed into place; they can be as large as a checkpoint. Returns them."""
    partial = [p for name in (LAST, BEST) for p in Path(run_dir).glob(f".{name}.*.tmp*")]
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def find_resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The resumable checkpoint of a run directory (``last.pth``; ``best.pth`` holds weights only), or None."""
    path = Path(run_dir) / LAST
    return path if path.is_file() else None


def resume_path(resume: str | Path | None, run_dir: Path, say: Callable[[str], None]) -> Path | None:
    """``--resume``: a path, ``auto`` (the run's ``last.pth``, or a fresh start, said with ``say``) or None."""
    if resume is None or resume == "":
        return None
    if str(resume) == "auto":
        found = find_resume_checkpoint(run_dir)
        if found is None:
            say(f"--resume auto: no checkpoint in {run_dir}; starting from scratch")
        return found
    return Path(resume)
