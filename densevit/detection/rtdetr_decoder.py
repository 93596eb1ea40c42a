"""RT-DETR's decoder (RT-DETRv2): IoU-aware query selection, deformable cross-attention, iterative refinement.

1. The encoder's maps are projected and flattened into ``memory`` [B, sum(h*w), C].
2. *Query selection*: every token scores the classes and proposes a box around its anchor (a
   box centred on the token, 0.05 x 2^level of the image wide); the ``num_queries`` tokens with
   the best class score become the decoder's queries (their features and boxes, detached).
3. Each decoder layer: self-attention among the queries (with the denoising groups' mask),
   deformable cross-attention around each query's current box, FFN; then its box head refines
   the box (in logit space) and its score head classifies. Boxes are detached between layers,
   and in training each layer's box is also computed from the previous layer's undetached box
   ("look forward twice", DINO).

``forward(maps, targets=None)`` returns ``pred_logits`` [B,Q,K], ``pred_boxes`` [B,Q,4]
(normalised cxcywh); in training also ``aux_outputs`` (the earlier layers), ``enc_outputs``
(the selected proposals) and, with targets, ``dn_outputs`` (every layer's denoising
predictions) and ``dn_groups``.
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from densevit.detection.deformable import MSDeformableAttention
from densevit.detection.denoising import (
    DenoisingGroups,
    denoising_groups,
    inverse_sigmoid,
)
from densevit.detection.detr import MLP
from densevit.detection.transformer import Attention, FeedForward

PRIOR_PROBABILITY = 0.01  # initial class probability, so that focal-type losses start balanced


class DeformableDecoderLayer(nn.Module):
    """Post-norm layer: self-attention, deformable cross-attention to the memory, FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, num_points: Sequence[int],
                 num_levels: int) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads, dropout)
        self.cross_attn = MSDeformableAttention(dim, num_heads, num_points, num_levels)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.ffn.linear1.weight)
        nn.init.xavier_uniform_(self.ffn.linear2.weight)

    def forward(self, target: Tensor, boxes: Tensor, memory: Tensor, shapes: Sequence[tuple[int, int]],
                blocked: Tensor | None, query_pos: Tensor) -> Tensor:
        """``target``/``query_pos`` [B,Q,C], ``boxes`` [B,Q,1,4] in [0,1], ``memory`` [B,N,C] -> [B,Q,C]."""
        qk = target + query_pos
        target = self.norm1(target + self.dropout1(self.self_attn(qk, qk, target, blocked=blocked)))
        target = self.norm2(target + self.dropout2(self.cross_attn(target + query_pos, boxes, memory, shapes)))
        return self.norm3(target + self.dropout3(self.ffn(target)))


class RTDETRDecoder(nn.Module):
    """See the module docstring.

    Args:
        num_classes: K (sigmoid scores, no background class).
        in_channels: channels of the encoder's maps (RT-DETR: ``hidden_dim`` each).
        num_queries: selected queries (300).
        num_layers: decoder layers (R18: 3, R34: 4, R50/R101: 6).
        num_points: deformable sampling points per level (one number or one per level).
        num_denoising, label_noise, box_noise: the denoising groups (0 switches them off).
    """

    def __init__(self, num_classes: int, in_channels: Sequence[int] = (256, 256, 256), hidden_dim: int = 256,
                 num_queries: int = 300, num_layers: int = 6, num_heads: int = 8, ffn_dim: int = 1024,
                 dropout: float = 0.0, num_points: int | Sequence[int] = 4, num_denoising: int = 100,
                 label_noise: float = 0.5, box_noise: float = 1.0, anchor_eps: float = 0.01) -> None:
        super().__init__()
        levels = len(in_channels)
        points = [num_points] * levels if isinstance(num_points, int) else list(num_points)
        self.num_classes, self.num_queries, self.anchor_eps = num_classes, num_queries, anchor_eps
        self.num_denoising, self.label_noise, self.box_noise = num_denoising, label_noise, box_noise
        self.input_proj = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(c, hidden_dim, 1, bias=False), norm=nn.BatchNorm2d(hidden_dim)))
            for c in in_channels
        )
        layer = DeformableDecoderLayer(hidden_dim, num_heads, ffn_dim, dropout, points, levels)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden_dim, padding_idx=num_classes)
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, 2)
        self.enc_output = nn.Sequential(OrderedDict(proj=nn.Linear(hidden_dim, hidden_dim), norm=nn.LayerNorm(hidden_dim)))
        self.enc_score_head = nn.Linear(hidden_dim, num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3)
        self.dec_score_head = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(num_layers))
        self.dec_bbox_head = nn.ModuleList(MLP(hidden_dim, hidden_dim, 4, 3) for _ in range(num_layers))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        bias = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        for score, box in zip([self.enc_score_head, *self.dec_score_head], [self.enc_bbox_head, *self.dec_bbox_head]):
            nn.init.constant_(score.bias, bias)
            nn.init.zeros_(box.layers[-1].weight)  # boxes start at their anchors / references
            nn.init.zeros_(box.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output.proj.weight)
        for layer in self.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj.conv.weight)
        nn.init.normal_(self.denoising_class_embed.weight[:-1])

    # ------------------------------------------------------------------ inputs

    def flatten(self, maps: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Projected maps as tokens [B, sum(h*w), C] (level by level, row by row) and their (h, w)."""
        projected = [proj(x) for proj, x in zip(self.input_proj, maps)]
        shapes = [(x.shape[2], x.shape[3]) for x in projected]
        return torch.cat([x.flatten(2).transpose(1, 2) for x in projected], dim=1), shapes

    def anchors(self, shapes: Sequence[tuple[int, int]], dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """Anchors [1, N, 4] in logit space (``inf`` where invalid) and their validity [1, N, 1].

        A token's anchor is centred on it, ``0.05 x 2^level`` wide and high; anchors that reach
        within ``anchor_eps`` of the border are invalid (their tokens are zeroed for selection).
        """
        boxes = []
        for level, (h, w) in enumerate(shapes):
            ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
            centres = (torch.stack([xs, ys], -1).to(torch.float32) + 0.5) / torch.tensor([w, h], device=device)
            sizes = torch.full_like(centres, 0.05 * 2.0**level)
            boxes.append(torch.cat([centres, sizes], -1).reshape(1, h * w, 4))
        anchors = torch.cat(boxes, dim=1)
        valid = ((anchors > self.anchor_eps) & (anchors < 1 - self.anchor_eps)).all(-1, keepdim=True)
        logits = torch.log(anchors / (1 - anchors))
        return torch.where(valid, logits, torch.inf).to(dtype), valid

    def select(self, memory: Tensor, shapes: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor, Tensor]:
        """The ``num_queries`` best tokens: their features [B,Q,C], boxes in logit space [B,Q,4]
        and class logits [B,Q,K]."""
        anchors, valid = self.anchors(shapes, memory.dtype, memory.device)
        features = self.enc_output(valid.to(memory.dtype) * memory)
        logits = self.enc_score_head(features)
        boxes = self.enc_bbox_head(features) + anchors
        top = logits.max(-1).values.topk(self.num_queries, dim=1).indices  # [B,Q]

        def gather(x: Tensor) -> Tensor:
            return x.gather(1, top[..., None].expand(-1, -1, x.shape[-1]))

        return gather(features), gather(boxes), gather(logits)

    # ------------------------------------------------------------------ forward

    def forward(self, maps: Sequence[Tensor], targets: list[dict[str, Tensor]] | None = None) -> dict[str, Any]:
        memory, shapes = self.flatten(maps)
        content, enc_boxes, enc_logits = self.select(memory, shapes)
        content, boxes_unact = content.detach(), enc_boxes.detach()
        groups: DenoisingGroups | None = None
        if self.training and targets is not None and self.num_denoising > 0:
            groups = denoising_groups(targets, self.num_classes, self.num_queries, self.denoising_class_embed,
                                      self.num_denoising, self.label_noise, self.box_noise)
            content = torch.cat([groups.content.to(content.dtype), content], dim=1)
            boxes_unact = torch.cat([groups.boxes_unact.to(content.dtype), boxes_unact], dim=1)
        logits, boxes = self.decode(content, boxes_unact, memory, shapes, groups.blocked if groups else None)
        if groups is not None:
            dn_logits, logits = logits.split([groups.num_queries, self.num_queries], dim=2)
            dn_boxes, boxes = boxes.split([groups.num_queries, self.num_queries], dim=2)
        out: dict[str, Any] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.training:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
            out["enc_outputs"] = {"pred_logits": enc_logits, "pred_boxes": enc_boxes.sigmoid()}
            if groups is not None:
                out["dn_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(dn_logits, dn_boxes)]
                out["dn_groups"] = groups
        return out

    def decode(self, target: Tensor, boxes_unact: Tensor, memory: Tensor, shapes: Sequence[tuple[int, int]],
               blocked: Tensor | None) -> tuple[Tensor, Tensor]:
        """Run the layers; returns class logits [L,B,Q,K] and boxes [L,B,Q,4] (only the last layer's
        outside training)."""
        reference = boxes_unact.sigmoid()  # detached: gradients do not flow between layers' boxes
        previous = reference
        all_logits, all_boxes = [], []
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            target = layer(target, reference[:, :, None], memory, shapes, blocked, self.query_pos_head(reference))
            delta = self.dec_bbox_head[i](target)
            refined = (delta + inverse_sigmoid(reference)).sigmoid()
            if self.training or last:
                all_logits.append(self.dec_score_head[i](target))
                # look forward twice: layer i's box from layer i-1's box with its gradient
                all_boxes.append(refined if i == 0 or not self.training else (delta + inverse_sigmoid(previous)).sigmoid())
            previous, reference = refined, refined.detach()
        return torch.stack(all_logits), torch.stack(all_boxes)
