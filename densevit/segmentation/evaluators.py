"""The evaluators of the two segmentation tasks: the stand-alone evaluators fed from batches,
with their results flattened into the named scalars that logs and ``best_metric`` use."""
from __future__ import annotations

from typing import Any

from torch import Tensor


class ImageEvaluator:
    """Feeds a :class:`~densevit.evaluation.semantic.SemanticEvaluator` one label map per image
    (cropped targets: the batch's padding is not scored); adds ``IoU/<class>`` scalars."""

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator

    def reset(self) -> None:
        self.evaluator.reset()

    def process(self, predictions: list[Tensor], targets: dict[str, Any]) -> None:
        masks = [mask[:h, :w] for mask, (h, w) in zip(targets["masks"], targets["sizes"])]
        self.evaluator.process(list(predictions), masks)

    def compute(self) -> dict[str, Any]:
        result = self.evaluator.compute()
        metrics = {k: v for k, v in result.items() if k != "per_class"}
        metrics.update({f"IoU/{entry['class']}": entry["IoU"] for entry in result["per_class"]})
        return metrics


class VolumeEvaluator:
    """Feeds a :class:`~densevit.evaluation.medical.MedicalEvaluator` whole-case predictions.

    ``compute()`` flattens its tables into named scalars (``mean_dice``, ``mean_hd95``,
    ``dice/<class>``, ``hd95/<class>``) plus ``cases``, the per-case, per-class rows.
    """

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator

    def reset(self) -> None:
        self.evaluator.reset()

    def process(self, predictions: list[Tensor], targets: dict[str, Any]) -> None:
        for prediction, case in zip(predictions, targets["cases"], strict=True):
            self.evaluator.process(prediction, case["label"], case["spacing"], case["case_id"])

    def compute(self) -> dict[str, Any]:
        result = self.evaluator.compute()
        metrics: dict[str, Any] = {"mean_dice": result["mean"]["dice"], "mean_hd95": result["mean"]["hd95"]}
        for entry in result["per_class"]:
            metrics[f"dice/{entry['class']}"] = entry["dice"]
            metrics[f"hd95/{entry['class']}"] = entry["hd95"]
        metrics["cases"] = result["cases"]
        return metrics
