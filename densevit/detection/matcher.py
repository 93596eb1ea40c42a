"""Hungarian matching between predicted and ground-truth boxes, one cost block per image."""
from __future__ import annotations

from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_convert, generalized_box_iou


def focal_class_cost(prob: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Deformable DETR's classification cost from sigmoid probabilities of the target classes."""
    neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob).pow(gamma) * -(prob + 1e-8).log()
    return pos - neg


class HungarianMatcher(nn.Module):
    """Optimal one-to-one assignment of targets to queries, per image.

    The cost of giving target j to query i is
    ``cost_class * C_cls + cost_bbox * L1(b_i, b_j) + cost_giou * -GIoU(b_i, b_j)``, with
    ``C_cls = -p_i(label_j)`` for softmax outputs, or the focal cost for sigmoid outputs.

    Each image is scored against its own targets only: targets are padded to the largest
    count N in the batch and the [B, Q, N] costs come from three batched operations (the
    reference implementation scores every query against every target of the batch, B times
    the work). The costs reach the host in one copy; ``scipy.optimize.linear_sum_assignment``
    then solves each image's [Q, N_i] block.
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

    def cost_blocks(self, logits: Tensor, boxes: Tensor, labels: Tensor, target_boxes: Tensor) -> Tensor:
        """``logits`` [B,Q,C], ``boxes`` [B,Q,4], ``labels`` [B,N], ``target_boxes`` [B,N,4] -> costs [B,Q,N]."""
        index = labels[:, None, :].expand(-1, logits.shape[1], -1)
        if self.classification == "sigmoid":
            class_cost = focal_class_cost(logits.sigmoid().gather(2, index), self.focal_alpha, self.focal_gamma)
        else:
            class_cost = -logits.softmax(-1).gather(2, index)
        l1 = torch.cdist(boxes, target_boxes, p=1)
        giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy"))
        return self.cost_bbox * l1 + self.cost_class * class_cost - self.cost_giou * giou

    @torch.no_grad()
    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """``outputs``: ``pred_logits`` [B,Q,C], ``pred_boxes`` [B,Q,4]; ``targets``: per image ``labels`` [N_i], ``boxes`` [N_i,4].

        Returns per image ``(query_indices, target_indices)``, int64 tensors of length
        min(Q, N_i), sorted by query index.
        """
        sizes = [len(t["labels"]) for t in targets]
        empty = torch.zeros(0, dtype=torch.int64)
        if max(sizes, default=0) == 0:
            return [(empty, empty) for _ in targets]
        logits = outputs["pred_logits"].float()
        boxes = outputs["pred_boxes"].float()
        labels = pad_sequence([t["labels"] for t in targets], batch_first=True)
        # padding boxes are valid (centred, half size) so that GIoU stays finite; never read back
        target_boxes = pad_sequence([t["boxes"].float() for t in targets], batch_first=True, padding_value=0.5)
        costs = self.cost_blocks(logits, boxes, labels, target_boxes).cpu().numpy()
        indices = []
        for b, n in enumerate(sizes):
            rows, cols = linear_sum_assignment(costs[b, :, :n])
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
