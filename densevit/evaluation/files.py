"""Scoring label files already on disk (``densevit score semantic|medical``).

Predictions and ground truth are paired by :func:`densevit.data.pairing.pair_label_files`
(by name, flat or case by case, with name endings dropped); each pair is read by
:func:`read_label_file` (a NIfTI, NRRD or MetaImage volume with its spacing, or a 2D label
picture); masks stored as 0/255 are read as 0/1 (:func:`densevit.data.labels.binary_mapping`);
field-of-view masks keep pixels outside the eye (DRIVE) out of the scores.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from densevit.data.images import read_label_map
from densevit.data.labels import apply_fov, binary_mapping
from densevit.data.pairing import NIFTI_SUFFIXES, LabelPair
from densevit.data.sitk_volumes import read_sitk_volume, sitk_suffix, spacing_of
from densevit.errors import UserInputError, note, suspicious


def read_label_file(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Labels of a NIfTI, NRRD or MetaImage volume (with its voxel spacing) or of a label picture
    (spacing None)."""
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        from densevit.data.volume_readers import read_nifti  # nibabel, only for NIfTI

        data, image = read_nifti(path)
        return data, tuple(float(z) for z in image.header.get_zooms()[: data.ndim])
    if sitk_suffix(path.name):
        data, affine = read_sitk_volume(path)
        return data, spacing_of(affine)
    return read_label_map(path), None


def _checked_pair(pair: LabelPair, num_classes: int, binary: bool) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """Ground truth and prediction of ``pair`` read, of one shape, 0/255 read as 0/1 when ``binary``."""
    gt, spacing = read_label_file(pair.label)
    pred, pred_spacing = read_label_file(pair.item)
    if gt.shape != pred.shape:
        raise UserInputError(f"{pair.item}: shape {pred.shape} does not match {pair.label} {gt.shape}")
    if spacing is not None and pred_spacing is not None and not np.allclose(spacing, pred_spacing, rtol=1e-4):
        raise UserInputError(f"{pair.item}: voxel spacing {pred_spacing} differs from {pair.label} {spacing}")
    if binary:
        gt = np.where(gt == 255, 1, gt)
        pred = np.where(pred == 255, 1, pred)
    return gt, pred, spacing


def _ground_truth_values(pairs: Sequence[LabelPair]) -> set[int]:
    values: set[int] = set()
    for pair in pairs:
        values |= set(np.unique(read_label_file(pair.label)[0]).tolist())
    return values


def score_semantic_files(pairs: Sequence[LabelPair], num_classes: int, ignore_index: int = 255,
                         reduce_zero_label: bool = False, class_names: Sequence[str] | None = None,
                         binary_masks: str = "auto", strict: bool = False) -> dict:
    """mIoU etc. of label maps (:class:`~densevit.evaluation.semantic.SemanticEvaluator`'s layout).

    Pixels outside a pair's field of view are not scored. A class that never appears in the
    ground truth, or ground truth that is mostly the ignore value, is suspicious (a warning, an
    error with ``strict``).
    """
    from densevit.evaluation.semantic import SemanticEvaluator

    binary = num_classes == 2 and binary_mapping(_ground_truth_values(pairs), num_classes, binary_masks)
    if binary:
        note(f"{pairs[0].label.parent}: the ground truth holds 0/255 masks: read as 0/1 (--binary-masks no to "
             f"keep 255 as the ignore index)")
    evaluator = SemanticEvaluator(num_classes, ignore_index=ignore_index, reduce_zero_label=reduce_zero_label,
                                  class_names=class_names)
    ignored: list[tuple[float, Path]] = []
    for pair in pairs:
        gt, pred, _ = _checked_pair(pair, num_classes, binary)
        gt = apply_fov(gt, pair.fov, ignore_index)
        ignored.append((float(np.mean(gt == ignore_index)) if gt.size else 0.0, pair.label))
        try:
            evaluator.process(pred, gt)
        except UserInputError as err:
            raise UserInputError(f"{pair.label} vs {pair.item}: {err}") from None
    result = evaluator.compute()
    absent = [row["class"] for row in result["per_class"] if row["pixels"] == 0]
    if absent:
        suspicious(f"class(es) {', '.join(absent)} never appear in the ground truth of {len(pairs)} file(s)", strict)
    mostly_ignored = sorted((f, p) for f, p in ignored if f > 0.5)[::-1]
    if mostly_ignored:
        shown = ", ".join(f"{p.name} ({100 * f:.0f}%)" for f, p in mostly_ignored[:3])
        suspicious(f"{len(mostly_ignored)} ground-truth file(s) are mostly the ignore value {ignore_index}: {shown}",
                   strict)
    return result


def score_medical_files(pairs: Sequence[LabelPair], num_classes: int | None = None, convention: str = "standard",
                        class_names: Sequence[str] | None = None, spacing: Sequence[float] | None = None,
                        binary_masks: str = "auto", strict: bool = False) -> dict:
    """Dice and HD95 per case (:class:`~densevit.evaluation.medical.MedicalEvaluator`'s layout).

    Volumes (NIfTI, spacing from the ground truth's header) or 2D label pictures (``spacing``,
    or pixels); ``num_classes`` defaults to the names' count, else the largest label + 1.
    Pixels outside a pair's field of view count as background.
    """
    from densevit.evaluation.medical import MedicalEvaluator, as_label_volume

    values = _ground_truth_values(pairs) if num_classes in (None, 2) else set()
    binary = binary_mapping(values, 2, binary_masks) if num_classes in (None, 2) else False
    if binary:
        note(f"{pairs[0].label.parent}: the ground truth holds 0/255 masks: read as 0/1 (--binary-masks no to keep them)")
        num_classes = 2
    if num_classes is None:
        largest = max(values | {max(int(np.max(read_label_file(p.item)[0], initial=0)) for p in pairs)})
        num_classes = max(largest + 1, 2)
    evaluator = MedicalEvaluator(num_classes, convention=convention, class_names=class_names)
    for pair in pairs:
        gt, pred, header_spacing = _checked_pair(pair, num_classes, binary)
        gt, pred = apply_fov(gt, pair.fov, 0), apply_fov(pred, pair.fov, 0)
        gt = _named(lambda: as_label_volume(gt, "labels", num_classes), pair.label)
        pred = _named(lambda: as_label_volume(pred, "labels", num_classes), pair.item)
        folder = Path(pair.key).parent  # case folders: the case is the folder, as training names it
        case = pair.key if folder == Path(".") else folder.as_posix()
        evaluator.process(pred, gt, spacing=spacing if spacing is not None else header_spacing, case_id=case)
    result = evaluator.compute()
    absent = [entry["class"] for entry in result["per_class"]
              if all(row["note"].startswith("empty ground truth") for row in result["cases"] if row["class"] == entry["class"])]
    if absent:
        suspicious(f"class(es) {', '.join(absent)} never appear in the ground truth of {len(pairs)} case(s)", strict)
    return result


def _named(action, path: Path):
    """Run ``action``; a ``UserInputError`` from it names ``path``."""
    try:
        return action()
    except UserInputError as err:
        raise UserInputError(f"{path}: {err}") from None
