"""COCOEvaluator against pycocotools: real files, edge cases, and the inputs it must refuse."""
from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from densevit.errors import UserInputError
from densevit.evaluation.coco import STAT_NAMES, COCOEvaluator, scalar_metrics

BACKENDS = ["auto", "pycocotools", "faster_coco_eval"]  # auto: densevit's own evaluator


def pycocotools_stats(gt: dict, results: list[dict], iou_type: str = "bbox") -> np.ndarray:
    """The 12 stats of plain pycocotools (loadRes + COCOeval) on deep copies of the inputs."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats)


def stats_of(result: dict, iou_type: str = "bbox") -> np.ndarray:
    return np.array([result[iou_type][name] for name in STAT_NAMES])


def synthetic(seed: int = 0, images: int = 12, categories=(3, 7, 11)) -> tuple[dict, list[dict]]:
    """A small ground truth (some crowd boxes, one image without boxes) and noisy detections."""
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in categories]}
    results = []
    for i in range(images):
        gt["images"].append({"id": 100 + i, "width": 320, "height": 240})
        count = 0 if i == 0 else int(rng.integers(1, 6))
        for _ in range(count):
            x, y = rng.uniform(0, 200), rng.uniform(0, 150)
            w, h = rng.uniform(4, 110, 2)
            cat = int(rng.choice(categories))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": 100 + i,
                                      "category_id": cat, "bbox": [x, y, w, h], "area": w * h,
                                      "iscrowd": int(rng.random() < 0.1)})
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.normal(0, 6, 4)
                results.append({"image_id": 100 + i, "category_id": cat if rng.random() < 0.8 else
                                int(rng.choice(categories)),
                                "bbox": [x + jitter[0], y + jitter[1], abs(w + jitter[2]), abs(h + jitter[3])],
                                "score": float(rng.random())})
        for _ in range(int(rng.integers(0, 3))):
            results.append({"image_id": 100 + i, "category_id": int(rng.choice(categories)),
                            "bbox": [*rng.uniform(0, 200, 2).tolist(), *rng.uniform(5, 60, 2).tolist()],
                            "score": float(rng.random())})
    return gt, results


def evaluate(gt, results, backend="pycocotools", iou_types=("bbox",)) -> dict:
    evaluator = COCOEvaluator(gt, iou_types=iou_types, backend=backend)
    evaluator.add_results(results)
    return evaluator.compute()


# --------------------------------------------------------------------------- real files
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_expected_stats_of_the_coco_sample(real_data, backend, iou_type):
    folder = real_data / "coco_val2014_100"
    expected = json.loads((folder / "expected_stats.json").read_text())
    evaluator = COCOEvaluator(folder / "instances_val2014_100.json", iou_types=(iou_type,), backend=backend)
    results = json.loads((folder / f"instances_val2014_fake{iou_type}100_results.json").read_text())
    evaluator.add_results(results)
    result = evaluator.compute()
    np.testing.assert_allclose(stats_of(result, iou_type), expected[iou_type], rtol=0, atol=1e-12)
    per_class = result[iou_type]["per_class"]
    # 10 of the 80 categories have no ground truth: -1, as pycocotools gives them.
    assert sum(row["AP"] == -1 for row in per_class) == 10
    # Every category with ground truth has all T x R precisions valid, so AP is their mean.
    with_gt = [row["AP"] for row in per_class if row["AP"] != -1]
    assert np.mean(with_gt) == pytest.approx(expected[iou_type][0], abs=1e-12)


def test_per_class_ap_equals_pycocotools_restricted_to_that_category(real_data):
    folder = real_data / "coco_val2014_100"
    results = json.loads((folder / "instances_val2014_fakebbox100_results.json").read_text())
    per_class = {row["category_id"]: row for row in evaluate(
        str(folder / "instances_val2014_100.json"), results)["bbox"]["per_class"]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(folder / "instances_val2014_100.json"))
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        for category in (1, 18, 62):
            reference = COCOeval(coco_gt, coco_dt, "bbox")
            reference.params.catIds = [category]
            reference.evaluate()
            reference.accumulate()
            reference.summarize()
            assert per_class[category]["AP"] == pytest.approx(reference.stats[0], abs=1e-12)
            assert per_class[category]["AP50"] == pytest.approx(reference.stats[1], abs=1e-12)
            assert per_class[category]["AP75"] == pytest.approx(reference.stats[2], abs=1e-12)


def test_voc_ids_beyond_32_bits(real_data):
    """Image ids such as 20180000001 give the same numbers as the same data with small ids."""
    folder = real_data / "voc100" / "annotations"
    gt = json.loads((folder / "instances.json").read_text())
    other = json.loads((folder / "detections_other_ids.json").read_text())
    by_file = {img["file_name"]: img["id"] for img in gt["images"]}
    by_name = {cat["name"]: cat["id"] for cat in gt["categories"]}
    file_of = {img["id"]: img["file_name"] for img in other["images"]}
    name_of = {cat["id"]: cat["name"] for cat in other["categories"]}
    results = [{"image_id": by_file[file_of[d["image_id"]]], "category_id": by_name[name_of[d["category_id"]]],
                "bbox": d["bbox"], "score": d["score"]} for d in other["annotations"]]
    assert max(img["id"] for img in gt["images"]) > 2**31
    small = {old: k + 1 for k, old in enumerate(sorted(by_file.values()))}
    gt_small = copy.deepcopy(gt)
    for img in gt_small["images"]:
        img["id"] = small[img["id"]]
    for ann in gt_small["annotations"]:
        ann["image_id"] = small[ann["image_id"]]
    reference = pycocotools_stats(gt_small, [{**r, "image_id": small[r["image_id"]]} for r in results])
    assert reference[0] > 0.3
    for backend in BACKENDS:
        np.testing.assert_allclose(stats_of(evaluate(gt, results, backend)), reference, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("backend", BACKENDS)
def test_synthetic_set_matches_pycocotools(backend):
    """Crowd boxes, an image without ground truth, false positives, non-contiguous categories."""
    gt, results = synthetic()
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert any(r["image_id"] == 100 for r in results)  # detections on the image without gt
    np.testing.assert_allclose(stats_of(evaluate(gt, results, backend)), pycocotools_stats(gt, results),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_predictions_at_all_gives_zero(backend):
    gt, _ = synthetic()
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(IndexError):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_gt.loadRes([])  # why the evaluator never calls loadRes
    stats = stats_of(evaluate(gt, [], backend))
    # Same as one detection that matches nothing: 0, and -1 for area ranges without ground truth.
    miss = [{"image_id": 100, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}]
    np.testing.assert_array_equal(stats, pycocotools_stats(gt, miss))
    assert stats[0] == 0 and set(stats) <= {0.0, -1.0}


def test_huge_ids_are_renumbered():
    """Ids beyond 2**63 (no fixed-size integer holds them) give the small-id numbers."""
    gt, results = synthetic(seed=1)
    big = copy.deepcopy(gt)
    shift = 2**64
    for img in big["images"]:
        img["id"] += shift
    for cat in big["categories"]:
        cat["id"] += shift
    for ann in big["annotations"]:
        ann["image_id"] += shift
        ann["category_id"] += shift
        ann["id"] += shift
    big_results = [{**r, "image_id": r["image_id"] + shift, "category_id": r["category_id"] + shift}
                   for r in results]
    result = evaluate(big, big_results)
    np.testing.assert_allclose(stats_of(result), pycocotools_stats(gt, results), rtol=0, atol=1e-12)
    assert [row["category_id"] for row in result["bbox"]["per_class"]] == [c["id"] for c in big["categories"]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_annotation_id_zero_is_matched(backend):
    """pycocotools never matches an annotation with id 0; renumbering gives the fixed-file numbers."""
    gt, results = synthetic(seed=2)
    # Put id 0 on an annotation that a detection matches well.
    target = next(a for a in gt["annotations"] if not a["iscrowd"])
    results.append({"image_id": target["image_id"], "category_id": target["category_id"],
                    "bbox": list(target["bbox"]), "score": 0.99})
    with_zero = copy.deepcopy(gt)
    for ann in with_zero["annotations"]:
        ann["id"] -= 1  # ids 0..N-1, the matched one is not necessarily 0: make it so
    order = [a["id"] for a in with_zero["annotations"]]
    k = gt["annotations"].index(target)
    with_zero["annotations"][k]["id"], with_zero["annotations"][order.index(0)]["id"] = 0, order[k]
    fixed = copy.deepcopy(with_zero)
    for ann in fixed["annotations"]:
        ann["id"] += 1  # the manual fix: no id 0
    expected = pycocotools_stats(fixed, results)
    buggy = pycocotools_stats(with_zero, results)
    assert not np.allclose(buggy, expected)  # the tool's bug is real on this data
    np.testing.assert_allclose(stats_of(evaluate(with_zero, results, backend)), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensor_predictions_with_contiguous_labels(backend):
    """``process`` takes a postprocessor's per-image xyxy boxes, contiguous labels and target ids."""
    gt, results = synthetic(seed=3)
    categories = [c["id"] for c in gt["categories"]]
    predictions, targets = [], []
    for img in gt["images"]:
        mine = [r for r in results if r["image_id"] == img["id"]]
        xywh = torch.tensor([r["bbox"] for r in mine], dtype=torch.float64).reshape(-1, 4)
        predictions.append({"boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                            "scores": torch.tensor([r["score"] for r in mine], dtype=torch.float64),
                            "labels": torch.tensor([categories.index(r["category_id"]) for r in mine])})
        targets.append({"image_id": torch.tensor([img["id"]])})
    evaluator = COCOEvaluator(gt, label_to_category_id=categories, backend=backend)
    evaluator.process(predictions[:5], targets[:5])
    evaluator.process(predictions[5:], targets[5:])
    evaluator.process(predictions[:1], targets[:1])  # an image seen again (padded sampler) is ignored
    result = evaluator.compute()
    np.testing.assert_allclose(stats_of(result), pycocotools_stats(gt, results), rtol=0, atol=1e-9)
    flat = scalar_metrics(result)
    assert flat["bbox/AP"] == result["bbox"]["AP"] and len(flat) == 12


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_predictions_as_binary_tensors(backend):
    rng = np.random.default_rng(4)
    h, w = 40, 60
    gt = {"images": [{"id": 1, "height": h, "width": w}, {"id": 2, "height": h, "width": w}],
          "categories": [{"id": 5, "name": "blob"}], "annotations": []}
    results, predictions = [], {}
    for image in (1, 2):
        masks = []
        for k in range(3):
            m = np.zeros((h, w), dtype=np.uint8)
            y, x = rng.integers(0, 25), rng.integers(0, 40)
            m[y:y + rng.integers(4, 15), x:x + rng.integers(4, 20)] = 1
            rle = mask_utils.encode(np.asfortranarray(m))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image, "category_id": 5,
                                      "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                                      "area": float(m.sum()), "bbox": mask_utils.toBbox(rle).tolist(),
                                      "iscrowd": 0})
            pred = np.roll(m, int(rng.integers(-3, 4)), axis=1) if k < 2 else np.zeros_like(m)
            pred[0, k] = 1
            masks.append(pred)
        scores = rng.random(3)
        predictions[image] = {"boxes": torch.zeros(3, 4), "scores": torch.from_numpy(scores),
                              "labels": torch.tensor([5, 5, 5]), "masks": torch.from_numpy(np.stack(masks)).bool()}
        for m, s in zip(masks, scores):
            rle = mask_utils.encode(np.asfortranarray(m))
            results.append({"image_id": image, "category_id": 5, "score": float(s),
                            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}})
    evaluator = COCOEvaluator(gt, iou_types=("segm",), backend=backend)
    evaluator.process(predictions)
    np.testing.assert_allclose(stats_of(evaluator.compute(), "segm"), pycocotools_stats(gt, results, "segm"),
                               rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- refusals
def test_refuses_detections_for_unknown_images():
    gt, results = synthetic()
    results.append({"image_id": 999, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5})
    with pytest.raises(UserInputError, match="image_id 999 is not in the ground truth"):
        evaluate(gt, results)
    evaluator = COCOEvaluator(gt, backend="pycocotools")
    with pytest.raises(UserInputError, match="image_id 998"):
        evaluator.process([{"image_id": 998, "boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                            "labels": torch.zeros(0, dtype=torch.int64)}])


def test_refuses_negative_boxes_unknown_categories_and_missing_keys():
    gt, _ = synthetic()
    with pytest.raises(UserInputError, match=r"\[0\].*negative width or height"):
        evaluate(gt, [{"image_id": 101, "category_id": 3, "bbox": [10, 10, -2, 5], "score": 0.5}])
    with pytest.raises(UserInputError, match="category_id 4 is not in the ground truth"):
        evaluate(gt, [{"image_id": 101, "category_id": 4, "bbox": [10, 10, 2, 5], "score": 0.5}])
    with pytest.raises(UserInputError, match=r"\[0\]: missing key 'score'"):
        evaluate(gt, [{"image_id": 101, "category_id": 3, "bbox": [10, 10, 2, 5]}])
    evaluator = COCOEvaluator(gt, backend="pycocotools")
    with pytest.raises(UserInputError, match=r"box 0 \[10.0, 10.0, 5.0, 20.0\].*negative width or height"):
        evaluator.process({101: {"boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]]), "scores": torch.ones(1),
                                 "labels": torch.tensor([3])}})
    broken = copy.deepcopy(gt)
    del broken["annotations"][0]["area"]
    with pytest.raises(UserInputError, match=r"annotations\[0\] \(annotation id \d+, image id \d+\): missing key 'area'"):
        COCOEvaluator(broken)


def test_refuses_masks_of_the_wrong_size():
    gt = {"images": [{"id": 1, "height": 10, "width": 12}], "categories": [{"id": 1, "name": "a"}],
          "annotations": []}
    rle = mask_utils.encode(np.asfortranarray(np.ones((10, 13), dtype=np.uint8)))
    with pytest.raises(UserInputError, match=r"mask size \[10, 13\] does not match the image size \[10, 12\]"):
        evaluate(gt, [{"image_id": 1, "category_id": 1, "score": 0.5,
                       "segmentation": {"size": [10, 13], "counts": rle["counts"].decode()}}],
                 iou_types=("segm",))
