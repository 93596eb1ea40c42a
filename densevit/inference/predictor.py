"""The :class:`Predictor`: a trained model run over files, whatever the task.

Each task's way of reading inputs and writing results is a *runner* registered in
:data:`RUNNERS` under the task's name (``detection``, ``image_segmentation``,
``volume_segmentation``); a custom task registers its own the same way::

    @RUNNERS.register("my_task")
    def predict_my_task(predictor: Predictor, inputs: list[Path], out_dir: Path) -> dict: ...

Videos among the inputs go to the task's entry in
:data:`~densevit.inference.video.VIDEO_RUNNERS` instead (see :mod:`densevit.inference.video`).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from densevit.config import build_config
from densevit.engine.build import build_from_checkpoint, build_task
from densevit.engine.runtime import autocast, resolve_device, resolve_precision
from densevit.engine.task import Task
from densevit.errors import UserInputError
from densevit.inference.options import PredictOptions
from densevit.inference.video import check_videos, predict_video, split_videos
from densevit.io import writable_folder
from densevit.registry import Registry

Runner = Callable[["Predictor", list[Path], Path], dict[str, Any]]
RUNNERS = Registry("predictor")


class Predictor:
    """``task`` + ``model`` (moved to the options' device, eval mode) + :class:`PredictOptions`.

    Example::

        predictor = Predictor.from_checkpoint("runs/exp/best.pth", PredictOptions(batch_size=8))
        summary = predictor.predict(["photos/"], "pred/")
    """

    def __init__(self, task: Task, model: nn.Module, options: PredictOptions | None = None) -> None:
        self.task = task
        self.options = options or PredictOptions()
        self.device = resolve_device(self.options.device)
        self.precision = resolve_precision(self.options.precision, self.device)
        self.model = model.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, options: PredictOptions | None = None) -> "Predictor":
        """The task and trained model that a ``densevit train`` checkpoint describes."""
        task, model = build_from_checkpoint(path)
        return cls(task, model, options)

    @classmethod
    def from_onnx(cls, path: str | Path, options: PredictOptions | None = None) -> "Predictor":
        """A graph written by ``densevit export``, run by onnxruntime (the config it carries says the task)."""
        from densevit.inference.onnx_model import OnnxModel

        model = OnnxModel(path)
        cfg = build_config(model.config, where=f"{path} (stored config)")
        cfg.model.pretrained = None
        return cls(build_task(cfg), model, options)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """No gradients, and autocast at the options' precision: wrap every forward pass in it."""
        with torch.no_grad(), autocast(self.precision, self.device):
            yield

    def predict(self, inputs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
        """Run over ``inputs`` (files and folders, videos included) and write the task's results to ``out_dir``.

        Returns the runners' summary (counts and the files written; those of the videos added).
        """
        name = getattr(self.task, "name", type(self.task).__name__)
        if name not in RUNNERS:
            raise UserInputError(f"task {name!r} has no predictor (known: {', '.join(RUNNERS.names())})")
        out_dir = writable_folder(out_dir, "--out folder")
        others, videos = split_videos([Path(p) for p in inputs], name)
        check_videos(videos)  # a broken video stops the run before any work
        summary = RUNNERS.get(name)(self, others, out_dir) if others or not videos else {}
        for video in videos:
            summary = _added(summary, predict_video(self, name, video, out_dir))
        return summary


def _added(summary: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """Two runners' summaries as one: counts summed, lists of files joined, other entries kept."""
    joined = dict(summary)
    for key, value in more.items():
        same_kind = isinstance(value, (int, list)) and type(joined.get(key)) is type(value)
        joined[key] = joined[key] + value if same_kind else value
    return joined
