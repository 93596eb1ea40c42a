"""Classification scores: top-1, top-5, per-class accuracy and the confusion matrix, from a
model's outputs or from files (``densevit score classification PRED.csv TRUTH``).

Predictions are ranked class indices (best first), so that the same numbers come from a
model's outputs (``densevit evaluate``) and from a predictions file (``densevit score
classification``). Counts live in one int64 numpy array (the confusion matrix by
``numpy.bincount``; a model's ranked indices are a few integers per image) and are summed over
processes in ``compute``; scoring files never imports PyTorch.

Files (:func:`score_files`):

* predictions, a CSV with a header: ``path,label`` (the top-1 class name), optionally ``prob``
  (its probability) and the next ranks as ``label_2,prob_2 .. label_5,prob_5`` (what
  ``densevit predict`` writes as ``predictions.csv``); top-5 is scored when every row ranks
  min(5, number of classes) labels;
* ground truth, a CSV ``path,label`` or an ImageFolder split (``<folder>/<class>/<image>``).

Paths are matched after resolving each against its own CSV's folder (absolute paths stay as
they are). An image of the ground truth without a prediction is an error; predictions for
images not in the ground truth are left out with a note. The classes are the names seen in
either file, sorted.
"""
from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from densevit.errors import UserInputError, note

TOP_K = 5


def _as_int64(values: Any) -> tuple[np.ndarray, Any]:
    """``values`` (a tensor, on any device, or anything ``np.asarray`` takes) as an int64 array, and
    the tensor's device (None for other input)."""
    torch = sys.modules.get("torch")  # no tensor exists before PyTorch is imported
    if torch is not None and isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.int64).numpy(), values.device
    return np.asarray(values).astype(np.int64), None


def _summed_over_processes(counts: np.ndarray, device: Any) -> np.ndarray:
    """A copy of ``counts`` summed over the processes of a distributed run (on ``device``, where
    the predictions were: NCCL reduces GPU tensors only). A process group needs PyTorch: without
    it loaded there is none, and nothing to import."""
    if "torch" not in sys.modules:
        return counts.copy()
    import torch

    from densevit.distributed import all_reduce_sum

    return all_reduce_sum(torch.tensor(counts, device=device)).cpu().numpy()


class ClassificationEvaluator:
    """Accuracy of ranked predictions against one label per image.

    Args:
        num_classes: classes are labels ``0 .. num_classes - 1``.
        class_names: names for the per-class table and the confusion matrix (default: numbers).
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise UserInputError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        # [K*K confusion (gt-major), samples with top-5 ranks, of those with the label in them]
        self.counts: np.ndarray | None = None
        self._device: Any = None  # the device of the predictions, for the sum over processes

    def process(self, predictions: Any, targets: Any) -> None:
        """Count a batch.

        Args:
            predictions: ranked class indices [B, k] (best first; k >= 1, top-5 is scored when
                k >= min(5, num_classes)), or a dict with them under ``"topk"``; a tensor or an array.
            targets: labels [B], or a dict with them under ``"labels"``.
        """
        ranked = predictions["topk"] if isinstance(predictions, dict) else predictions
        labels = targets["labels"] if isinstance(targets, dict) else targets
        ranked, device = _as_int64(ranked)
        labels = _as_int64(labels)[0]
        self._device = device if device is not None else self._device
        if ranked.ndim == 1:
            ranked = ranked[:, None]
        if ranked.ndim != 2 or ranked.shape[1] == 0 or labels.shape != ranked.shape[:1]:
            raise UserInputError(f"predictions of shape {tuple(ranked.shape)} do not rank classes for "
                                 f"{tuple(labels.shape)} labels")
        for what, values in (("label", labels), ("prediction", ranked)):
            outside = (values < 0) | (values >= self.num_classes)
            if outside.any():
                bad = np.unique(values[outside])[:5].tolist()
                raise UserInputError(f"{what} classes {bad} outside 0..{self.num_classes - 1}")
        k = self.num_classes
        confusion = np.bincount(labels * k + ranked[:, 0], minlength=k * k).astype(np.int64, copy=False)
        # top-5 is known only for images ranked at least min(5, K) deep (a file may give top-1 only)
        ranked_enough = ranked.shape[1] >= min(TOP_K, k)
        hits = int((ranked[:, :TOP_K] == labels[:, None]).any(axis=1).sum()) if ranked_enough else 0
        counts = np.concatenate([confusion, np.array([len(labels) if ranked_enough else 0, hits], dtype=np.int64)])
        self.counts = counts if self.counts is None else self.counts + counts

    def compute(self) -> dict[str, Any]:
        """Scores over everything processed, summed over all processes.

        Returns fractions in [0, 1]: ``top1``; ``top5`` (None when the predictions ranked fewer
        than min(5, K) classes for some image); ``mean_class_acc`` (mean over classes that have
        samples); ``per_class``: per class ``{"class", "acc", "samples"}`` (``acc`` None without
        samples); ``confusion``: counts ``[ground truth][predicted top-1]``; ``samples``; and
        ``acc/<class>`` for the logs.
        """
        k = self.num_classes
        local = self.counts if self.counts is not None else np.zeros(k * k + 2, dtype=np.int64)
        counts = _summed_over_processes(local, self._device)
        confusion = counts[: k * k].reshape(k, k)
        ranked_samples, in_top5 = counts[k * k :].tolist()
        support = confusion.sum(1)
        total = int(support.sum())
        correct = confusion.diagonal()
        per_class = [{"class": name, "acc": (int(c) / int(n)) if n else None, "samples": int(n)}
                     for name, c, n in zip(self.class_names, correct.tolist(), support.tolist())]
        accs = [row["acc"] for row in per_class if row["acc"] is not None]
        top5_known = total > 0 and ranked_samples == total
        result: dict[str, Any] = {
            "top1": int(correct.sum()) / total if total else float("nan"),
            "top5": in_top5 / total if top5_known else None,
            "mean_class_acc": sum(accs) / len(accs) if accs else float("nan"),
            "samples": total,
            "per_class": per_class,
            "confusion": confusion.tolist(),
        }
        result.update({f"acc/{row['class']}": row["acc"] for row in per_class if row["acc"] is not None})
        return result


def format_table(result: dict[str, Any]) -> str:
    """``compute()``'s result as readable text, in percent."""
    def pct(value: float | None) -> str:
        return "    n/a" if value is None or math.isnan(value) else f"{100 * value:7.2f}"

    lines = [f"{'class':<24} {'acc':>7} {'images':>7}"]
    lines += [f"{row['class'][:24]:<24} {pct(row['acc'])} {row['samples']:>7}" for row in result["per_class"]]
    lines.append("")
    lines.append(f"top1 {pct(result['top1']).strip()}  top5 {pct(result['top5']).strip()}  "
                 f"mean_class_acc {pct(result['mean_class_acc']).strip()}  images {result['samples']}")
    return "\n".join(lines)


def ranked_columns(depth: int) -> list[str]:
    """The header of a predictions CSV ranking ``depth`` classes: ``label, prob, label_2, prob_2, ...``."""
    columns = ["label", "prob"]
    for rank in range(2, depth + 1):
        columns += [f"label_{rank}", f"prob_{rank}"]
    return columns


def read_path_label_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(row number, {column: cell})`` of a CSV whose header has ``path`` and ``label``
    (blank rows skipped); a malformed file or row is one error naming the file and the row."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as err:
        raise UserInputError(f"{path}: cannot read ({err.strerror or err})") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise UserInputError(f"{path}: not a readable CSV ({err})") from None
    header = [cell.strip() for cell in rows[0]] if rows else []
    if "path" not in header or "label" not in header:
        raise UserInputError(f"{path}: row 1: expected a header with columns path and label, got {','.join(header)!r}")
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise UserInputError(f"{path}: row {number}: {len(row)} cells for the {len(header)} columns of the header")
        cells = {name: cell.strip() for name, cell in zip(header, row)}
        if not cells["path"] or not cells["label"]:
            raise UserInputError(f"{path}: row {number}: expected a path and a label, got {','.join(row)!r}")
        out.append((number, cells))
    if not out:
        raise UserInputError(f"{path}: no rows after the header")
    return header, out


def _key(csv_path: Path, image: str) -> str:
    return str((csv_path.parent / image).resolve())


def read_truth(path: Path) -> dict[str, str]:
    """Resolved image path -> class name, from a ``path,label`` CSV or an ImageFolder split folder."""
    if path.is_dir():
        from PIL import Image

        readable = set(Image.registered_extensions())  # the pictures densevit predict reads
        truth = {str(image.resolve()): folder.name for folder in sorted(path.iterdir()) if folder.is_dir()
                 for image in sorted(folder.rglob("*")) if image.is_file() and image.suffix.lower() in readable}
        if not truth:
            raise UserInputError(f"{path}: no images in class folders (expected <folder>/<class>/<image>)")
        return truth
    truth: dict[str, str] = {}
    for number, cells in read_path_label_csv(path)[1]:
        key = _key(path, cells["path"])
        if key in truth:
            raise UserInputError(f"{path}: row {number}: image {cells['path']} is listed twice")
        truth[key] = cells["label"]
    return truth


def read_predictions(path: Path) -> dict[str, list[str]]:
    """Resolved image path -> its ranked class names, best first (see the module docstring)."""
    header, rows = read_path_label_csv(path)
    depth = 1
    while f"label_{depth + 1}" in header:
        depth += 1
    columns = ["label"] + [f"label_{rank}" for rank in range(2, depth + 1)]
    ranked: dict[str, list[str]] = {}
    for number, cells in rows:
        for name in (c for c in header if c == "prob" or c.startswith("prob_")):
            if cells[name]:
                try:
                    float(cells[name])
                except ValueError:
                    raise UserInputError(f"{path}: row {number}: {name} {cells[name]!r} is not a number") from None
        labels = [cells[c] for c in columns]
        given = labels.index("") if "" in labels else len(labels)
        if any(labels[given:]):
            raise UserInputError(f"{path}: row {number}: ranked labels have a gap ({','.join(labels)})")
        key = _key(path, cells["path"])
        if key in ranked:
            raise UserInputError(f"{path}: row {number}: image {cells['path']} is predicted twice")
        ranked[key] = labels[:given]
    return ranked


def score_files(predictions: Path, truth: Path) -> dict[str, Any]:
    """:meth:`ClassificationEvaluator.compute` of a predictions CSV against the ground truth."""
    ranked = read_predictions(predictions)
    labels = read_truth(truth)
    missing = [key for key in labels if key not in ranked]
    if missing:
        raise UserInputError(f"{predictions}: no prediction for {len(missing)} of the {len(labels)} images of "
                             f"{truth} (first: {missing[0]})")
    extra = len(ranked) - len(labels)
    if extra:
        note(f"{predictions}: {extra} predicted images are not in {truth}: left out")
    names = sorted(set(labels.values()) | {name for key in labels for name in ranked[key]})
    index = {name: i for i, name in enumerate(names)}
    depth = min(len(ranked[key]) for key in labels)
    keys = list(labels)
    evaluator = ClassificationEvaluator(len(names), names)
    evaluator.process(np.array([[index[n] for n in ranked[key][:depth]] for key in keys], dtype=np.int64),
                      np.array([index[labels[key]] for key in keys], dtype=np.int64))
    return evaluator.compute()
