"""``densevit score coco|semantic|medical``: score predictions already on disk.

- ``coco GT.json DT.json``: COCO AP/AR of a results file (the 12 stats of pycocotools).
- ``semantic GT_DIR PRED_DIR --num-classes N``: mIoU etc. of label PNGs paired by file name.
- ``medical GT_DIR PRED_DIR``: Dice/HD95 of NIfTI label volumes paired by file name, with the
  voxel spacing of the ground truth's header.

A readable table goes to stdout; ``--out FILE`` also writes the numbers as JSON (NaN as null).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import numpy as np

from densevit.data.coco_json import read_json
from densevit.data.images import read_label_map
from densevit.data.volumes import NIFTI_SUFFIXES, read_nifti
from densevit.errors import UserInputError
from densevit.evaluation import coco, medical, semantic
from densevit.io import write_json_atomic


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score", help="score predictions on disk: COCO AP, mIoU, Dice/HD95",
        description="Score predictions already on disk with the reference tools' numbers.")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    p = kinds.add_parser("coco", help="COCO AP/AR of a detection results JSON",
                         description="COCO AP/AR of a results JSON against an instances JSON.")
    p.add_argument("gt", type=Path, help="ground truth (COCO instances JSON)")
    p.add_argument("dt", type=Path, help="detections (COCO results JSON: a list of detections)")
    p.add_argument("--iou-type", nargs="+", choices=coco.IOU_TYPES, default=["bbox"],
                   help="bbox and/or segm (default bbox)")
    p.add_argument("--per-class", action="store_true", help="also print AP per category")
    p.add_argument("--backend", choices=coco.BACKENDS, default="auto",
                   help="auto (faster-coco-eval when installed), pycocotools or faster_coco_eval")
    p.add_argument("--out", type=Path, help="also write the metrics as JSON")
    p.set_defaults(func=run, score=_score_coco)

    p = kinds.add_parser("semantic", help="mIoU/mAcc/mDice of label PNGs",
                         description="mIoU, mAcc, mDice and aAcc of label PNGs paired by file name.")
    p.add_argument("gt_dir", type=Path, help="folder of ground-truth label PNGs")
    p.add_argument("pred_dir", type=Path, help="folder of predicted label PNGs (same file names)")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--ignore-index", type=int, default=255)
    p.add_argument("--reduce-zero-label", action="store_true",
                   help="ground truth 0 is ignored and other labels lowered by one (ADE20K style)")
    p.add_argument("--class-names", type=Path, help="text file, one class name per line, label 0 first")
    p.add_argument("--out", type=Path, help="also write the metrics as JSON")
    p.set_defaults(func=run, score=_score_semantic)

    p = kinds.add_parser("medical", help="Dice/HD95 per case of NIfTI label volumes",
                         description="Dice and HD95 per case and class of NIfTI label volumes "
                         "paired by file name; spacing from the ground truth's header.")
    p.add_argument("gt_dir", type=Path, help="folder of ground-truth label volumes (.nii/.nii.gz)")
    p.add_argument("pred_dir", type=Path, help="folder of predicted label volumes (same file names)")
    p.add_argument("--convention", choices=medical.CONVENTIONS, default="standard",
                   help="standard (MONAI; HD95 in mm) or transunet (TransUNet/medpy; HD95 in voxels)")
    p.add_argument("--num-classes", type=int,
                   help="labels 0..N-1 (default: from --class-names, else the largest label + 1)")
    p.add_argument("--class-names", type=Path, help="text file, one name per label, background first")
    p.add_argument("--out", type=Path, help="also write the metrics as JSON")
    p.set_defaults(func=run, score=_score_medical)


def run(args: argparse.Namespace) -> int:
    result, table = args.score(args)
    print(table)
    if args.out is not None:
        write_json_atomic(result, args.out)
        print(f"wrote {args.out}")
    return 0


def _score_coco(args: argparse.Namespace) -> tuple[dict, str]:
    evaluator = coco.COCOEvaluator(args.gt, iou_types=args.iou_type, backend=args.backend)
    evaluator.add_results(read_json(args.dt), source=str(args.dt))
    result = evaluator.compute()
    if not args.per_class:
        result = {iou_type: {k: v for k, v in stats.items() if k != "per_class"}
                  for iou_type, stats in result.items()}
    return result, coco.format_table(result, per_class=args.per_class)


def _class_names(path: Path | None, num_classes: int | None) -> list[str] | None:
    """The names in ``path`` (one per line, label 0 first), checked against ``num_classes``."""
    if path is None:
        return None
    try:
        names = [line.strip() for line in path.read_text().splitlines()]
    except OSError as err:
        raise UserInputError(f"{path}: cannot read class names ({err.strerror})") from None
    while names and not names[-1]:
        names.pop()
    if not names or not all(names):
        raise UserInputError(f"{path}: expected one non-empty class name per line")
    if num_classes is not None and len(names) != num_classes:
        raise UserInputError(f"{path}: {len(names)} class names for {num_classes} classes "
                             "(one per label, label 0 first)")
    return names


def _pairs(gt_dir: Path, pred_dir: Path, suffixes: tuple[str, ...]) -> list[tuple[str, Path, Path]]:
    """``(name, gt file, pred file)`` for files with one of ``suffixes``, paired by name."""
    def listing(folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            raise UserInputError(f"{folder}: not a folder")
        return {p.name: p for p in sorted(folder.iterdir())
                if p.is_file() and p.name.lower().endswith(suffixes)}

    gt, pred = listing(gt_dir), listing(pred_dir)
    if not gt:
        raise UserInputError(f"{gt_dir}: no {' or '.join(suffixes)} files")
    for name in sorted(gt.keys() ^ pred.keys()):
        missing, present = (pred_dir, gt[name]) if name in gt else (gt_dir, pred[name])
        raise UserInputError(f"{present}: no file of the same name in {missing}")
    return [(name, gt[name], pred[name]) for name in sorted(gt)]


def _with_files(action: Callable[[], Any], *paths: Path) -> Any:
    """Run ``action``; a ``UserInputError`` from it is reported with the files it concerns."""
    try:
        return action()
    except UserInputError as err:
        raise UserInputError(f"{' vs '.join(map(str, paths))}: {err}") from None


def _score_semantic(args: argparse.Namespace) -> tuple[dict, str]:
    if args.num_classes < 1:
        raise UserInputError(f"--num-classes must be at least 1, got {args.num_classes}")
    names = _class_names(args.class_names, args.num_classes)
    evaluator = semantic.SemanticEvaluator(args.num_classes, ignore_index=args.ignore_index,
                                           reduce_zero_label=args.reduce_zero_label, class_names=names)
    for _, gt_path, pred_path in _pairs(args.gt_dir, args.pred_dir, (".png",)):
        gt, pred = read_label_map(gt_path), read_label_map(pred_path)
        if gt.shape != pred.shape:
            raise UserInputError(f"{pred_path}: size {pred.shape[::-1]} does not match {gt_path} "
                                 f"{gt.shape[::-1]} (width, height)")
        _with_files(lambda: evaluator.process(pred, gt), gt_path, pred_path)
    result = evaluator.compute()
    return result, semantic.format_table(result)


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    data, image = read_nifti(path)
    return data, tuple(float(z) for z in image.header.get_zooms()[:data.ndim])


def _score_medical(args: argparse.Namespace) -> tuple[dict, str]:
    if args.num_classes is not None and args.num_classes < 2:
        raise UserInputError(f"--num-classes must be at least 2 (background and a class), got {args.num_classes}")
    pairs = _pairs(args.gt_dir, args.pred_dir, NIFTI_SUFFIXES)
    names = _class_names(args.class_names, args.num_classes)
    num_classes = args.num_classes or (len(names) if names else None)
    if num_classes is None:
        largest = 0
        for _, gt_path, pred_path in pairs:
            for path in (gt_path, pred_path):
                data = _read_nifti(path)[0]
                largest = max(largest, int(np.nanmax(data)) if data.size else 0)
        num_classes = max(largest + 1, 2)
    evaluator = medical.MedicalEvaluator(num_classes, convention=args.convention, class_names=names)
    for name, gt_path, pred_path in pairs:
        (gt, spacing), (pred, pred_spacing) = _read_nifti(gt_path), _read_nifti(pred_path)
        if gt.shape != pred.shape:
            raise UserInputError(f"{pred_path}: shape {pred.shape} does not match {gt_path} {gt.shape}")
        if not np.allclose(spacing, pred_spacing, rtol=1e-4):
            raise UserInputError(f"{pred_path}: voxel spacing {pred_spacing} differs from {gt_path} {spacing}")
        gt = _with_files(lambda: medical.as_label_volume(gt, "labels", num_classes), gt_path)
        pred = _with_files(lambda: medical.as_label_volume(pred, "labels", num_classes), pred_path)
        case = name[: -len(next(s for s in NIFTI_SUFFIXES if name.lower().endswith(s)))]
        evaluator.process(pred, gt, spacing=spacing, case_id=case)
    result = evaluator.compute()
    return result, medical.format_table(result)
