"""SemanticEvaluator against hand-computed cases and a brute-force per-image numpy computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from densevit.errors import UserInputError
from densevit.evaluation.semantic import SemanticEvaluator


def brute_force(preds, gts, num_classes, ignore_index=255):
    """mmsegmentation's recipe: per image, per class, intersection and union areas; then sums."""
    inter = np.zeros(num_classes)
    area_pred = np.zeros(num_classes)
    area_gt = np.zeros(num_classes)
    for pred, gt in zip(preds, gts):
        keep = gt != ignore_index
        for c in range(num_classes):
            p, g = (pred == c) & keep, (gt == c) & keep
            inter[c] += np.sum(p & g)
            area_pred[c] += p.sum()
            area_gt[c] += g.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (area_pred + area_gt - inter)
        acc = inter / area_gt
        dice = 2 * inter / (area_pred + area_gt)
    return {"aAcc": inter.sum() / area_gt.sum(), "IoU": iou, "Acc": acc, "Dice": dice}


def per_class(result, key):
    return np.array([row[key] for row in result["per_class"]])


def test_hand_computed_two_by_three():
    gt = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    evaluator = SemanticEvaluator(4)
    evaluator.process(pred, gt)
    result = evaluator.compute()
    # class 0: gt {00,01}, pred {00,11}: I=1 U=3; class 1: gt {02,10}, pred {01,02,10}: I=2 U=3;
    # class 2: gt {11}, pred {} (pred 2 sits on an ignored pixel): I=0 U=1; class 3 absent: NaN.
    np.testing.assert_allclose(per_class(result, "IoU")[:3], [1 / 3, 2 / 3, 0.0])
    assert math.isnan(per_class(result, "IoU")[3]) and math.isnan(per_class(result, "Acc")[3])
    np.testing.assert_allclose(per_class(result, "Acc")[:3], [1 / 2, 2 / 2, 0.0])
    np.testing.assert_allclose(per_class(result, "Dice")[:3], [2 / 4, 4 / 5, 0.0])
    assert result["aAcc"] == pytest.approx(3 / 5)
    assert result["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)  # NaN class left out
    assert result["mAcc"] == pytest.approx(0.5)
    assert result["mDice"] == pytest.approx((0.5 + 0.8 + 0) / 3)


def test_class_predicted_but_absent_from_ground_truth():
    evaluator = SemanticEvaluator(3)
    evaluator.process(torch.tensor([[2, 0]]), torch.tensor([[0, 0]]))
    result = evaluator.compute()
    assert per_class(result, "IoU")[2] == 0.0  # in the union, so scored 0, not NaN
    assert math.isnan(per_class(result, "Acc")[2])  # no ground truth: accuracy undefined
    assert math.isnan(per_class(result, "IoU")[1])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_random_batches_match_brute_force(dtype):
    rng = np.random.default_rng(0)
    preds, gts = [], []
    evaluator = SemanticEvaluator(6, class_names=list("abcdef"))
    for _ in range(4):
        gt = rng.integers(0, 5, (2, 17, 23))  # class 5 never in gt
        gt[rng.random(gt.shape) < 0.2] = 255
        pred = rng.integers(0, 6, (2, 17, 23))
        preds += list(pred)
        gts += list(gt)
        pred_t, gt_t = torch.from_numpy(pred).to(dtype), torch.from_numpy(gt).to(dtype)
        evaluator.process(pred_t, gt_t)
        assert np.array_equal(gt_t.numpy(), gt) and np.array_equal(pred_t.numpy(), pred)  # inputs untouched
    result = evaluator.compute()
    expected = brute_force(preds, gts, 6)
    assert result["aAcc"] == pytest.approx(expected["aAcc"], abs=1e-15)
    for key in ("IoU", "Acc", "Dice"):
        np.testing.assert_allclose(per_class(result, key), expected[key], rtol=1e-15, atol=0)
        assert result[f"m{key}"] == pytest.approx(np.nanmean(expected[key]), abs=1e-15)
    assert [row["class"] for row in result["per_class"]] == list("abcdef")


def test_logits_lists_and_compute_twice():
    rng = np.random.default_rng(1)
    logits = [torch.from_numpy(rng.normal(size=(3, h, 9))) for h in (5, 8)]
    gts = [torch.from_numpy(rng.integers(0, 3, (h, 9))) for h in (5, 8)]
    evaluator = SemanticEvaluator(3)
    evaluator.process(logits, gts)
    first = evaluator.compute()
    assert evaluator.compute() == first  # compute does not change the counts
    expected = brute_force([l.argmax(0).numpy() for l in logits], [g.numpy() for g in gts], 3)
    np.testing.assert_allclose(per_class(first, "IoU"), expected["IoU"], rtol=1e-15)
    evaluator.reset()
    assert math.isnan(evaluator.compute()["mIoU"])


def test_reduce_zero_label_as_mmsegmentation():
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 5, (30, 30))
    gt[:3] = 255
    pred = rng.integers(0, 4, (30, 30))
    evaluator = SemanticEvaluator(4, reduce_zero_label=True)
    evaluator.process(pred, gt)
    # mmsegmentation: 0 -> 255, then -1, and 254 (was 255) -> 255.
    reduced = gt.copy()
    reduced[reduced == 0] = 255
    reduced = reduced - 1
    reduced[reduced == 254] = 255
    expected = brute_force([pred], [reduced], 4)
    np.testing.assert_allclose(per_class(evaluator.compute(), "IoU"), expected["IoU"], rtol=1e-15)


def test_spread_out_label_values_take_the_explicit_path_with_the_same_counts():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 4, (20, 20))
    pred = rng.integers(0, 4, (20, 20))
    gt_far = gt.copy()
    gt_far[:2] = 10**9  # ignore index far from the classes: too many raw bins for the histogram
    gt_near = gt.copy()
    gt_near[:2] = 255
    far, near = SemanticEvaluator(4, ignore_index=10**9), SemanticEvaluator(4)
    far.process(torch.from_numpy(pred), torch.from_numpy(gt_far))
    near.process(torch.from_numpy(pred), torch.from_numpy(gt_near))
    assert np.array_equal(far.confusion, near.confusion)


def test_labels_outside_the_classes_are_errors():
    evaluator = SemanticEvaluator(3)
    with pytest.raises(UserInputError, match="ground truth has labels 7 outside 0..2 or the ignore index 255"):
        evaluator.process(torch.tensor([[0, 1]]), torch.tensor([[7, 1]]))
    with pytest.raises(UserInputError, match="prediction has labels 3 outside 0..2"):
        evaluator.process(torch.tensor([[3, 1]]), torch.tensor([[0, 1]]))
    with pytest.raises(UserInputError, match="ground truth has labels -1"):
        evaluator.process(torch.tensor([[0, 1]]), torch.tensor([[-1, 1]]))
    with pytest.raises(UserInputError, match="non-integer"):
        evaluator.process(torch.tensor([[0.5, 1.0]]), torch.tensor([[0, 1]]))
    with pytest.raises(UserInputError, match="differ"):
        evaluator.process(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(3, 2, dtype=torch.int64))
    # An out-of-range prediction on an ignored pixel is not scored, so not an error.
    evaluator.process(torch.tensor([[9, 1]]), torch.tensor([[255, 1]]))
    assert int(evaluator.confusion.sum()) == 1


@pytest.mark.parametrize("ignore_index", [255, 10**9])  # the histogram path and the explicit one
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.float32])
def test_arrays_count_as_tensors_do(dtype, ignore_index):
    """Files on disk are counted in numpy (no PyTorch): the same confusion matrix and scores."""
    rng = np.random.default_rng(4)
    gt = rng.integers(0, 5, (3, 19, 21)).astype(np.int64)
    gt[rng.random(gt.shape) < 0.2] = ignore_index
    pred = rng.integers(0, 5, (3, 19, 21))
    if ignore_index > 255 and dtype != np.int64:
        gt = gt.astype(np.int64)
    else:
        gt = gt.astype(dtype)
    arrays, tensors = SemanticEvaluator(5, ignore_index=ignore_index), SemanticEvaluator(5, ignore_index=ignore_index)
    arrays.process(list(pred.astype(dtype)), list(gt))
    tensors.process(torch.from_numpy(pred), torch.from_numpy(gt))
    assert isinstance(arrays.confusion, np.ndarray) and arrays.confusion.dtype == np.int64
    assert np.array_equal(arrays.confusion, tensors.confusion)
    assert arrays.compute() == tensors.compute()


def test_array_scores_take_the_argmax_and_refuse_bad_labels():
    rng = np.random.default_rng(5)
    scores, gt = rng.normal(size=(3, 6, 7)), rng.integers(0, 3, (6, 7))
    evaluator = SemanticEvaluator(3)
    evaluator.process(scores, gt)
    expected = SemanticEvaluator(3)
    expected.process(scores.argmax(0), gt)
    assert np.array_equal(evaluator.confusion, expected.confusion)
    with pytest.raises(UserInputError, match="ground truth has labels 7 outside 0..2"):
        evaluator.process(np.array([[0, 1]]), np.array([[7, 1]]))
    with pytest.raises(UserInputError, match="prediction has labels 3 outside 0..2"):
        evaluator.process(np.array([[3, 1]]), np.array([[0, 1]]))
    with pytest.raises(UserInputError, match="non-integer"):
        evaluator.process(np.array([[0, 1]]), np.array([[0.5, 1.0]]))
