"""eval: our evaluators against the reference computations (COCO AP, mIoU, HD95), same numbers.

Three measurements, each on generated data, each timed against its baseline in the same run:

- ``coco``: bbox AP of 5,000 images (about 36k ground-truth boxes, 100 detections per image):
  ``COCOEvaluator`` fed per-image tensors vs plain pycocotools (``loadRes`` + ``COCOeval``).
- ``miou``: 500 label maps of 1024x2048 with 19 classes: ``SemanticEvaluator`` vs the
  per-image intersect-and-union histograms of mmsegmentation's ``IoUMetric``, summed.
- ``hd95``: Dice/HD95 of 8 organs in a 512x512x150 volume: ``MedicalEvaluator`` (TransUNet
  convention) vs medpy's ``dc``/``hd95`` on the full volume per organ, as TransUNet calls them.

Each asserts that both sides give the same numbers. ``--quick`` shrinks every size.

``--end-to-end`` measures the command line instead, as a process on files, against the
reference tools as plain scripts on the same files (wall clock and peak resident memory of
each process; the numbers must agree): ``densevit score coco`` against pycocotools and
faster-coco-eval (:mod:`densevit.bench.end_to_end_coco`), ``densevit score medical`` against
medpy (:mod:`densevit.bench.end_to_end_medical`), and start-up (:func:`run_startup_end_to_end`):
``densevit --version`` against a bare interpreter and ``densevit score coco`` on 100 images
against a pycocotools script. It prints a markdown table of all cases, also in the JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from densevit.bench import run_process, timed
from densevit.evaluation.coco import STAT_NAMES, COCOEvaluator
from densevit.evaluation.medical import MedicalEvaluator
from densevit.evaluation.semantic import SemanticEvaluator

PARTS = ("coco", "miou", "hd95")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=None,
                        help="what to measure in process (default: all of them, none with --end-to-end)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="the command line as a process against the reference tools' scripts, on files")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where --end-to-end writes its files and logs (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    sizes = {
        "coco_images": 300 if args.quick else 5000,
        "miou_maps": 20 if args.quick else 500,
        "miou_shape": (256, 512) if args.quick else (1024, 2048),
        "volume_shape": (128, 128, 40) if args.quick else (512, 512, 150),
    }
    measurements = {"coco": bench_coco, "miou": bench_miou, "hd95": bench_hd95}
    parts = args.parts if args.parts is not None else ([] if args.end_to_end else list(PARTS))
    out: dict[str, Any] = {"settings": {"threads": args.threads, "quick": args.quick, "seed": args.seed,
                                        "parts": parts, "end_to_end": args.end_to_end,
                                        **{k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}}}
    for part in parts:
        out[part] = measurements[part](sizes, np.random.default_rng(args.seed))
        print(f"{part}: ours {out[part]['ours_s']:.2f} s, baseline {out[part]['baseline_s']:.2f} s, "
              f"x{out[part]['ratio']:.1f}", flush=True)
    if args.end_to_end:
        out["end_to_end"] = end_to_end(args.workdir, args.quick)
    return out


def default_out(args: argparse.Namespace) -> str:
    """The JSON's name under ``bench_out/`` (tools/benchmark.py): the end-to-end figures apart."""
    return "eval_end_to_end" if args.end_to_end and not args.parts else "eval"


def _figures(ours_s: float, baseline_s: float, **details: Any) -> dict[str, Any]:
    return {"ours_s": ours_s, "baseline_s": baseline_s, "ratio": baseline_s / ours_s, **details}


# ----------------------------------------------------------------------------- COCO
def coco_set(images: int, rng: np.random.Generator) -> tuple[dict, list[dict], list[int]]:
    """Ground truth (7.2 boxes per image on average, 80 categories with COCO's gapped ids) and
    100 detections per image as per-image float64 tensors (pixel xyxy, contiguous labels)."""
    category_ids = [c for c in range(1, 91) if c not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    gt: dict[str, list] = {"images": [], "annotations": [],
                           "categories": [{"id": c, "name": str(c)} for c in category_ids]}
    predictions = []
    for image_id in range(1, images + 1):
        width, height = 640, 480
        gt["images"].append({"id": image_id, "width": width, "height": height})
        count = int(rng.poisson(7.2))
        xy = rng.uniform(0, [width - 40, height - 40], (count, 2))
        wh = rng.uniform(4, 300, (count, 2)) * rng.uniform(0.1, 1.0, (count, 1))
        labels = rng.integers(0, 80, count)
        for (x, y), (w, h), label in zip(xy.tolist(), wh.tolist(), labels.tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                      "category_id": category_ids[label], "bbox": [x, y, w, h],
                                      "area": w * h, "iscrowd": int(rng.random() < 0.01)})
        # Detections: jittered ground truth (some with the wrong class) and random boxes.
        source = rng.integers(0, max(count, 1), 100)
        if count:
            boxes = np.concatenate([xy[source], xy[source] + wh[source]], 1) + rng.normal(0, 6, (100, 4))
            det_labels = np.where(rng.random(100) < 0.7, labels[source], rng.integers(0, 80, 100))
        else:
            boxes = np.zeros((100, 4))
            det_labels = rng.integers(0, 80, 100)
        random = rng.random(100) < 0.3
        corner = rng.uniform(0, [width - 20, height - 20], (int(random.sum()), 2))
        boxes[random] = np.concatenate([corner, corner + rng.uniform(5, 200, corner.shape)], 1)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        predictions.append({"image_id": image_id, "boxes": torch.from_numpy(boxes),
                            "scores": torch.from_numpy(rng.random(100)), "labels": torch.from_numpy(det_labels)})
    return gt, predictions, category_ids


def as_results(predictions: list[dict], category_ids: list[int]) -> list[dict]:
    """The same detections in the COCO results format (xywh computed as the evaluator does)."""
    results = []
    for p in predictions:
        boxes = p["boxes"].numpy()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        for box, score, label in zip(xywh, p["scores"].tolist(), p["labels"].tolist()):
            results.append({"image_id": p["image_id"], "category_id": category_ids[label], "bbox": box,
                            "score": score})
    return results


def bench_coco(sizes: dict, rng: np.random.Generator) -> dict[str, Any]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, predictions, category_ids = coco_set(sizes["coco_images"], rng)
    results = as_results(predictions, category_ids)
    gt_copy, results_copy = copy.deepcopy(gt), copy.deepcopy(results)  # pycocotools edits its inputs

    def ours() -> np.ndarray:
        evaluator = COCOEvaluator(gt, backend="auto", label_to_category_id=category_ids)  # densevit's own
        evaluator.process(predictions)
        stats = evaluator.compute()["bbox"]
        return np.array([stats[k] for k in STAT_NAMES])

    def baseline() -> np.ndarray:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = gt_copy
            coco_gt.createIndex()
            coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results_copy), "bbox")
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        return np.asarray(coco_eval.stats)

    ours_s, ours_stats = timed(ours)
    baseline_s, baseline_stats = timed(baseline)
    difference = float(np.max(np.abs(ours_stats - baseline_stats)))
    assert difference <= 1e-12, f"COCO stats differ from pycocotools by {difference}"
    return _figures(ours_s, baseline_s, backend="densevit", images=len(gt["images"]),
                    gt_boxes=len(gt["annotations"]), detections=len(results),
                    AP=float(ours_stats[0]), max_stat_difference=difference)


# ----------------------------------------------------------------------------- mIoU
def label_maps(count: int, shape: tuple[int, int], classes: int, rng: np.random.Generator):
    """Street-scene-like maps: blocky regions (upsampled coarse labels), 5% void; predictions
    disagree along region borders and in a few blotches."""
    coarse = rng.integers(0, classes, (count, shape[0] // 32, shape[1] // 32))
    gt = coarse.repeat(32, 1).repeat(32, 2).astype(np.int64)
    gt[rng.random(gt.shape) < 0.05] = 255
    pred = np.roll(coarse.repeat(32, 1).repeat(32, 2), 5, axis=2).astype(np.int64)
    blotch = rng.random(pred.shape) < 0.1
    pred[blotch] = rng.integers(0, classes, int(blotch.sum()))
    return torch.from_numpy(pred), torch.from_numpy(gt)


def mmseg_intersect_and_union(pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int):
    """mmsegmentation's ``IoUMetric.intersect_and_union`` for one image."""
    mask = label != ignore_index
    pred, label = pred[mask], label[mask]
    intersect = pred[pred == label]
    area_intersect = torch.histc(intersect.float(), bins=num_classes, min=0, max=num_classes - 1)
    area_pred = torch.histc(pred.float(), bins=num_classes, min=0, max=num_classes - 1)
    area_label = torch.histc(label.float(), bins=num_classes, min=0, max=num_classes - 1)
    return area_intersect, area_pred + area_label - area_intersect, area_pred, area_label


def bench_miou(sizes: dict, rng: np.random.Generator) -> dict[str, Any]:
    classes, count = 19, sizes["miou_maps"]
    # A pool of distinct maps, cycled: 500 different 1024x2048 pairs would need gigabytes.
    pool_pred, pool_gt = label_maps(min(8, count), sizes["miou_shape"], classes, rng)
    pairs = [(pool_pred[k % len(pool_pred)], pool_gt[k % len(pool_gt)]) for k in range(count)]

    def ours() -> dict[str, float]:
        evaluator = SemanticEvaluator(classes)
        for pred, gt in pairs:
            evaluator.process(pred, gt)
        result = evaluator.compute()
        return {k: result[k] for k in ("aAcc", "mIoU", "mAcc", "mDice")}

    def baseline() -> dict[str, float]:
        per_image = [mmseg_intersect_and_union(pred, gt, classes, 255) for pred, gt in pairs]
        inter, union, area_pred, area_label = (sum(r[i].double() for r in per_image) for i in range(4))
        return {"aAcc": float(inter.sum() / area_label.sum()), "mIoU": float(torch.nanmean(inter / union)),
                "mAcc": float(torch.nanmean(inter / area_label)),
                "mDice": float(torch.nanmean(2 * inter / (area_pred + area_label)))}

    ours_s, ours_values = timed(ours)
    baseline_s, baseline_values = timed(baseline)
    difference = max(abs(ours_values[k] - baseline_values[k]) for k in ours_values)
    assert difference <= 1e-12, f"mIoU figures differ from the per-image baseline by {difference}"
    return _figures(ours_s, baseline_s, maps=count, shape=list(sizes["miou_shape"]), classes=classes,
                    **ours_values, max_difference=difference)


# ----------------------------------------------------------------------------- HD95
def organ_volume(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """8 ellipsoid 'organs' of Synapse-like sizes and a prediction that is off by a voxel or two."""
    scale = np.array(shape) / np.array([512, 512, 150])
    radii = np.array([[90, 70, 40], [35, 30, 20], [25, 20, 25], [25, 20, 25], [12, 10, 10],
                      [40, 15, 10], [8, 8, 60], [50, 40, 20]]) * scale
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    gt = np.zeros(shape, dtype=np.uint8)
    for organ, radius in enumerate(radii, start=1):
        centre = rng.uniform(radius + 2, np.array(shape) - radius - 2)
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) <= 1
        gt[inside] = organ
    pred = np.roll(gt, (1, -1, 0), axis=(0, 1, 2))
    for organ in (2, 5):
        pred[ndimage.binary_dilation(pred == organ, iterations=2) & (pred == 0)] = organ
    blobs = rng.integers(0, np.array(shape) - 4, (6, 3))
    for organ, (x, y, z) in zip((1, 3, 4, 6, 7, 8), blobs):
        pred[x:x + 3, y:y + 3, z:z + 3] = organ
    return pred, gt


def medpy_style(pred: np.ndarray, gt: np.ndarray, classes: int) -> list[tuple[float, float]]:
    """TransUNet's ``calculate_metric_percase(prediction == i, label == i)`` with medpy's ``dc`` and
    ``hd95``, on the full volume."""
    def surface_distances(result, reference):
        footprint = ndimage.generate_binary_structure(result.ndim, 1)
        result_border = result ^ ndimage.binary_erosion(result, structure=footprint, iterations=1)
        reference_border = reference ^ ndimage.binary_erosion(reference, structure=footprint, iterations=1)
        return ndimage.distance_transform_edt(~reference_border, sampling=None)[result_border]

    scores = []
    for c in range(1, classes):
        p, g = pred == c, gt == c
        if p.sum() > 0 and g.sum() > 0:
            dice = 2.0 * np.count_nonzero(p & g) / float(np.count_nonzero(p) + np.count_nonzero(g))
            hd95 = np.percentile(np.hstack((surface_distances(p, g), surface_distances(g, p))), 95)
            scores.append((dice, float(hd95)))
        else:
            scores.append((1.0, 0.0) if p.sum() > 0 else (0.0, 0.0))
    return scores


def bench_hd95(sizes: dict, rng: np.random.Generator) -> dict[str, Any]:
    pred, gt = organ_volume(tuple(sizes["volume_shape"]), rng)

    def ours() -> list[tuple[float, float]]:
        evaluator = MedicalEvaluator(9, convention="transunet")
        return [(row["dice"], row["hd95"]) for row in evaluator.process(pred, gt)]

    ours_s, ours_scores = timed(ours)
    baseline_s, baseline_scores = timed(lambda: medpy_style(pred, gt, 9))
    assert ours_scores == baseline_scores, f"HD95/Dice differ: {ours_scores} vs {baseline_scores}"
    return _figures(ours_s, baseline_s, shape=list(gt.shape), organs=8,
                    dice=[d for d, _ in ours_scores], hd95=[h for _, h in ours_scores])


# ----------------------------------------------------------------------------- end to end
STARTUP_IMAGES = 100

# The plain script a user would write instead of ``densevit score coco GT DT --out F`` (bbox).
PYCOCOTOOLS_SCRIPT = """
import json, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt = COCO(sys.argv[1])
evaluator = COCOeval(gt, gt.loadRes(sys.argv[2]), "bbox")
evaluator.evaluate()
evaluator.accumulate()
evaluator.summarize()
with open(sys.argv[3], "w") as out:
    json.dump([float(s) for s in evaluator.stats[:12]], out)
"""

# Which of PyTorch, torchvision and timm a ``densevit`` command imports (it should import none).
HEAVY_IMPORTS = """
import sys
from densevit.cli import main
main(sys.argv[1:])
print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torchvision", "timm"}))
"""


def end_to_end(workdir: Path | None, quick: bool) -> dict[str, Any]:
    """The start-up, COCO and medical end-to-end measurements (module docstring), each in its own
    folder under ``workdir``, with one table of all their cases."""
    from densevit.bench.end_to_end_coco import run_coco_end_to_end
    from densevit.bench.end_to_end_medical import run_medical_end_to_end

    measurements = {"startup": run_startup_end_to_end, "coco": run_coco_end_to_end,
                    "medical": run_medical_end_to_end}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="densevit-end-to-end-") as temporary:
        root = workdir if workdir is not None else Path(temporary)
        for name, measure in measurements.items():
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            print(f"end to end: {name}", flush=True)
            out[name] = measure(folder, quick)
    out["rows"] = [row for name in measurements for row in table_rows(out[name], name)]
    out["table"] = markdown_table(out["rows"])
    print(out["table"], flush=True)
    return out


def densevit_command() -> list[str]:
    """The ``densevit`` console script installed beside this interpreter (else ``python -m densevit``)."""
    script = Path(sys.executable).with_name("densevit")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "densevit"]


def best_of(repeats: int, command: list[str], log: Path) -> dict[str, float]:
    """The fastest of ``repeats`` runs (start-up is noisy), with the largest peak memory seen."""
    runs = [run_process(command, log) for _ in range(repeats)]
    return {"seconds": min(r["seconds"] for r in runs), "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "runs": len(runs)}


def case_row(case: str, reference: str, theirs: dict[str, float], ours: dict[str, float]) -> dict[str, Any]:
    """One row of the table: the reference's and densevit's seconds, their ratio (reference / densevit:
    above 1, densevit is faster) and both peak memories."""
    return {"case": case, "reference": reference, "reference_s": theirs["seconds"], "densevit_s": ours["seconds"],
            "ratio": theirs["seconds"] / ours["seconds"], "densevit_peak_rss_mb": ours["peak_rss_mb"],
            "reference_peak_rss_mb": theirs["peak_rss_mb"]}


def run_startup_end_to_end(workdir: Path, quick: bool) -> dict[str, Any]:
    """``densevit --version`` against a bare interpreter, and ``densevit score coco`` on 100 images
    (bbox) against a plain pycocotools script on the same two files; best of 5 runs each (2 with
    ``quick``). The 12 stats must agree, and ``densevit score coco`` must not import PyTorch."""
    gt, predictions, category_ids = coco_set(STARTUP_IMAGES, np.random.default_rng(0))
    gt_path, dt_path, script = workdir / "gt.json", workdir / "bbox.json", workdir / "pycocotools_bbox.py"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(as_results(predictions, category_ids)))
    script.write_text(PYCOCOTOOLS_SCRIPT)
    ours_json, theirs_json = workdir / "densevit_stats.json", workdir / "pycocotools_stats.json"
    score = ["score", "coco", gt_path, dt_path]
    cases = [
        ("densevit --version", "python -c pass", [*densevit_command(), "--version"], [sys.executable, "-c", "pass"]),
        (f"densevit score coco ({STARTUP_IMAGES} images, bbox)", "pycocotools script",
         [*densevit_command(), *score, "--out", ours_json], [sys.executable, script, gt_path, dt_path, theirs_json]),
    ]
    repeats = 2 if quick else 5
    rows = []
    for number, (case, reference, ours, theirs) in enumerate(cases):
        rows.append(case_row(case, reference, best_of(repeats, theirs, workdir / f"reference_{number}.log"),
                             best_of(repeats, ours, workdir / f"densevit_{number}.log")))
    ours_stats = json.loads(ours_json.read_text())["bbox"]
    difference = float(np.max(np.abs(np.array([ours_stats[k] for k in STAT_NAMES]) - json.loads(theirs_json.read_text()))))
    assert difference <= 1e-12, f"densevit score coco differs from the pycocotools script by {difference}"
    heavy = subprocess.run([sys.executable, "-c", HEAVY_IMPORTS, *map(str, score)], capture_output=True, text=True,
                           check=True).stdout.strip().splitlines()[-1]
    for row in rows:
        print(f"  {row['case']}: {row['densevit_s']:.3f} s, {row['reference']} {row['reference_s']:.3f} s", flush=True)
    return {"cases": rows, "images": STARTUP_IMAGES, "detections": len(predictions) * 100, "repeats": repeats,
            "max_stat_difference": difference, "score_coco_imports": json.loads(heavy.replace("'", '"'))}


def table_rows(result: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """The table rows of one end-to-end measurement (``label``: its name). Its ``cases`` are rows
    already (:func:`case_row`), or cases ``{"densevit": {"seconds", "peak_rss_mb"}, TOOL: {...}}``
    by name, under ``cases`` or at the top (COCO's ``bbox`` and ``segm``): one row per reference
    tool of each case."""
    cases = result.get("cases")
    if isinstance(cases, list):
        return list(cases)
    if cases is None:
        cases = {name: case for name, case in result.items()
                 if isinstance(case, dict) and isinstance(case.get("densevit"), dict)}
    rows = []
    for name, case in cases.items():
        for tool, figures in case.items():
            if tool != "densevit" and isinstance(figures, dict) and "seconds" in figures:
                rows.append(case_row(f"{label}: {name}", tool, figures, case["densevit"]))
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The end-to-end cases as a markdown table (ratio: reference seconds / densevit seconds)."""
    lines = ["| case | reference | reference s | densevit s | ratio | peak RSS MB (densevit / reference) |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['case']} | {row['reference']} | {row['reference_s']:.3f} | {row['densevit_s']:.3f} | "
                     f"{row['ratio']:.2f} | {row['densevit_peak_rss_mb']:.0f} / {row['reference_peak_rss_mb']:.0f} |")
    return "\n".join(lines)
