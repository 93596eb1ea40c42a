"""Contrastive denoising queries (DN-DETR, DINO; as RT-DETR builds them) for training.

Every ground-truth box enters the decoder again in ``G`` groups, each with a *positive* copy
(its box jittered by less than half its size, its label flipped with probability
``label_noise / 2``) that must be reconstructed, and a *negative* copy (jittered further) that
must be classified as nothing. The groups go before the matching queries, and an attention
mask keeps every group, and the matching queries, from seeing the others' answers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert


@dataclass
class DenoisingGroups:
    """What the decoder and the loss need to know about the denoising queries.

    Attributes:
        content: [B, D, C] query contents (embedded noisy labels), D = 2 x G x max targets.
        boxes_unact: [B, D, 4] noisy boxes in logit space.
        blocked: [D + Q, D + Q] bool: True where a query may not attend.
        positive_index: per image, the query index (within the D) of each positive copy, group
            after group: ``len = G x N_i``.
        num_groups: G.
        num_queries: D.
    """

    content: Tensor
    boxes_unact: Tensor
    blocked: Tensor
    positive_index: list[Tensor]
    num_groups: int
    num_queries: int


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """log(x / (1 - x)) for x clipped to [0, 1], both terms at least ``eps``."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def denoising_groups(targets: list[dict[str, Tensor]], num_classes: int, num_matching: int,
                     label_embed: nn.Embedding, num_denoising: int = 100, label_noise: float = 0.5,
                     box_noise: float = 1.0) -> DenoisingGroups:
    """The denoising queries of a batch (see the module docstring); ``targets`` hold ``labels``
    [N_i] and normalised cxcywh ``boxes`` [N_i, 4]; ``num_matching`` is the decoder's Q."""
    counts = [len(t["labels"]) for t in targets]
    device = label_embed.weight.device
    batch = len(targets)
    # A batch without any target still gets one dummy group, so that every process of a
    # distributed run uses the label embedding (DDP needs the same graph everywhere).
    most = max(max(counts), 1)
    groups = max(num_denoising // most, 1) if max(counts) else 1
    labels = torch.full((batch, most), num_classes, dtype=torch.int64, device=device)
    boxes = torch.zeros(batch, most, 4, device=device)
    boxes[..., :2], boxes[..., 2:] = 0.5, 0.1  # a valid box for padding: noise and logits stay finite
    real = torch.zeros(batch, most, dtype=torch.bool, device=device)
    for i, (target, n) in enumerate(zip(targets, counts)):
        labels[i, :n], boxes[i, :n], real[i, :n] = target["labels"], target["boxes"].to(boxes.dtype), True
    labels, boxes, real = labels.repeat(1, 2 * groups), boxes.repeat(1, 2 * groups, 1), real.repeat(1, 2 * groups)
    negative = torch.zeros(batch, 2 * most, 1, device=device)
    negative[:, most:] = 1
    negative = negative.repeat(1, groups, 1)
    positive = (1 - negative[..., 0]).bool() & real
    positive_index = list(torch.nonzero(positive)[:, 1].split([n * groups for n in counts]))
    total = 2 * most * groups

    if label_noise > 0:
        flip = torch.rand(labels.shape, device=device) < label_noise * 0.5
        new = torch.randint_like(labels, 0, num_classes)
        labels = torch.where(flip & real, new, labels)
    if box_noise > 0:
        corners = box_convert(boxes, "cxcywh", "xyxy")
        half = (boxes[..., 2:] * 0.5).repeat(1, 1, 2) * box_noise
        sign = torch.randint_like(boxes, 0, 2) * 2.0 - 1.0
        part = torch.rand_like(boxes)
        part = (part + 1.0) * negative + part * (1 - negative)  # negatives move by 1-2 half-sizes
        corners = (corners + sign * part * half).clamp(0.0, 1.0)
        boxes = box_convert(corners, "xyxy", "cxcywh")

    size = total + num_matching
    blocked = torch.zeros(size, size, dtype=torch.bool, device=device)
    blocked[total:, :total] = True  # matching queries never see the answers
    span = 2 * most
    for g in range(groups):  # each group sees itself only
        blocked[g * span:(g + 1) * span, (g + 1) * span:total] = True
        blocked[g * span:(g + 1) * span, :g * span] = True
    return DenoisingGroups(label_embed(labels), inverse_sigmoid(boxes), blocked, positive_index, groups, total)
