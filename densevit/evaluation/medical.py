"""Per-case, per-class Dice and HD95 on 3D (or 2D) label volumes, as the field reports them.

Two conventions:

- ``standard`` (MONAI's ``compute_dice`` / ``compute_hausdorff_distance(percentile=95)``):
  Dice = 2|P∩G| / (|P|+|G|); HD95 = the larger of the two directed 95th percentiles (linear
  interpolation) of the distances, in mm (voxel spacing), from each surface voxel of one mask
  to the nearest surface voxel of the other. An empty ground truth gives Dice NaN; an empty
  ground truth or prediction gives HD95 NaN (MONAI: inf). NaNs carry a note and are left out of
  means. Values are float64 (MONAI rounds its distances to float32).
- ``transunet`` (Beckschen/TransUNet ``calculate_metric_percase``, with medpy's ``dc`` and
  ``hd95``): HD95 = one 95th percentile over both directions' distances pooled, in voxels
  (no spacing); a non-empty prediction with an empty ground truth scores (1, 0) and an empty
  prediction (0, 0); means are over all cases. This reproduces published Synapse tables.

Surface voxels are those removed by one binary erosion with the cross-shaped (connectivity 1)
structure and zero outside the volume, as both references do. Everything is computed on the
bounding box of prediction ∪ ground truth grown by one voxel (clipped to the volume): every
surface voxel of either mask lies in it, erosion at its faces sees the same zeros as in the
full volume, and exact distance transforms on it find the same nearest surface voxels, so the
numbers are identical to the full-volume computation (``crop=False``) at a fraction of the cost.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from densevit.data.labels import integer_labels
from densevit.distributed import all_gather_objects, is_distributed, rank
from densevit.errors import UserInputError

CONVENTIONS = ("standard", "transunet")


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a boolean mask: those one cross-shaped erosion removes."""
    return mask & ~ndimage.binary_erosion(mask)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None,
                      crop: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of ``pred`` to the surface of ``gt``, and back.

    Args:
        pred, gt: boolean masks of the same shape (2D or 3D), both non-empty.
        spacing: voxel size per axis (distances in those units); None = 1 per axis.
        crop: work on the bounding box of ``pred | gt`` plus one voxel (same numbers, faster).

    Returns:
        ``(pred_to_gt, gt_to_pred)``: float64 arrays, one distance per surface voxel of
        ``pred`` (resp. ``gt``), in C order of the voxels.
    """
    if crop:
        box = _bounding_box(pred | gt)
        pred, gt = pred[box], gt[box]
    pred_surface, gt_surface = surface(pred), surface(gt)
    to_gt = ndimage.distance_transform_edt(~gt_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return to_gt[pred_surface], to_pred[gt_surface]


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of a non-empty mask grown by one voxel, clipped to the array."""
    (box,) = ndimage.find_objects(mask.astype(np.uint8))
    return _grow(box, mask.shape)


def _grow(box: Sequence[slice], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, shape))


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def as_label_volume(volume: Any, what: str, num_classes: int) -> np.ndarray:
    """``volume`` as an integer numpy array with every label in ``[0, num_classes)``."""
    array = integer_labels(volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else volume, what)
    if array.ndim not in (2, 3):
        raise UserInputError(f"{what}: expected a 2D or 3D label volume, got shape {array.shape}")
    if array.size:
        low, high = array.min(), array.max()
        if low < 0 or high >= num_classes:
            raise UserInputError(f"{what}: label {low if low < 0 else high} outside 0..{num_classes - 1}")
    return array


class MedicalEvaluator:
    """Dice and HD95 per case and per foreground class (labels 1 .. num_classes - 1).

    Args:
        num_classes: labels are ``0`` (background, not scored) to ``num_classes - 1``.
        convention: ``"standard"`` (MONAI; HD95 in mm) or ``"transunet"`` (TransUNet/medpy;
            HD95 in voxels); see the module docstring.
        class_names: names of all ``num_classes`` labels, background first.

    In a distributed run each process scores its own cases; ``compute()`` gathers the rows
    (a case id seen twice counts once) and every process gets the same result.
    """

    def __init__(self, num_classes: int, convention: str = "standard",
                 class_names: Sequence[str] | None = None) -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (background and one class), got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise UserInputError(f"{len(class_names)} class names for {num_classes} labels "
                                 "(give one per label, background first)")
        self.num_classes = num_classes
        self.convention = convention
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        self.reset()

    @property
    def unit(self) -> str:
        """The unit of HD95: mm (voxel spacing) for ``standard``, voxels for ``transunet``."""
        return "mm" if self.convention == "standard" else "voxels"

    def reset(self) -> None:
        """Forget every case processed so far."""
        self._cases: dict[str, list[dict[str, Any]]] = {}

    def process(self, prediction: Any, target: Any, spacing: Sequence[float] | None = None,
                case_id: str | None = None) -> list[dict[str, Any]]:
        """Score one case.

        Args:
            prediction, target: label volumes of the same shape, ``[D, H, W]`` / ``[H, W]`` (any
                axis order, as long as ``spacing`` follows it), numpy or torch, integer labels.
            spacing: voxel size per axis in mm (e.g. a NIfTI header's zooms); None = 1. Only
                the ``standard`` convention uses it.
            case_id: the case's name in the tables (default: its number).

        Returns:
            the case's rows (also kept for ``compute()``): per class ``{"case", "class",
            "dice", "hd95", "note"}`` with ``note`` saying why a value is NaN (else "").
        """
        pred = as_label_volume(prediction, "prediction", self.num_classes)
        gt = as_label_volume(target, "ground truth", self.num_classes)
        if pred.shape != gt.shape:
            raise UserInputError(f"prediction of shape {pred.shape} and ground truth of shape "
                                 f"{gt.shape} differ")
        if spacing is not None:
            spacing = tuple(float(s) for s in spacing)
            if len(spacing) != gt.ndim or min(spacing) <= 0:
                raise UserInputError(f"spacing {spacing} must be {gt.ndim} positive numbers")
        if case_id is None:
            prefix = f"{rank()}:" if is_distributed() else ""
            case_id = f"{prefix}{len(self._cases)}"
        rows = [{"case": str(case_id), "class": self.class_names[c], **self._score(pred, gt, c, spacing, box)}
                for c, box in self._class_boxes(pred, gt)]
        self._cases.setdefault(str(case_id), rows)
        return rows

    def _class_boxes(self, pred: np.ndarray, gt: np.ndarray):
        """Per foreground class, the grown bounding box of prediction ∪ ground truth (None if both empty).

        ``find_objects`` finds the boxes of all labels in one pass over each volume.
        """
        top = self.num_classes - 1
        pred_boxes = ndimage.find_objects(pred, max_label=top)
        gt_boxes = ndimage.find_objects(gt, max_label=top)
        for c in range(1, self.num_classes):
            box = _union(pred_boxes[c - 1], gt_boxes[c - 1])
            yield c, (None if box is None else _grow(box, gt.shape))

    def _score(self, pred: np.ndarray, gt: np.ndarray, c: int, spacing: tuple[float, ...] | None,
               box: tuple[slice, ...] | None) -> dict[str, Any]:
        if box is None:
            p = g = np.zeros((1,) * gt.ndim, dtype=bool)
        else:
            p, g = pred[box] == c, gt[box] == c
        p_size, g_size = int(np.count_nonzero(p)), int(np.count_nonzero(g))
        if self.convention == "transunet":
            if p_size and g_size:
                dice = 2.0 * int(np.count_nonzero(p & g)) / (p_size + g_size)
                pred_to_gt, gt_to_pred = surface_distances(p, g, None, crop=False)
                return {"dice": dice, "hd95": float(np.percentile(np.hstack((pred_to_gt, gt_to_pred)), 95)),
                        "note": ""}
            if p_size:
                return {"dice": 1.0, "hd95": 0.0, "note": "empty ground truth: (1, 0) as TransUNet"}
            return {"dice": 0.0, "hd95": 0.0, "note": "empty prediction: (0, 0) as TransUNet"}
        if not g_size:
            note = "empty ground truth and prediction" if not p_size else "empty ground truth"
            return {"dice": float("nan"), "hd95": float("nan"), "note": note}
        dice = 2.0 * int(np.count_nonzero(p & g)) / (p_size + g_size)
        if not p_size:
            return {"dice": dice, "hd95": float("nan"), "note": "empty prediction: HD95 undefined"}
        pred_to_gt, gt_to_pred = surface_distances(p, g, spacing, crop=False)
        hd95 = max(np.percentile(pred_to_gt, 95), np.percentile(gt_to_pred, 95))
        return {"dice": dice, "hd95": float(hd95), "note": ""}

    def compute(self) -> dict[str, Any]:
        """Tables over every case processed (gathered from all processes).

        Returns:
            ``convention``, ``unit`` (of HD95); ``mean_dice`` and ``mean_hd95``, the means over
            classes of the per-class means; ``dice/<class>`` and ``hd95/<class>``; ``per_class``:
            per foreground class ``{"class", "dice", "hd95", "cases_dice", "cases_hd95"}`` (means
            over cases, NaNs left out, with how many cases counted); ``cases``: every row of
            ``process``. Dice values are fractions; tables print them in percent. The same layout
            is what ``densevit evaluate`` and ``densevit score medical`` write.
        """
        cases: dict[str, list[dict[str, Any]]] = {}
        for part in all_gather_objects(self._cases):
            for case_id, rows in part.items():
                cases.setdefault(case_id, rows)
        rows = [row for case_id in cases for row in cases[case_id]]
        per_class = []
        for name in self.class_names[1:]:
            mine = [row for row in rows if row["class"] == name]
            entry: dict[str, Any] = {"class": name}
            for key in ("dice", "hd95"):
                values = np.array([row[key] for row in mine], dtype=np.float64)
                values = values[~np.isnan(values)]
                entry[key] = float(values.mean()) if values.size else float("nan")
                entry[f"cases_{key}"] = int(values.size)
            per_class.append(entry)
        result: dict[str, Any] = {"convention": self.convention, "unit": self.unit}
        for key in ("dice", "hd95"):
            values = np.array([entry[key] for entry in per_class], dtype=np.float64)
            values = values[~np.isnan(values)]
            result[f"mean_{key}"] = float(values.mean()) if values.size else float("nan")
        for entry in per_class:
            result[f"dice/{entry['class']}"] = entry["dice"]
            result[f"hd95/{entry['class']}"] = entry["hd95"]
        return {**result, "per_class": per_class, "cases": rows}


def format_table(result: dict[str, Any]) -> str:
    """``compute()``'s result as text: one row per case and class, then the per-class means."""
    def number(value: float, scale: float = 1.0) -> str:
        return "     nan" if np.isnan(value) else f"{scale * value:8.2f}"

    hd = f"HD95 {result['unit']}"
    lines = [f"{'case':<20} {'class':<16} {'Dice %':>8} {hd:>12}  note"]
    lines += [f"{row['case'][:20]:<20} {row['class'][:16]:<16} {number(row['dice'], 100)} "
              f"{number(row['hd95']):>12}  {row['note']}" for row in result["cases"]]
    lines += ["", f"{'class':<16} {'Dice %':>8} {hd:>12} {'cases':>6}"]
    lines += [f"{entry['class'][:16]:<16} {number(entry['dice'], 100)} {number(entry['hd95']):>12} "
              f"{entry['cases_dice']:>6}" for entry in result["per_class"]]
    lines.append(f"{'mean':<16} {number(result['mean_dice'], 100)} {number(result['mean_hd95']):>12}")
    return "\n".join(lines)
