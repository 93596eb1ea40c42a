"""densevit's own COCO evaluation against pycocotools run in the test: the same bits.

Generated sets with everything that changes pycocotools' numbers: crowd regions (boxes and
uncompressed RLE masks) overlapping regular objects, objects of every area range and near the
range limits, near-duplicate objects (detections with several candidates), images without
objects or detections, a category without ground truth and one without detections, tied scores,
more than 100 detections in one image and category, and ids beyond 2**31 (images, categories,
annotations). Compared: the 12 stats, pycocotools' whole precision [T, R, K, A, M] and recall
[T, K, A, M] arrays (every IoU threshold, area range and maxDets) and the per-class AP.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from densevit.data import coco_json
from densevit.errors import UserInputError
from densevit.evaluation import coco_results
from densevit.evaluation.coco import (
    STAT_NAMES,
    COCOEvaluator,
    evaluate_arrays,
    score_files,
)
from densevit.evaluation.coco_gt import GroundTruth
from densevit.evaluation.coco_results import from_results

BIG = 2**40  # ids beyond 32 bits


def pycocotools_eval(gt: dict, results: list[dict], iou_type: str) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def polygon(x: float, y: float, w: float, h: float, rng: np.random.Generator) -> list[float]:
    k = int(rng.integers(5, 12))
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radius = rng.uniform(0.7, 1.0, k)
    return np.round(np.stack([x + w / 2 * (1 + radius * np.cos(angles)),
                              y + h / 2 * (1 + radius * np.sin(angles))], 1).reshape(-1), 2).tolist()


def uncompressed(rle: dict) -> list[int]:
    """The column-major run lengths of a mask (COCO's uncompressed RLE, as crowd regions come)."""
    with warnings.catch_warnings():  # pycocotools' decode under numpy 2
        warnings.simplefilter("ignore", DeprecationWarning)
        mask = mask_utils.decode(rle)
    flat = mask.reshape(-1, order="F").astype(np.int8)
    edges = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(edges).tolist()
    return [0] + runs if flat[0] else runs


def make_set(seed: int, iou_type: str, images: int = 30) -> tuple[dict, list[dict]]:
    """A ground truth and results (see the module docstring) with ids beyond 2**31."""
    rng = np.random.default_rng(seed)
    categories = [BIG + 7 * c for c in range(6)]  # categories[4]: no detections; [5]: no ground truth
    gt: dict = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in categories]}
    results: list[dict] = []
    for i in range(images):
        image_id, (height, width) = BIG + 1000 - 3 * i, (int(rng.integers(150, 300)), int(rng.integers(200, 400)))
        gt["images"].append({"id": image_id, "height": height, "width": width})
        objects = []
        for _ in range(0 if i % 10 == 3 else int(rng.integers(1, 7))):
            w, h = np.exp(rng.uniform(np.log(4), np.log(min(width, height) * 0.9), 2))
            if rng.random() < 0.1:  # on an area limit
                w = h = float(rng.choice([32, 96]))
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            objects.append((x, y, w, h, int(rng.integers(0, 5))))
            if rng.random() < 0.25:  # a near duplicate: detections with two candidates
                objects.append((x + rng.normal(0, 0.1 * w), y, w, h * rng.uniform(0.8, 1.2), objects[-1][4]))
        for x, y, w, h, c in objects:
            crowd = int(rng.random() < 0.15)
            x, y = float(np.clip(x, 0, width - 2)), float(np.clip(y, 0, height - 2))
            w, h = min(w, width - x), min(h, height - y)
            parts = [polygon(x, y, w, h, rng)]
            if rng.random() < 0.2:
                parts.append(polygon(x, y, w / 2, h / 2, rng))
            rle = mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
            segmentation: object = parts
            if crowd:
                segmentation = {"size": [height, width], "counts": uncompressed(rle)}
            elif rng.random() < 0.1:
                segmentation = {"size": [height, width], "counts": rle["counts"].decode()}
            box = [round(float(v), 2) for v in (x, y, w, h)]
            area = float(mask_utils.area(rle)) if iou_type == "segm" else round(w * h, 2)
            gt["annotations"].append({"id": BIG + 5 * len(gt["annotations"]) + 1, "image_id": image_id,
                                      "category_id": categories[c], "bbox": box, "area": area, "iscrowd": crowd,
                                      "segmentation": segmentation})
        # Detections: jittered copies of the objects, some with another class, and random ones.
        copies = [o for o in objects for _ in range(int(rng.integers(0, 4)))]
        copies += [(*rng.uniform(0, 100, 2), *np.exp(rng.uniform(1, 4.5, 2)), int(rng.integers(0, 6)))
                   for _ in range(int(rng.integers(0, 6)))]
        if i == 5 and objects:  # more than 100 in one image and category
            copies += [objects[0]] * 130
        for x, y, w, h, c in copies:
            c = c if rng.random() < 0.85 else int(rng.integers(0, 6))
            if c == 4:
                c = 5
            x, y = x + rng.normal(0, 0.06 * w), y + rng.normal(0, 0.06 * h)
            w, h = abs(w * rng.normal(1, 0.08)), abs(h * rng.normal(1, 0.08))
            score = float(np.round(rng.random(), 1 if i % 2 else 6))  # ties on every other image
            result = {"image_id": image_id, "category_id": categories[c], "score": score}
            if iou_type == "bbox":
                result["bbox"] = [round(float(v), 2) for v in (x, y, w, h)]
            else:
                rle = mask_utils.merge(mask_utils.frPyObjects([polygon(x, y, w, h, rng)], height, width))
                result["segmentation"] = {"size": [height, width], "counts": rle["counts"].decode()}
            results.append(result)
    order = rng.permutation(len(results))  # file order breaks score ties
    return gt, [results[k] for k in order]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_bits_as_pycocotools(iou_type, seed):
    gt, results = make_set(seed, iou_type)
    reference = pycocotools_eval(gt, results, iou_type)
    assert {a["iscrowd"] for a in gt["annotations"]} == {0, 1}
    assert any(np.isclose(reference.stats[3:6], -1)) is False  # every area range has ground truth
    ground_truth = GroundTruth(gt, (iou_type,))
    detections = from_results(results, (iou_type,), ground_truth.image_ids, ground_truth.category_ids,
                              ground_truth.sizes, "results", "gt")
    precision, recall = evaluate_arrays(ground_truth, detections, iou_type)
    np.testing.assert_array_equal(precision, reference.eval["precision"])
    np.testing.assert_array_equal(recall, reference.eval["recall"])

    evaluator = COCOEvaluator(gt, iou_types=(iou_type,))
    evaluator.add_results(results)
    result = evaluator.compute()[iou_type]
    np.testing.assert_array_equal([result[name] for name in STAT_NAMES], reference.stats)
    per_class = {row["category_id"]: row for row in result["per_class"]}
    assert per_class[BIG + 35]["AP"] == -1  # no ground truth
    assert per_class[BIG + 28]["AP"] == 0  # ground truth, no detections
    for k, category in enumerate(sorted(per_class)):
        p = reference.eval["precision"][:, :, k, 0, -1]
        assert per_class[category]["AP"] == (np.mean(p[p > -1]) if (p > -1).any() else -1)


def test_crowd_regions_and_ignored_objects_are_preferred_last():
    """A detection overlapping a regular object, a crowd region and an out-of-range object."""
    gt = {"images": [{"id": 1, "height": 300, "width": 300}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 1},
              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
              {"id": 3, "image_id": 1, "category_id": 1, "bbox": [12, 10, 50, 50], "area": 2500, "iscrowd": 0},
              {"id": 4, "image_id": 1, "category_id": 1, "bbox": [10, 12, 50, 50], "area": 500, "iscrowd": 0},
              {"id": 5, "image_id": 1, "category_id": 1, "bbox": [200, 200, 20, 20], "area": 400, "iscrowd": 0}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": [10 + dx, 11, 50, 50], "score": s}
               for dx, s in ((0, 0.9), (1, 0.9), (2, 0.8), (0, 0.7), (30, 0.6), (-5, 0.5))]
    results.append({"image_id": 1, "category_id": 1, "bbox": [201, 200, 20, 19], "score": 0.95})
    reference = pycocotools_eval(gt, results, "bbox")
    ground_truth = GroundTruth(gt, ("bbox",))
    detections = from_results(results, ("bbox",), ground_truth.image_ids, ground_truth.category_ids,
                              ground_truth.sizes, "results", "gt")
    precision, recall = evaluate_arrays(ground_truth, detections, "bbox")
    np.testing.assert_array_equal(precision, reference.eval["precision"])
    np.testing.assert_array_equal(recall, reference.eval["recall"])


def test_no_detections_and_only_unknown_matches():
    gt, _ = make_set(3, "bbox", images=6)
    for results in ([], [{"image_id": gt["images"][0]["id"], "category_id": BIG + 35, "bbox": [0, 0, 5, 5],
                          "score": 0.5}]):
        reference = pycocotools_eval(gt, results or [{"image_id": gt["images"][0]["id"], "category_id": BIG,
                                                      "bbox": [0, 0, 1, 1], "score": 0.1}], "bbox")
        evaluator = COCOEvaluator(gt)
        evaluator.add_results(results)
        stats = [evaluator.compute()["bbox"][name] for name in STAT_NAMES]
        assert stats[0] == 0 and set(stats) <= {0.0, -1.0}
        np.testing.assert_array_equal(np.asarray(stats) == -1, reference.stats == -1)


# --------------------------------------------------------------------------- results files
@pytest.fixture
def files(tmp_path):
    gt, results = make_set(4, "bbox", images=12)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    return gt, results, tmp_path


@pytest.mark.parametrize("msgspec", [True, False])
def test_results_file_read_fast_or_plain_gives_the_same(files, monkeypatch, msgspec):
    gt, results, folder = files
    if not msgspec:
        monkeypatch.setattr(coco_results, "msgspec", None)
        monkeypatch.setattr(coco_json, "msgspec", None)
    result = score_files(folder / "gt.json", folder / "dt.json")  # what densevit score coco runs
    np.testing.assert_array_equal([result["bbox"][name] for name in STAT_NAMES],
                                  pycocotools_eval(gt, results, "bbox").stats)


@pytest.mark.parametrize("change, message", [
    (lambda r: r[3].update(image_id=True), r"\[3\]: image_id must be an integer, got True"),
    (lambda r: r[4].update(category_id=float(r[4]["category_id"])), r"\[4\]: category_id must be an integer"),
    (lambda r: r[5].pop("score"), r"\[5\]: missing key 'score'"),
    (lambda r: r[6].update(score=float("nan")), r"\[6\]: 'score' must be a finite number, got nan"),
    (lambda r: r[7].update(bbox=[1, 2, 3]), r"\[7\]: 'bbox' must be 4 finite numbers"),
    (lambda r: r[8].update(bbox=[1, 2, -3, 4]), r"\[8\]: 'bbox' \[1, 2, -3, 4\] has a negative width or height"),
    (lambda r: r[9].update(image_id=12345), r"\[9\]: image_id 12345 is not in the ground truth"),
    (lambda r: r[2].update(category_id=3), r"\[2\]: category_id 3 is not in the ground truth categories"),
    (lambda r: r.__setitem__(1, [1, 2]), r"\[1\]: expected an object, got list"),
])
def test_results_file_errors_name_the_record_and_field(files, change, message):
    _, results, folder = files
    change(results)
    (folder / "bad.json").write_text(json.dumps(results))
    evaluator = COCOEvaluator(folder / "gt.json")
    with pytest.raises(UserInputError, match=message) as error:
        evaluator.add_results_file(folder / "bad.json")
    assert str(error.value).startswith(str(folder / "bad.json"))
