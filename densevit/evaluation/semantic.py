"""Semantic segmentation scores (aAcc, mIoU, mAcc, mDice) as mmsegmentation's ``IoUMetric``.

One confusion matrix per dataset, counted with ``torch.bincount`` on the predictions' device
and summed over processes; the scores are dataset-level (areas summed over all images before
dividing), which is what mmsegmentation and the papers that use it report.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from densevit.distributed import all_reduce_sum
from densevit.errors import UserInputError

# Above this many (gt value, pred value) pairs the histogram of raw values would be too big;
# such inputs hold labels far outside the class range and take the explicit path instead.
_MAX_RAW_BINS = 1 << 24


def _as_label_tensor(values: Any, what: str, device: torch.device | None = None) -> torch.Tensor:
    """``values`` as an integer tensor; float input is accepted only where every value is whole."""
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if device is not None:
        tensor = tensor.to(device)
    if tensor.dtype == torch.bool:
        return tensor.to(torch.uint8)
    if tensor.is_floating_point():
        if not bool((torch.isfinite(tensor) & (tensor == tensor.round())).all()):
            raise UserInputError(f"{what}: labels must be integers, got non-integer values")
        return tensor.to(torch.int64)
    if tensor.is_complex():
        raise UserInputError(f"{what}: labels must be integers, got {tensor.dtype}")
    return tensor


class SemanticEvaluator:
    """Dataset-level aAcc / mIoU / mAcc / mDice from a confusion matrix.

    Args:
        num_classes: classes are labels ``0 .. num_classes - 1``.
        ignore_index: ground-truth label of pixels that are not scored.
        reduce_zero_label: as mmsegmentation, ground truth 0 becomes ``ignore_index`` and every
            other label is lowered by one (for datasets whose 0 means "other", e.g. ADE20K).
            Predictions are taken to be in the reduced label space already.
        class_names: names for the per-class table (default: the label numbers).

    A label outside ``[0, num_classes)`` that is not the ignore index (in the ground truth), or
    outside ``[0, num_classes)`` at a scored pixel (in the prediction), is an error.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, reduce_zero_label: bool = False,
                 class_names: Sequence[str] | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise UserInputError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self.confusion: torch.Tensor | None = None  # [num_classes gt, num_classes pred], int64

    def process(self, predictions: Any, targets: Any) -> None:
        """Count a batch.

        Args:
            predictions: label maps ``[B, H, W]`` or ``[H, W]`` (integer), or scores with a class
                dimension ``[B, C, H, W]`` / ``[C, H, W]`` (float; the argmax over C is taken),
                or a list of such per image (sizes may differ between images).
            targets: ground-truth label maps, ``[B, H, W]`` / ``[H, W]`` or a list per image.
        """
        if isinstance(predictions, (list, tuple)):
            if not isinstance(targets, (list, tuple)) or len(targets) != len(predictions):
                raise ValueError("predictions and targets must both be lists of the same length")
            for prediction, target in zip(predictions, targets):
                self.process(prediction, target)
            return
        pred = predictions if isinstance(predictions, torch.Tensor) else torch.as_tensor(np.asarray(predictions))
        gt = _as_label_tensor(targets, "ground truth", pred.device)
        if pred.is_floating_point() and pred.dim() == gt.dim() + 1:
            pred = pred.argmax(dim=-3)
        pred = _as_label_tensor(pred, "prediction")
        if pred.shape != gt.shape:
            raise UserInputError(f"prediction of shape {tuple(pred.shape)} and ground truth of shape "
                                 f"{tuple(gt.shape)} differ")
        counts = self.count(pred, gt)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def count(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """The confusion matrix ``[num_classes gt, num_classes pred]`` (int64) of one pair of maps.

        One ``bincount`` over the (gt value, pred value) pairs of the raw label values, so that
        invalid labels are found without extra passes; the ignore index and
        ``reduce_zero_label`` are applied to the small histogram, not to the pixels.
        """
        if gt.numel() == 0:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=pred.device)
        bounds = torch.stack([torch.stack(torch.aminmax(t)).to(torch.int64) for t in (gt, pred)])
        (g_lo, g_hi), (p_lo, p_hi) = bounds.tolist()
        g_span, p_span = g_hi - g_lo + 1, p_hi - p_lo + 1
        if g_span * p_span > _MAX_RAW_BINS or min(g_lo, p_lo) < -(1 << 30) or max(g_hi, p_hi) >= 1 << 30:
            return self._count_explicit(pred, gt)
        # int32 codes halve the memory traffic; g_span * p_span fits easily. The copy keeps the
        # in-place arithmetic off the caller's tensor when it already is int32.
        code = gt.to(torch.int32, copy=True).sub_(g_lo).mul_(p_span).add_(pred.to(torch.int32)).sub_(p_lo)
        raw = torch.bincount(code.flatten(), minlength=g_span * p_span).view(g_span, p_span)
        return self._raw_to_confusion(raw, g_lo, p_lo)

    def _gt_rows(self, values: np.ndarray) -> np.ndarray:
        """Class row of each raw ground-truth value: -1 = ignored, -2 = invalid."""
        rows = values - 1 if self.reduce_zero_label else values.copy()
        ignored = values == self.ignore_index
        if self.reduce_zero_label:
            ignored |= values == 0
        rows[ignored] = -1
        rows[~ignored & ((rows < 0) | (rows >= self.num_classes))] = -2
        return rows

    def _raw_to_confusion(self, raw: torch.Tensor, g_lo: int, p_lo: int) -> torch.Tensor:
        g_values = np.arange(g_lo, g_lo + raw.shape[0])
        p_values = np.arange(p_lo, p_lo + raw.shape[1])
        rows = self._gt_rows(g_values)
        present_rows = (raw.sum(1) > 0).cpu().numpy()
        bad_gt = g_values[(rows == -2) & present_rows]
        if bad_gt.size:
            raise UserInputError(self._bad_labels("ground truth", bad_gt))
        scored = raw[torch.as_tensor(rows >= 0, device=raw.device)]
        valid_cols = (p_values >= 0) & (p_values < self.num_classes)
        bad_pred = p_values[~valid_cols & (scored.sum(0) > 0).cpu().numpy()]
        if bad_pred.size:
            raise UserInputError(self._bad_labels("prediction", bad_pred))
        confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=raw.device)
        row_index = torch.as_tensor(rows[rows >= 0], device=raw.device)
        col_index = torch.as_tensor(p_values[valid_cols], device=raw.device)
        confusion[row_index[:, None], col_index[None, :]] = scored[:, torch.as_tensor(valid_cols, device=raw.device)]
        return confusion

    def _count_explicit(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """The same counts by masking, for label values too spread out for the raw histogram."""
        gt = gt.to(torch.int64)
        ignored = gt == self.ignore_index
        if self.reduce_zero_label:
            ignored |= gt == 0
            gt = gt - 1
        bad = ~ignored & ((gt < 0) | (gt >= self.num_classes))
        if bool(bad.any()):
            values = gt[bad].unique()[:5].cpu().numpy() + (1 if self.reduce_zero_label else 0)
            raise UserInputError(self._bad_labels("ground truth", values))
        gt, pred = gt[~ignored], pred[~ignored].to(torch.int64)
        bad = (pred < 0) | (pred >= self.num_classes)
        if bool(bad.any()):
            raise UserInputError(self._bad_labels("prediction", pred[bad].unique()[:5].cpu().numpy()))
        counts = torch.bincount(gt * self.num_classes + pred, minlength=self.num_classes ** 2)
        return counts.view(self.num_classes, self.num_classes)

    def _bad_labels(self, what: str, values: np.ndarray) -> str:
        shown = ", ".join(str(int(v)) for v in values[:5])
        allowed = f"0..{self.num_classes - 1}"
        if what == "ground truth":
            allowed += f" or the ignore index {self.ignore_index}"
            if self.reduce_zero_label:
                allowed = f"1..{self.num_classes} (0 and {self.ignore_index} ignored, reduce_zero_label)"
        return f"{what} has labels {shown} outside {allowed}"

    def compute(self) -> dict[str, Any]:
        """Scores over everything processed, summed over all processes.

        Returns:
            ``aAcc`` (pixel accuracy), ``mIoU``, ``mAcc``, ``mDice`` (means over classes, NaN
            classes left out) and ``per_class``: per class ``{"class", "IoU", "Acc", "Dice"}``.
            All are fractions in [0, 1] (mmsegmentation prints them x100, rounded to 2 decimals).
            IoU and Dice are NaN for a class absent from both ground truth and prediction, Acc
            for a class absent from the ground truth, exactly as mmsegmentation.
        """
        local = self.confusion
        if local is None:
            local = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        # a copy: compute() may be called again, and the local counts must stay local
        confusion = all_reduce_sum(local.clone()).cpu().to(torch.float64)
        intersect = confusion.diagonal()
        area_label, area_pred = confusion.sum(1), confusion.sum(0)
        iou = intersect / (area_label + area_pred - intersect)
        acc = intersect / area_label
        dice = 2 * intersect / (area_label + area_pred)
        with np.errstate(invalid="ignore"):
            result: dict[str, Any] = {
                "aAcc": float(intersect.sum() / area_label.sum()),
                "mIoU": float(torch.nanmean(iou)),
                "mAcc": float(torch.nanmean(acc)),
                "mDice": float(torch.nanmean(dice)),
            }
        result["per_class"] = [
            {"class": name, "IoU": float(i), "Acc": float(a), "Dice": float(d), "pixels": int(n)}
            for name, i, a, d, n in zip(self.class_names, iou.tolist(), acc.tolist(), dice.tolist(),
                                        area_label.tolist())
        ]
        result.update({f"IoU/{row['class']}": row["IoU"] for row in result["per_class"]})
        return result


def format_table(result: dict[str, Any]) -> str:
    """``compute()``'s result as readable text, in percent as mmsegmentation prints it."""
    def pct(value: float) -> str:
        return "    nan" if np.isnan(value) else f"{100 * value:7.2f}"

    lines = [f"{'class':<24} {'IoU':>7} {'Acc':>7} {'Dice':>7}"]
    lines += [f"{row['class'][:24]:<24} {pct(row['IoU'])} {pct(row['Acc'])} {pct(row['Dice'])}"
              for row in result["per_class"]]
    lines.append("")
    lines.append("  ".join(f"{key} {pct(result[key]).strip()}" for key in ("aAcc", "mIoU", "mAcc", "mDice")))
    return "\n".join(lines)
