"""SetCriterion against losses written out by hand, on inputs whose matching is known."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from densevit.detection.criterion import SetCriterion
from densevit.detection.matcher import HungarianMatcher


def _case():
    # 2 images, 3 queries, 2 classes (+ no-object). Image 0: one target that query 2 predicts
    # exactly; image 1: no targets.
    logits = torch.tensor([[[0.1, 0.2, 2.0], [0.3, 0.1, 1.5], [3.0, 0.0, 0.1]],
                           [[0.0, 0.5, 2.5], [1.0, 0.2, 0.3], [0.2, 0.2, 0.2]]])
    boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.2, 0.2], [0.5, 0.5, 0.4, 0.3]],
                          [[0.3, 0.3, 0.1, 0.1], [0.6, 0.6, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1]]])
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.3]])},
               {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    return {"pred_logits": logits, "pred_boxes": boxes}, targets


def test_softmax_terms_by_hand():
    outputs, targets = _case()
    criterion = SetCriterion(2, HungarianMatcher(), eos_coef=0.1, aux_loss=False)
    losses = criterion(outputs, targets)
    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-7)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    # weighted cross-entropy: the matched query has class 0 (weight 1), the other five no-object (0.1)
    logp = outputs["pred_logits"].log_softmax(-1)
    terms = [(-logp[0, 2, 0], 1.0)] + [(-logp[b, q, 2], 0.1) for b, q in [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]]
    expected = sum(v * w for v, w in terms) / sum(w for _, w in terms)
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    # queries predicting an object: image 0 query 2 (1 target) and image 1 query 1 (0 targets)
    assert losses["cardinality_error"].item() == pytest.approx(1.0)
    assert losses["class_error"].item() == pytest.approx(0.0)


def test_sigmoid_focal_terms_by_hand():
    outputs, targets = _case()
    outputs["pred_logits"] = outputs["pred_logits"][..., :2]
    criterion = SetCriterion(2, HungarianMatcher(cost_class=2, classification="sigmoid"), weight_class=2,
                             aux_loss=False, classification="sigmoid")
    losses = criterion(outputs, targets)
    onehot = torch.zeros(2, 3, 2)
    onehot[0, 2, 0] = 1
    expected = sigmoid_focal_loss(outputs["pred_logits"], onehot, 0.25, 2.0, reduction="sum") / 1
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["loss"].item() == pytest.approx(2 * expected.item(), rel=1e-6)


def test_box_terms_normalised_by_target_count_and_aux_terms_present():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 3)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.1, 0.9, 0.1, 0.1]]])
    shifted = boxes[0, :2].clone()
    shifted[:, 0] += 0.05  # each target is 0.05 away (L1) from one query, far from the others
    targets = [{"labels": torch.tensor([0, 1]), "boxes": shifted}]
    aux = [{"pred_logits": logits.clone(), "pred_boxes": boxes.clone()}]
    criterion = SetCriterion(2, HungarianMatcher(cost_class=0.0), aux_loss=True)
    losses = criterion({"pred_logits": logits, "pred_boxes": boxes, "aux_outputs": aux}, targets)
    assert losses["loss_bbox"].item() == pytest.approx(0.05, rel=1e-5)
    assert losses["loss_bbox_0"].item() == pytest.approx(losses["loss_bbox"].item())
    main = sum(w * losses[k] for k, w in [("loss_ce", 1), ("loss_bbox", 5), ("loss_giou", 2)])
    aux_sum = sum(w * losses[k] for k, w in [("loss_ce_0", 1), ("loss_bbox_0", 5), ("loss_giou_0", 2)])
    assert losses["loss"].item() == pytest.approx((main + aux_sum).item(), rel=1e-6)
    assert math.isfinite(losses["loss"].item())


def test_gradients_reach_logits_and_boxes():
    outputs, targets = _case()
    logits = outputs["pred_logits"].clone().requires_grad_()
    boxes = outputs["pred_boxes"].clone().requires_grad_()
    boxes_in = boxes * 0.9 + 0.05  # not exactly on target, so box losses have gradients
    SetCriterion(2, HungarianMatcher())({"pred_logits": logits, "pred_boxes": boxes_in}, targets)["loss"].backward()
    assert logits.grad.abs().sum() > 0 and boxes.grad[0, 2].abs().sum() > 0
