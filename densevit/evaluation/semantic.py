"""Semantic segmentation scores (aAcc, mIoU, mAcc, mDice) as mmsegmentation's ``IoUMetric``.

One confusion matrix per dataset (int64, in numpy), summed over processes; the scores are
dataset-level (areas summed over all images before dividing), which is what mmsegmentation and
the papers that use it report.

Each pair of label maps is counted with one ``bincount``: ``torch.bincount`` on the
predictions' device for tensors (a model's outputs), ``numpy.bincount`` for arrays (files
on disk: ``densevit score semantic`` never imports PyTorch).
"""
from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from densevit.data.labels import integer_labels
from densevit.errors import UserInputError

if TYPE_CHECKING:
    import torch

# Above this many (gt value, pred value) pairs the histogram of raw values would be too big;
# such inputs hold labels far outside the class range and take the explicit path instead.
_MAX_RAW_BINS = 1 << 24


def _is_tensor(value: Any) -> bool:
    """Whether ``value`` is a PyTorch tensor (without importing PyTorch: no tensor exists before it is)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _as_label_tensor(values: Any, what: str, device: torch.device | None = None) -> torch.Tensor:
    """``values`` as an integer tensor; float input is accepted only where every value is whole."""
    import torch

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


def _tensor_bounds(gt: torch.Tensor, pred: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    """The smallest and largest value of each, in one transfer from the device."""
    import torch

    bounds = torch.stack([torch.stack(torch.aminmax(t)).to(torch.int64) for t in (gt, pred)])
    (g_lo, g_hi), (p_lo, p_hi) = bounds.tolist()
    return (g_lo, g_hi), (p_lo, p_hi)


def _tensor_histogram(gt: torch.Tensor, pred: torch.Tensor, g_lo: int, p_lo: int, g_span: int,
                      p_span: int) -> np.ndarray:
    """``[g_span, p_span]`` counts of the (gt value, pred value) pairs, by ``torch.bincount``."""
    import torch

    # int32 codes halve the memory traffic; g_span * p_span fits easily. The copy keeps the
    # in-place arithmetic off the caller's tensor when it already is int32.
    code = gt.to(torch.int32, copy=True).sub_(g_lo).mul_(p_span).add_(pred.to(torch.int32)).sub_(p_lo)
    raw = torch.bincount(code.flatten(), minlength=g_span * p_span).view(g_span, p_span)
    return raw.cpu().numpy()


def _array_histogram(gt: np.ndarray, pred: np.ndarray, g_lo: int, p_lo: int, g_span: int,
                     p_span: int) -> np.ndarray:
    """The same counts by ``numpy.bincount``."""
    code = gt.astype(np.intp)  # bincount's own type: no copy there
    if g_lo:
        code -= g_lo
    code *= p_span
    np.add(code, pred, out=code, casting="unsafe")  # the bounds were checked: any integer type fits
    if p_lo:
        code -= p_lo
    return np.bincount(code.ravel(), minlength=g_span * p_span).reshape(g_span, p_span)


def _summed_over_processes(counts: np.ndarray, device: Any) -> np.ndarray:
    """A copy of ``counts`` summed over the processes of a distributed run (on ``device``, where
    the tensors were: NCCL reduces GPU tensors only). A process group needs PyTorch: without it
    loaded there is none, and nothing to import."""
    if "torch" not in sys.modules:
        return counts.copy()
    import torch

    from densevit.distributed import all_reduce_sum

    return all_reduce_sum(torch.tensor(counts, device=device)).cpu().numpy()


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
        self.confusion: np.ndarray | None = None  # [num_classes gt, num_classes pred], int64
        self._device: Any = None  # the device of the tensors counted, for the sum over processes

    def process(self, predictions: Any, targets: Any) -> None:
        """Count a batch.

        Args:
            predictions: label maps ``[B, H, W]`` or ``[H, W]`` (integer), or scores with a class
                dimension ``[B, C, H, W]`` / ``[C, H, W]`` (float; the argmax over C is taken),
                or a list of such per image (sizes may differ between images). Tensors or arrays.
            targets: ground-truth label maps, ``[B, H, W]`` / ``[H, W]`` or a list per image.
        """
        if isinstance(predictions, (list, tuple)):
            if not isinstance(targets, (list, tuple)) or len(targets) != len(predictions):
                raise ValueError("predictions and targets must both be lists of the same length")
            for prediction, target in zip(predictions, targets):
                self.process(prediction, target)
            return
        if _is_tensor(predictions) or _is_tensor(targets):
            import torch

            pred = predictions if _is_tensor(predictions) else torch.as_tensor(np.asarray(predictions))
            gt = _as_label_tensor(targets, "ground truth", pred.device)
            if pred.is_floating_point() and pred.dim() == gt.dim() + 1:
                pred = pred.argmax(dim=-3)
            pred = _as_label_tensor(pred, "prediction")
            self._device = pred.device
        else:
            pred = np.asarray(predictions)
            gt = integer_labels(targets, "ground truth")
            if pred.dtype.kind == "f" and pred.ndim == gt.ndim + 1:
                pred = pred.argmax(axis=-3)
            pred = integer_labels(pred, "prediction")
        if tuple(pred.shape) != tuple(gt.shape):
            raise UserInputError(f"prediction of shape {tuple(pred.shape)} and ground truth of shape "
                                 f"{tuple(gt.shape)} differ")
        counts = self.count(pred, gt)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def count(self, pred: Any, gt: Any) -> np.ndarray:
        """The confusion matrix ``[num_classes gt, num_classes pred]`` (int64) of one pair of
        integer label maps of one shape (two tensors on one device, or two arrays).

        One ``bincount`` over the (gt value, pred value) pairs of the raw label values, so that
        invalid labels are found without extra passes; the ignore index and
        ``reduce_zero_label`` are applied to the small histogram, not to the pixels.
        """
        tensors = _is_tensor(pred)
        if (gt.numel() if tensors else gt.size) == 0:
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        if tensors:
            (g_lo, g_hi), (p_lo, p_hi) = _tensor_bounds(gt, pred)
        else:
            (g_lo, g_hi), (p_lo, p_hi) = (int(gt.min()), int(gt.max())), (int(pred.min()), int(pred.max()))
        g_span, p_span = g_hi - g_lo + 1, p_hi - p_lo + 1
        if g_span * p_span > _MAX_RAW_BINS or min(g_lo, p_lo) < -(1 << 30) or max(g_hi, p_hi) >= 1 << 30:
            if tensors:
                pred, gt = pred.cpu().numpy(), gt.cpu().numpy()
            return self._count_explicit(pred, gt)
        histogram = _tensor_histogram if tensors else _array_histogram
        return self._raw_to_confusion(histogram(gt, pred, g_lo, p_lo, g_span, p_span), g_lo, p_lo)

    def _gt_rows(self, values: np.ndarray) -> np.ndarray:
        """Class row of each raw ground-truth value: -1 = ignored, -2 = invalid."""
        rows = values - 1 if self.reduce_zero_label else values.copy()
        ignored = values == self.ignore_index
        if self.reduce_zero_label:
            ignored |= values == 0
        rows[ignored] = -1
        rows[~ignored & ((rows < 0) | (rows >= self.num_classes))] = -2
        return rows

    def _raw_to_confusion(self, raw: np.ndarray, g_lo: int, p_lo: int) -> np.ndarray:
        g_values = np.arange(g_lo, g_lo + raw.shape[0])
        p_values = np.arange(p_lo, p_lo + raw.shape[1])
        rows = self._gt_rows(g_values)
        bad_gt = g_values[(rows == -2) & (raw.sum(1) > 0)]
        if bad_gt.size:
            raise UserInputError(self._bad_labels("ground truth", bad_gt))
        scored = raw[rows >= 0]
        valid_cols = (p_values >= 0) & (p_values < self.num_classes)
        bad_pred = p_values[~valid_cols & (scored.sum(0) > 0)]
        if bad_pred.size:
            raise UserInputError(self._bad_labels("prediction", bad_pred))
        confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        confusion[np.ix_(rows[rows >= 0], p_values[valid_cols])] = scored[:, valid_cols]
        return confusion

    def _count_explicit(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """The same counts by masking, for label values too spread out for the raw histogram."""
        gt = gt.astype(np.int64)
        ignored = gt == self.ignore_index
        if self.reduce_zero_label:
            ignored |= gt == 0
            gt = gt - 1
        bad = ~ignored & ((gt < 0) | (gt >= self.num_classes))
        if bad.any():
            values = np.unique(gt[bad])[:5] + (1 if self.reduce_zero_label else 0)
            raise UserInputError(self._bad_labels("ground truth", values))
        gt, pred = gt[~ignored], pred[~ignored].astype(np.int64)
        bad = (pred < 0) | (pred >= self.num_classes)
        if bad.any():
            raise UserInputError(self._bad_labels("prediction", np.unique(pred[bad])[:5]))
        counts = np.bincount(gt * self.num_classes + pred, minlength=self.num_classes ** 2)
        return counts.reshape(self.num_classes, self.num_classes).astype(np.int64, copy=False)

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
            local = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        # a copy: compute() may be called again, and the local counts must stay local
        confusion = _summed_over_processes(local, self._device).astype(np.float64)
        intersect = confusion.diagonal()
        area_label, area_pred = confusion.sum(1), confusion.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of only NaN: NaN, as mmsegmentation
            iou = intersect / (area_label + area_pred - intersect)
            acc = intersect / area_label
            dice = 2 * intersect / (area_label + area_pred)
            result: dict[str, Any] = {
                "aAcc": float(intersect.sum() / area_label.sum()),
                "mIoU": float(np.nanmean(iou)),
                "mAcc": float(np.nanmean(acc)),
                "mDice": float(np.nanmean(dice)),
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
