"""DETR outputs -> per-image scored boxes in original-image pixels."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert


class PostProcess(nn.Module):
    """Turn ``pred_logits``/``pred_boxes`` into the ``top_k`` best detections per image.

    Softmax outputs: each query gives its best real class (no-object dropped), as DETR
    does. Sigmoid outputs: the ``top_k`` best (query, class) pairs, as Deformable DETR does.
    """

    def __init__(self, classification: str = "softmax", top_k: int = 100) -> None:
        super().__init__()
        self.classification = classification
        self.top_k = top_k

    @torch.no_grad()
    def forward(self, outputs: dict[str, Any], orig_sizes: Tensor) -> list[dict[str, Tensor]]:
        """``orig_sizes`` [B,2] (height, width) -> per image ``scores`` [k], ``labels`` [k] (contiguous
        indices), ``boxes`` [k,4] pixel (x1, y1, x2, y2), sorted by decreasing score."""
        logits = outputs["pred_logits"].float()
        boxes = box_convert(outputs["pred_boxes"].float(), "cxcywh", "xyxy")
        num_queries, num_logits = logits.shape[1:]
        if self.classification == "sigmoid":
            flat = logits.sigmoid().flatten(1)
            scores, index = flat.topk(min(self.top_k, flat.shape[1]), dim=1)
            labels = index % num_logits
            query = torch.div(index, num_logits, rounding_mode="floor")
        else:
            scores, labels = logits.softmax(-1)[..., :-1].max(-1)
            scores, query = scores.topk(min(self.top_k, num_queries), dim=1)
            labels = labels.gather(1, query)
        boxes = boxes.gather(1, query[..., None].expand(-1, -1, 4))
        height, width = orig_sizes.to(boxes).unbind(1)
        scale = torch.stack([width, height, width, height], dim=1)[:, None, :]
        boxes = boxes * scale
        return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(scores, labels, boxes)]
