"""RT-DETR's loss: varifocal classification, L1 and GIoU boxes, on every set of predictions.

The sets: the last decoder layer and every earlier one (each matched to the targets by the
Hungarian matcher on its own), the encoder's selected proposals (matched too), and every
layer's denoising queries, whose targets are known by construction (positive copy k of a group
reconstructs target k; negatives are background). Box terms are divided by the number of
target boxes (averaged over processes), times the number of groups for denoising.

*Varifocal loss* (VFL; Zhang et al., VarifocalNet, 2021): binary cross-entropy of each class
logit against a soft target, the IoU of the matched box for its class and 0 elsewhere, with the
negatives down-weighted by ``alpha * p^gamma``; so a query's score learns to predict how well
its box fits (IoU-aware).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou, generalized_box_iou

from densevit.detection.criterion import MatchedTargets
from densevit.detection.denoising import DenoisingGroups
from densevit.detection.matcher import HungarianMatcher
from densevit.distributed import all_reduce_sum, world_size


class RTDETRCriterion(nn.Module):
    """``criterion(outputs, targets) -> {"loss", "loss_vfl", "loss_bbox", "loss_giou", ..._aux_i, ..._enc, ..._dn_i}``.

    Args:
        num_classes: K.
        matcher: a sigmoid (focal-cost) :class:`HungarianMatcher` (RT-DETR: costs 2 / 5 / 2).
        weight_vfl, weight_bbox, weight_giou: the terms' weights (1 / 5 / 2).
        alpha, gamma: VFL's negative weighting (0.75, 2).
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_vfl: float = 1.0, weight_bbox: float = 5.0,
                 weight_giou: float = 2.0, alpha: float = 0.75, gamma: float = 2.0) -> None:
        super().__init__()
        self.num_classes, self.matcher = num_classes, matcher
        self.weights = {"loss_vfl": weight_vfl, "loss_bbox": weight_bbox, "loss_giou": weight_giou}
        self.alpha, self.gamma = alpha, gamma

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``outputs`` as ``RTDETRDecoder`` gives them; ``targets`` per image ``labels`` [N_i], ``boxes`` [N_i,4] cxcywh."""
        device = outputs["pred_logits"].device
        count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        num_boxes = (all_reduce_sum(count) / world_size()).clamp(min=1)
        sets: list[tuple[str, dict[str, Tensor], Any, Tensor]] = [("", outputs, None, num_boxes)]
        sets += [(f"_aux_{i}", aux, None, num_boxes) for i, aux in enumerate(outputs.get("aux_outputs", []))]
        if "enc_outputs" in outputs:
            sets.append(("_enc", outputs["enc_outputs"], None, num_boxes))
        groups: DenoisingGroups | None = outputs.get("dn_groups")
        if groups is not None:
            indices = denoising_indices(groups, targets)
            sets += [(f"_dn_{i}", dn, indices, num_boxes * groups.num_groups) for i, dn in enumerate(outputs["dn_outputs"])]
        losses: dict[str, Tensor] = {}
        total = torch.zeros((), device=device)
        for suffix, predictions, indices, normaliser in sets:
            matched = MatchedTargets(indices if indices is not None else self.matcher(predictions, targets), targets, device)
            for name, value in self.terms(predictions, matched, normaliser).items():
                losses[name + suffix] = value
                total = total + self.weights[name] * value
        losses["loss"] = total
        return losses

    def terms(self, predictions: dict[str, Tensor], matched: MatchedTargets, num_boxes: Tensor) -> dict[str, Tensor]:
        """VFL, L1 and GIoU of one set of predictions against its matched targets."""
        logits, boxes = predictions["pred_logits"], predictions["pred_boxes"]
        src = boxes[matched.batch_idx, matched.query_idx]
        target_boxes = matched.boxes.to(src.dtype)
        src_xyxy, target_xyxy = box_convert(src, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
        iou = torch.diag(box_iou(src_xyxy, target_xyxy)).detach()
        classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        classes[matched.batch_idx, matched.query_idx] = matched.labels
        onehot = F.one_hot(classes, self.num_classes + 1)[..., :-1].to(logits.dtype)
        quality = torch.zeros(logits.shape[:2], dtype=logits.dtype, device=logits.device)
        quality[matched.batch_idx, matched.query_idx] = iou.to(logits.dtype)
        soft_target = quality[..., None] * onehot
        weight = self.alpha * logits.sigmoid().detach().pow(self.gamma) * (1 - onehot) + soft_target
        vfl = F.binary_cross_entropy_with_logits(logits, soft_target, weight=weight, reduction="none")
        giou = torch.diag(generalized_box_iou(src_xyxy, target_xyxy))
        return {
            "loss_vfl": vfl.mean(1).sum() * logits.shape[1] / num_boxes,
            "loss_bbox": F.l1_loss(src, target_boxes, reduction="sum") / num_boxes,
            "loss_giou": (1 - giou).sum() / num_boxes,
        }


def denoising_indices(groups: DenoisingGroups, targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    """Per image, (the positive denoising queries, the targets they reconstruct): group by group."""
    indices = []
    for target, queries in zip(targets, groups.positive_index):
        count = len(target["labels"])
        order = torch.arange(count, dtype=torch.int64, device=queries.device).repeat(groups.num_groups)
        indices.append((queries, order))
    return indices
