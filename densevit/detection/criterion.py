"""DETR's set loss: match predictions to targets, then classification, L1 and GIoU terms."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from densevit.detection.matcher import HungarianMatcher
from densevit.distributed import all_reduce_sum, world_size


class SetCriterion(nn.Module):
    """Loss of DETR outputs against per-image targets.

    Terms (each also for every auxiliary decoder output, suffixed ``_0``, ``_1``, ...):
    ``loss_ce`` (cross-entropy, the no-object class weighted ``eos_coef``; or sigmoid focal
    loss), ``loss_bbox`` (L1 on normalised cxcywh), ``loss_giou`` (1 - GIoU). Logged, not
    optimised: ``class_error`` (% of matched queries with the wrong class) and
    ``cardinality_error`` (|predicted objects - targets|, per image). ``"loss"`` is the
    weighted sum. Box terms are divided by the number of target boxes, averaged over
    processes when training is distributed.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_class: float = 1.0,
                 weight_bbox: float = 5.0, weight_giou: float = 2.0, eos_coef: float = 0.1,
                 aux_loss: bool = True, classification: str = "softmax",
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": weight_class, "loss_bbox": weight_bbox, "loss_giou": weight_giou}
        self.aux_loss = aux_loss
        self.classification = classification
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``outputs`` as DETR returns them; ``targets`` per image ``labels`` [N_i], ``boxes`` [N_i,4] cxcywh."""
        num_boxes = self._num_boxes(targets, outputs["pred_boxes"].device)
        matched = MatchedTargets(self.matcher(outputs, targets), targets, outputs["pred_logits"].device)
        losses = self._terms(outputs, matched, num_boxes)
        losses.update(self._logged(outputs, targets, matched))
        total = sum(self.weights[name] * losses[name] for name in self.weights)
        if self.aux_loss:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                aux_matched = MatchedTargets(self.matcher(aux, targets), targets, aux["pred_logits"].device)
                for name, value in self._terms(aux, aux_matched, num_boxes).items():
                    losses[f"{name}_{i}"] = value
                    total = total + self.weights[name] * value
        if "enc_outputs" in outputs:  # two-stage proposals: one prediction per encoder token
            enc = outputs["enc_outputs"]
            enc_matched = MatchedTargets(self.matcher(enc, targets), targets, enc["pred_logits"].device)
            for name, value in self._terms(enc, enc_matched, num_boxes).items():
                losses[f"{name}_enc"] = value
                total = total + self.weights[name] * value
        losses["loss"] = total
        return losses

    def _num_boxes(self, targets: list[dict[str, Tensor]], device: torch.device) -> Tensor:
        count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        return (all_reduce_sum(count) / world_size()).clamp(min=1)

    def _terms(self, outputs: dict[str, Any], matched: "MatchedTargets", num_boxes: Tensor) -> dict[str, Tensor]:
        logits = outputs["pred_logits"]
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        target_classes[matched.batch_idx, matched.query_idx] = matched.labels
        if self.classification == "sigmoid":
            # one-hot over K+1 then drop the no-object column: unmatched queries are all-negative
            onehot = F.one_hot(target_classes, self.num_classes + 1)[..., :-1].to(logits.dtype)
            focal = sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma, reduction="sum")
            loss_ce = focal / num_boxes
        else:
            loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight.to(logits.dtype))
        src_boxes = outputs["pred_boxes"][matched.batch_idx, matched.query_idx]
        target_boxes = matched.boxes.to(src_boxes.dtype)
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="sum") / num_boxes
        giou = torch.diag(generalized_box_iou(box_convert(src_boxes, "cxcywh", "xyxy"),
                                              box_convert(target_boxes, "cxcywh", "xyxy")))
        loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    @torch.no_grad()
    def _logged(self, outputs: dict[str, Any], targets: list[dict[str, Tensor]],
                matched: "MatchedTargets") -> dict[str, Tensor]:
        logits = outputs["pred_logits"]
        device = logits.device
        if self.classification == "sigmoid":
            is_object = logits.sigmoid().max(-1).values > 0.5
            predicted = logits.argmax(-1)
        else:
            predicted = logits.argmax(-1)
            is_object = predicted != self.num_classes
        num_targets = torch.tensor([len(t["labels"]) for t in targets], device=device, dtype=torch.float32)
        cardinality_error = (is_object.sum(1).float() - num_targets).abs().mean()
        if len(matched.labels):
            accuracy = (predicted[matched.batch_idx, matched.query_idx] == matched.labels).float().mean() * 100
        else:
            accuracy = torch.tensor(100.0, device=device)
        return {"class_error": 100 - accuracy, "cardinality_error": cardinality_error}


class MatchedTargets:
    """The matcher's per-image indices gathered into flat tensors on ``device``.

    ``batch_idx``/``query_idx`` [M] locate the matched queries; ``labels`` [M] and
    ``boxes`` [M,4] are their targets.
    """

    def __init__(self, indices: list[tuple[Tensor, Tensor]], targets: list[dict[str, Tensor]],
                 device: torch.device) -> None:
        self.batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)]).to(device)
        self.query_idx = torch.cat([q for q, _ in indices]).to(device)
        self.labels = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)]).to(device)
        self.boxes = torch.cat([t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, indices)]).to(device)
