"""The evaluators of the two segmentation tasks: the stand-alone evaluators fed from batches.

Their results are what ``densevit score semantic`` / ``score medical`` give for the same
predictions: flat scalars for logs and ``best_metric`` (``mIoU``, ``IoU/<class>``;
``mean_dice``, ``dice/<class>``, ...) and the per-class and per-case tables.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from densevit.errors import suspicious


class ImageEvaluator:
    """Feeds a :class:`~densevit.evaluation.semantic.SemanticEvaluator` one label map per image
    (cropped targets: the batch's padding is not scored), and optionally a
    :class:`~densevit.evaluation.medical.MedicalEvaluator` for per-image Dice and HD95 (pixels
    with the ignore value count as background there, as outside DRIVE's field of view).

    ``compute()``: the semantic scores, plus the medical scalars (``mean_dice``, ``dice/<class>``,
    ...) and the medical tables under ``medical``. A class absent from all the ground truth is
    suspicious (:func:`densevit.errors.suspicious`).
    """

    def __init__(self, evaluator: Any, medical: Any = None, ignore_index: int = 255,
                 spacing: tuple[float, ...] | None = None, strict: bool = False) -> None:
        self.evaluator = evaluator
        self.medical = medical
        self.ignore_index = ignore_index
        self.spacing = spacing
        self.strict = strict

    def reset(self) -> None:
        self.evaluator.reset()
        if self.medical is not None:
            self.medical.reset()

    def process(self, predictions: list[Tensor], targets: dict[str, Any]) -> None:
        masks = [mask[:h, :w] for mask, (h, w) in zip(targets["masks"], targets["sizes"])]
        self.evaluator.process(list(predictions), masks)
        if self.medical is None:
            return
        names = [Path(p).stem for p in targets.get("paths", [])] or [None] * len(masks)
        for prediction, mask, name in zip(predictions, masks, names):
            valid = mask != self.ignore_index
            self.medical.process((prediction * valid).cpu(), (mask * valid).cpu(), self.spacing, name)

    def compute(self) -> dict[str, Any]:
        result = self.evaluator.compute()
        absent = [row["class"] for row in result["per_class"] if row["pixels"] == 0]
        if absent:
            suspicious(f"class(es) {', '.join(absent)} never appear in the validation ground truth", self.strict)
        if self.medical is not None:
            medical = self.medical.compute()
            tables = ("convention", "unit", "per_class", "cases")
            result.update({k: v for k, v in medical.items() if k not in tables})
            result["medical"] = {k: medical[k] for k in tables}
        return result


class VolumeEvaluator:
    """Feeds a :class:`~densevit.evaluation.medical.MedicalEvaluator` whole-case predictions."""

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator

    def reset(self) -> None:
        self.evaluator.reset()

    def process(self, predictions: list[Tensor], targets: dict[str, Any]) -> None:
        for prediction, case in zip(predictions, targets["cases"], strict=True):
            self.evaluator.process(prediction, case["label"], case["spacing"], case["case_id"])

    def compute(self) -> dict[str, Any]:
        return self.evaluator.compute()
