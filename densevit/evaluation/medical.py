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
structure and zero outside the volume, as both references do. The surfaces of every label are
found in one pass over each volume, and each distance by a nearest-neighbour search among the
other surface's voxels (:mod:`densevit.evaluation.surface`), never by a distance transform, so
scattered false positives that spread a class over the whole volume cost no more than their
own voxels. The distances are those of the references' distance transforms bit for bit (with
some spacings, such as 0.7 mm, up to an ulp where two surface voxels are exactly equally near).

Dice counts come from ``bincount`` over the voxels that are foreground in either volume. torch
is imported only to gather the results of a distributed run (when torch is loaded anyway) and
for searches on a torch ``device``.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from densevit.data.labels import integer_labels
from densevit.errors import UserInputError
from densevit.evaluation.surface import common_layout, label_surfaces, surface_distances

CONVENTIONS = ("standard", "transunet")


def _distributed():
    """:mod:`densevit.distributed` when torch.distributed is loaded, else None (no process group can exist)."""
    if "torch.distributed" not in sys.modules:
        return None
    from densevit import distributed

    return distributed


def as_label_volume(volume: Any, what: str, num_classes: int) -> np.ndarray:
    """``volume`` (numpy, or a torch tensor on any device) as an integer numpy array with every
    label in ``[0, num_classes)``."""
    if hasattr(volume, "detach"):  # a torch tensor, without importing torch here
        volume = volume.detach().cpu().numpy()
    array = integer_labels(volume, what)
    if array.ndim not in (2, 3):
        raise UserInputError(f"{what}: expected a 2D or 3D label volume, got shape {array.shape}")
    if array.size:
        low, high = array.min(), array.max()
        if low < 0 or high >= num_classes:
            raise UserInputError(f"{what}: label {low if low < 0 else high} outside 0..{num_classes - 1}")
    return array


def class_counts(pred: np.ndarray, gt: np.ndarray, either: np.ndarray,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels per label of ``pred``, of ``gt``, and of both (``pred == gt``): three int64 ``[num_classes]``.

    ``pred`` and ``gt`` are flat (one memory order), ``either`` the indices where one of them is
    foreground; label 0 is not counted (0).
    """
    pred, gt = pred[either], gt[either]
    counts = [np.bincount(values, minlength=num_classes) for values in (pred, gt, gt[pred == gt])]
    for count in counts:
        count[0] = 0
    return counts[0], counts[1], counts[2]


class MedicalEvaluator:
    """Dice and HD95 per case and per foreground class (labels 1 .. num_classes - 1).

    Args:
        num_classes: labels are ``0`` (background, not scored) to ``num_classes - 1``.
        convention: ``"standard"`` (MONAI; HD95 in mm) or ``"transunet"`` (TransUNet/medpy;
            HD95 in voxels); see the module docstring.
        class_names: names of all ``num_classes`` labels, background first.
        device: where nearest surface voxels are searched: None, a KD-tree on the CPU; a torch
            device (``"cuda"``): chunked pairwise distances there
            (:func:`densevit.evaluation.surface.nearest`). The numbers are the same.

    In a distributed run each process scores its own cases; ``compute()`` gathers the rows
    (a case id seen twice counts once) and every process gets the same result.
    """

    def __init__(self, num_classes: int, convention: str = "standard",
                 class_names: Sequence[str] | None = None, device: str | None = None) -> None:
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
        self.device = device
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
            distributed = _distributed()
            prefix = f"{distributed.rank()}:" if distributed and distributed.is_distributed() else ""
            case_id = f"{prefix}{len(self._cases)}"
        scores = self._scores(pred, gt, spacing if self.convention == "standard" else None)
        rows = [{"case": str(case_id), "class": self.class_names[c], **score} for c, score in enumerate(scores, 1)]
        self._cases.setdefault(str(case_id), rows)
        return rows

    def _scores(self, pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...] | None) -> list[dict[str, Any]]:
        """``{"dice", "hd95", "note"}`` of each foreground class, in label order."""
        order, (pred, gt) = common_layout(pred, gt)
        either = np.flatnonzero(pred.ravel(order) | gt.ravel(order))  # labels are >= 0
        pred_sizes, gt_sizes, both = class_counts(pred.ravel(order), gt.ravel(order), either, self.num_classes)
        classes = range(1, self.num_classes)
        surfaces = None
        if any(pred_sizes[c] and gt_sizes[c] for c in classes):
            surfaces = [label_surfaces(labels, self.num_classes) for labels in (pred, gt)]
        scores = []
        for c in classes:
            p_size, g_size = int(pred_sizes[c]), int(gt_sizes[c])
            distances = surface_distances(surfaces[0][c], surfaces[1][c], spacing, self.device) \
                if p_size and g_size else None
            scores.append(self._score(p_size, g_size, int(both[c]), distances))
        return scores

    def _score(self, p_size: int, g_size: int, both: int,
               distances: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
        """One class's numbers from its voxel counts and (both masks non-empty) its surface distances."""
        if self.convention == "transunet":
            if distances is not None:
                return {"dice": 2.0 * both / (p_size + g_size),
                        "hd95": float(np.percentile(np.hstack(distances), 95)), "note": ""}
            if p_size:
                return {"dice": 1.0, "hd95": 0.0, "note": "empty ground truth: (1, 0) as TransUNet"}
            return {"dice": 0.0, "hd95": 0.0, "note": "empty prediction: (0, 0) as TransUNet"}
        if not g_size:
            note = "empty ground truth and prediction" if not p_size else "empty ground truth"
            return {"dice": float("nan"), "hd95": float("nan"), "note": note}
        dice = 2.0 * both / (p_size + g_size)
        if distances is None:
            return {"dice": dice, "hd95": float("nan"), "note": "empty prediction: HD95 undefined"}
        hd95 = max(np.percentile(distances[0], 95), np.percentile(distances[1], 95))
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
        distributed = _distributed()
        for part in distributed.all_gather_objects(self._cases) if distributed else [self._cases]:
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
