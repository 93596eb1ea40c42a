"""Hungarian matching between predicted and ground-truth boxes, one cost block per image."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


def focal_class_cost(logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Deformable DETR's classification cost for sigmoid logits: [Q,K] x [N] -> [Q,N]."""
    prob = logits.sigmoid()[:, labels]
    neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob).pow(gamma) * -(prob + 1e-8).log()
    return pos - neg


class HungarianMatcher(nn.Module):
    """Optimal one-to-one assignment of targets to queries, per image.

    The cost of giving target j to query i is
    ``cost_class * C_cls + cost_bbox * L1(b_i, b_j) + cost_giou * -GIoU(b_i, b_j)``, with
    ``C_cls = -p_i(label_j)`` for softmax outputs, or the focal cost for sigmoid outputs.
    Each image's [Q, N_i] block is computed on the outputs' device; all blocks are copied to
    the host in one transfer, then ``scipy.optimize.linear_sum_assignment`` solves each.
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 classification: str = "softmax", focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> None:
        super().__init__()
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.classification = classification
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def cost_block(self, logits: Tensor, boxes: Tensor, labels: Tensor, target_boxes: Tensor) -> Tensor:
        """One image's cost matrix: ``logits`` [Q,C], ``boxes`` [Q,4], ``labels`` [N], ``target_boxes`` [N,4] -> [Q,N]."""
        if self.classification == "sigmoid":
            class_cost = focal_class_cost(logits, labels, self.focal_alpha, self.focal_gamma)
        else:
            class_cost = -logits.softmax(-1)[:, labels]
        l1 = torch.cdist(boxes, target_boxes, p=1)
        giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"),
                                   box_convert(target_boxes, "cxcywh", "xyxy"))
        return self.cost_bbox * l1 + self.cost_class * class_cost - self.cost_giou * giou

    @torch.no_grad()
    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """``outputs``: ``pred_logits`` [B,Q,C], ``pred_boxes`` [B,Q,4]; ``targets``: per image ``labels`` [N_i], ``boxes`` [N_i,4].

        Returns per image ``(query_indices, target_indices)``, int64 tensors of length
        min(Q, N_i), sorted by query index.
        """
        logits = outputs["pred_logits"].float()
        boxes = outputs["pred_boxes"].float()
        num_queries = logits.shape[1]
        blocks = [
            self.cost_block(logits[b], boxes[b], t["labels"], t["boxes"].float()).flatten()
            for b, t in enumerate(targets)
        ]
        host = torch.cat(blocks).cpu().numpy() if blocks else np.zeros(0, dtype=np.float32)
        indices = []
        start = 0
        for t in targets:
            n = len(t["labels"])
            cost = host[start: start + num_queries * n].reshape(num_queries, n)
            start += num_queries * n
            rows, cols = linear_sum_assignment(cost)
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
