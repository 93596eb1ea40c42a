"""Prediction: every ``densevit predict`` (and every demo's pictures) goes through here.

* :class:`~densevit.inference.predictor.Predictor`: a checkpoint (or a task and a model) run over
  files, with :class:`~densevit.inference.options.PredictOptions`;
* runners, one per task, that read inputs and write results: :mod:`.detection` (COCO results
  JSON, drawn boxes), :mod:`.segmentation` (label PNGs, overlays), :mod:`.volume_segmentation`
  (label volumes with the input's geometry), :mod:`.classification` (top-5 classes as CSV),
  :mod:`.video` (videos: annotated MP4, per-frame results);
* :mod:`.writers` (atomic files) and :mod:`.pictures` (overlays, boxes).
"""
from __future__ import annotations

from densevit.inference import (  # noqa: F401  (registers the runners)
    classification,
    detection,
    segmentation,
    volume_segmentation,
)
from densevit.inference.options import PredictOptions
from densevit.inference.predictor import RUNNERS, Predictor

__all__ = ["RUNNERS", "PredictOptions", "Predictor"]
