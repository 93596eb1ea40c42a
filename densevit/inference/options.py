"""How ``densevit predict`` (and :class:`~densevit.inference.predictor.Predictor`) runs a model.

Every field left as None takes the task's own setting from the checkpoint's config (the
inference mode, overlap and chunk size that validation used), so that predicting and then
scoring gives the numbers ``densevit evaluate`` gives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from densevit.errors import UserInputError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class PredictOptions:
    """Options of a prediction run.

    Attributes:
        score_threshold: detection: boxes drawn in the pictures score at least this (the
            results JSON keeps every detection, as COCO scoring needs).
        batch_size: images (detection, whole-image segmentation), windows (sliding windows) or
            slices (volumes) per forward pass; None = the task's own (``data.eval_chunk``).
        mode: segmentation of pictures: ``whole`` or ``slide``; None = ``data.eval_mode``.
        overlap: sliding-window overlap in [0, 1); None = ``data.eval_overlap``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``bf16``, ``fp16`` (autocast) or ``auto`` (bf16 on GPUs that have it).
        pictures: also draw the predictions (overlays, boxes) beside the result files (for a
            video: the annotated video).
        every: videos: predict every ``every``-th frame (frames 0, N, 2N, ...).
        max_frames: videos: read at most the first ``max_frames`` frames of each; None = all.
    """

    score_threshold: float = 0.5
    batch_size: int | None = None
    mode: Literal["whole", "slide"] | None = None
    overlap: float | None = None
    device: str = "auto"
    precision: str = "fp32"
    pictures: bool = True
    every: int = 1
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise UserInputError(f"--batch-size: expected a positive integer, got {self.batch_size}")
        if self.every < 1:
            raise UserInputError(f"--every: expected a positive integer, got {self.every}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserInputError(f"--max-frames: expected a positive integer, got {self.max_frames}")
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise UserInputError(f"--overlap: expected a value in [0, 1), got {self.overlap}")
        if self.mode not in (None, "whole", "slide"):
            raise UserInputError(f"--mode: expected whole or slide, got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise UserInputError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
