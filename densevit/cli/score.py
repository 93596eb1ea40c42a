"""``densevit score coco|semantic|medical|classification``: score predictions already on disk.

- ``coco GT.json DT.json``: COCO AP/AR of a results file (the 12 stats of pycocotools).
- ``semantic GT_DIR PRED_DIR --num-classes N``: mIoU etc. of label maps paired by name.
- ``medical GT_DIR PRED_DIR``: Dice/HD95 of NIfTI label volumes (with the voxel spacing of the
  ground truth's header) or 2D label maps, paired by name, flat or case by case.
- ``classification PRED.csv TRUTH``: top-1, top-5, per-class accuracy and the confusion matrix
  of a predictions CSV (``path,label[,prob][,label_2,prob_2 ...]``, as ``densevit predict``
  writes it) against a ``path,label`` CSV or an ImageFolder split (:mod:`densevit.evaluation.classification`).

Pairing, reading and 0/255 masks: :mod:`densevit.evaluation.files`.

A readable table goes to stdout; ``--out FILE`` also writes the numbers as JSON (NaN as null).

Every evaluator is imported when its kind runs, never when the parser is built: ``densevit
--help`` pays for none of them, and no kind imports PyTorch (tests/test_cli_imports.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from densevit.errors import UserInputError

# The choices of the options, kept here so that building the parser imports no evaluator (and
# no numpy, pycocotools, scipy or PyTorch); tests/test_cli_imports.py checks that they are the
# evaluators' own (densevit.evaluation.coco.IOU_TYPES, coco_gt.BACKENDS, medical.CONVENTIONS).
IOU_TYPES = ("bbox", "segm")
BACKENDS = ("auto", "pycocotools", "faster_coco_eval")
CONVENTIONS = ("standard", "transunet")

if TYPE_CHECKING:
    from densevit.data.pairing import LabelPair


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score", help="score predictions on disk: COCO AP, mIoU, Dice/HD95, top-1/top-5",
        description="Score predictions already on disk with the reference tools' numbers.")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    p = kinds.add_parser("coco", help="COCO AP/AR of a detection results JSON",
                         description="COCO AP/AR of a results JSON against an instances JSON.")
    p.add_argument("gt", type=Path, help="ground truth (COCO instances JSON)")
    p.add_argument("dt", type=Path, help="detections (COCO results JSON: a list of detections)")
    p.add_argument("--iou-type", nargs="+", choices=IOU_TYPES, default=["bbox"],
                   help="bbox and/or segm (default bbox)")
    p.add_argument("--per-class", action="store_true", help="also print AP per category")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (densevit's own evaluator: pycocotools' numbers, bit for bit), pycocotools or faster_coco_eval")
    p.add_argument("--out", type=Path, help="also write the metrics as JSON")
    p.set_defaults(func=run, score=_score_coco)

    p = kinds.add_parser("semantic", help="mIoU/mAcc/mDice of label maps",
                         description="mIoU, mAcc, mDice and aAcc of label maps (PNG, TIF, GIF, BMP) "
                         "paired by name with the ground truth, as densevit predict writes them.")
    p.add_argument("gt_dir", type=Path, help="folder of ground-truth label maps")
    p.add_argument("pred_dir", type=Path, help="folder of predicted label maps (same names)")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--ignore-index", type=int, default=255)
    p.add_argument("--reduce-zero-label", action="store_true",
                   help="ground truth 0 is ignored and other labels lowered by one (ADE20K style)")
    _file_options(p, "one class name per line, label 0 first")
    p.set_defaults(func=run, score=_score_semantic)

    p = kinds.add_parser("medical", help="Dice/HD95 per case of label volumes or label maps",
                         description="Dice and HD95 per case and class of NIfTI label volumes (spacing "
                         "from the ground truth's header) or 2D label maps, paired by name; folders of "
                         "case folders pair case by case.")
    p.add_argument("gt_dir", type=Path, help="folder of ground-truth labels (flat, or one folder per case)")
    p.add_argument("pred_dir", type=Path, help="folder of predicted labels (same names and layout)")
    p.add_argument("--convention", choices=CONVENTIONS, default="standard",
                   help="standard (MONAI; HD95 in mm) or transunet (TransUNet/medpy; HD95 in voxels)")
    p.add_argument("--num-classes", type=int,
                   help="labels 0..N-1 (default: from --class-names, else the largest label + 1)")
    p.add_argument("--spacing", type=float, nargs="+", metavar="MM",
                   help="pixel or voxel size per axis (default: the NIfTI header's; 1 for 2D label maps)")
    _file_options(p, "one name per label, background first")
    p.set_defaults(func=run, score=_score_medical)

    p = kinds.add_parser("classification", help="top-1/top-5 and per-class accuracy of a predictions CSV",
                         description="Top-1, top-5, per-class accuracy and the confusion matrix of a predictions "
                         "CSV (header path,label, optionally prob and label_2,prob_2 .. label_5,prob_5: the "
                         "predictions.csv densevit predict writes) against the ground truth. Paths are resolved "
                         "against their own CSV's folder and matched; the classes are the names in either file.")
    p.add_argument("pred", type=Path, help="predictions CSV")
    p.add_argument("truth", type=Path, help="ground truth: a CSV with the header path,label, or an ImageFolder "
                   "split folder (<folder>/<class>/<image>)")
    p.add_argument("--out", type=Path, help="also write the metrics as JSON (the layout densevit evaluate writes)")
    p.set_defaults(func=run, score=_score_classification)


def _file_options(p: argparse.ArgumentParser, names_help: str) -> None:
    """The options semantic and medical scoring share: names, pairing, field of view, masks, output."""
    p.add_argument("--class-names", type=Path, help=f"text file, {names_help}")
    p.add_argument("--gt-endings", nargs="+", default=[], metavar="END",
                   help="name endings to drop from ground-truth files before pairing (e.g. _manual1)")
    p.add_argument("--pred-endings", nargs="+", default=[], metavar="END",
                   help="name endings to drop from prediction files before pairing (e.g. _training _test)")
    p.add_argument("--fov-dir", type=Path,
                   help="field-of-view masks (same names): pixels where the mask is 0 are not scored")
    p.add_argument("--fov-endings", nargs="+", default=[], metavar="END", help="name endings of the masks")
    p.add_argument("--binary-masks", choices=("auto", "yes", "no"), default="auto",
                   help="read 0/255 masks as 0/1 (auto: when there are two classes and the ground truth "
                   "holds only 0 and 255)")
    p.add_argument("--strict", action="store_true",
                   help="suspicious ground truth (a class that never appears, mostly ignored pixels) is an error")
    p.add_argument("--out", type=Path, help="also write the metrics as JSON (the layout densevit evaluate writes)")


def run(args: argparse.Namespace) -> int:
    from densevit.io import writable_folder, write_json_atomic

    if args.out is not None:
        writable_folder(args.out.parent, "--out file's folder")
    result, table = args.score(args)
    print(table)
    if args.out is not None:
        write_json_atomic(result, args.out)
        print(f"wrote {args.out}")
    return 0


def _score_coco(args: argparse.Namespace) -> tuple[dict, str]:
    from densevit.evaluation import coco

    result = coco.score_files(args.gt, args.dt, iou_types=args.iou_type, backend=args.backend)
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


def _pairs(args: argparse.Namespace, suffixes: tuple[str, ...]) -> list[LabelPair]:
    from densevit.data.pairing import pair_label_files

    return pair_label_files(args.gt_dir, args.pred_dir, suffixes, args.gt_endings, args.pred_endings,
                                  args.fov_dir, args.fov_endings)


def _score_semantic(args: argparse.Namespace) -> tuple[dict, str]:
    from densevit.data.pairing import PICTURE_SUFFIXES
    from densevit.evaluation import files, semantic

    if args.num_classes < 1:
        raise UserInputError(f"--num-classes must be at least 1, got {args.num_classes}")
    names = _class_names(args.class_names, args.num_classes)
    result = files.score_semantic_files(_pairs(args, PICTURE_SUFFIXES), args.num_classes, args.ignore_index,
                                        args.reduce_zero_label, names, args.binary_masks, args.strict)
    return result, semantic.format_table(result)


def _score_medical(args: argparse.Namespace) -> tuple[dict, str]:
    from densevit.data.pairing import LABEL_SUFFIXES
    from densevit.evaluation import files, medical

    if args.num_classes is not None and args.num_classes < 2:
        raise UserInputError(f"--num-classes must be at least 2 (background and a class), got {args.num_classes}")
    if args.spacing is not None and min(args.spacing) <= 0:
        raise UserInputError(f"--spacing: expected positive sizes, got {args.spacing}")
    names = _class_names(args.class_names, args.num_classes)
    result = files.score_medical_files(_pairs(args, LABEL_SUFFIXES), args.num_classes or (len(names) if names else None),
                                       args.convention, names, args.spacing, args.binary_masks, args.strict)
    return result, medical.format_table(result)


def _score_classification(args: argparse.Namespace) -> tuple[dict, str]:
    from densevit.evaluation import classification

    result = classification.score_files(args.pred, args.truth)
    return result, classification.format_table(result)
