"""From captured attention matrices to maps over the image grid (see :mod:`.attention_capture`).

All functions take one image's matrices (index the batch first) and return float64 tensors:
the sums that should be 1 stay 1 to rounding, which the tests check.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from densevit.inference.attention_capture import StripeCall, WindowCall


def last_layer_map(attention: Tensor, prefix: int, grid: tuple[int, int]) -> Tensor:
    """[heads, N, N] self-attention of one layer -> [heads, gh, gw] per-head maps.

    With a class token (``prefix`` > 0) each head's map is the class token's row over the patch
    tokens (it sums to 1 minus what the class token gives to the prefix tokens). Without one
    (TransUNet's encoder) it is the attention each patch *receives*, averaged over all queries
    (it sums to 1).
    """
    attention = attention.double()
    rows = attention[:, 0, prefix:] if prefix else attention.mean(1)
    return rows.reshape(attention.shape[0], *grid)


def attention_rollout(layers: Sequence[Tensor]) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020) of [heads, N, N] matrices, first layer first -> [N, N].

    Each layer's heads are averaged, the identity added (the residual path) and the rows
    renormalised to 1; the rollout is the product ``A_L ... A_2 A_1``, so its rows sum to 1.
    """
    size = layers[0].shape[-1]
    rollout = torch.eye(size, dtype=torch.float64, device=layers[0].device)
    for attention in layers:
        mixed = attention.double().mean(0) + torch.eye(size, dtype=torch.float64, device=attention.device)
        rollout = (mixed / mixed.sum(-1, keepdim=True)) @ rollout
    return rollout


def rollout_map(rollout: Tensor, prefix: int, grid: tuple[int, int]) -> Tensor:
    """[N, N] rollout -> [gh, gw]: the class token's row over the patches, or without a class
    token the mean over all rows (how much each patch flows into the output on average)."""
    rows = rollout[0, prefix:] if prefix else rollout.mean(0)
    return rows.reshape(*grid)


def window_map(call: WindowCall, row: int, col: int) -> Tensor:
    """The attention of the token at (``row``, ``col``) of a Swin block's grid -> [heads, H, W].

    The block rolls its input by ``-shift`` before cutting windows (padding the bottom and right
    to whole windows), so the token sits at ``((row - shift) mod H, ...)`` in that grid; its
    window's tokens are mapped back through the roll. Cells outside the window are 0, so each
    head's map sums to 1 less the weight given to padding tokens (0 when there are none).
    Only the first image of the batch is read.
    """
    (height, width), (win_h, win_w), (shift_h, shift_w) = call.size, call.window, call.shift
    r, c = (row - shift_h) % height, (col - shift_w) % width  # place in the rolled grid
    per_row = math.ceil(width / win_w)
    window = (r // win_h) * per_row + c // win_w
    weights = call.weights[window, :, (r % win_h) * win_w + c % win_w].double()  # [heads, area]
    heads = weights.shape[0]
    top, left = (r // win_h) * win_h, (c // win_w) * win_w
    rows = torch.arange(top, top + win_h)
    cols = torch.arange(left, left + win_w)
    weights = weights.reshape(heads, win_h, win_w)[:, rows < height][:, :, cols < width].cpu()
    out = torch.zeros(heads, height, width, dtype=torch.float64)
    rows, cols = (rows[rows < height] + shift_h) % height, (cols[cols < width] + shift_w) % width
    out[:, rows[:, None], cols[None, :]] = weights
    return out


def stripe_map(call: StripeCall, row: int, col: int) -> Tensor:
    """The attention of the token at (``row``, ``col``) of a CSWin block's grid in one branch -> [heads, H, W].

    The branch pads the grid with zeros to whole windows (``padding`` above and to the left, the
    rest below and to the right) and cuts windows row by row, so the token sits at ``(row + top,
    col + left)`` of the padded grid; its window is placed there and the padding cut off again.
    Cells outside the token's stripe (or nothing, for the full map) are 0. The padding tokens
    are zero vectors, not masked, so they take some weight: each head's map sums to 1 less that
    weight (exactly 1 when nothing is padded). Only the first image of the batch is read.
    """
    (height, width), (win_h, win_w), (top, left) = call.size, call.window, call.padding
    r, c = row + top, col + left  # place in the padded grid
    padded_h, padded_w = math.ceil(height / win_h) * win_h, math.ceil(width / win_w) * win_w
    window = (r // win_h) * (padded_w // win_w) + c // win_w
    weights = call.weights[window, :, (r % win_h) * win_w + c % win_w].double().cpu()  # [heads, area]
    heads = weights.shape[0]
    padded = torch.zeros(heads, padded_h, padded_w, dtype=torch.float64)
    first_row, first_col = (r // win_h) * win_h, (c // win_w) * win_w
    padded[:, first_row : first_row + win_h, first_col : first_col + win_w] = weights.reshape(heads, win_h, win_w)
    return padded[:, top : top + height, left : left + width].clone()


def top_queries(logits: Tensor, classification: str, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``count`` best queries of one image's ``logits`` [Q, K(+1)]: (query indices [k],
    scores [k], labels [k]), best first; a query scores by its best real class."""
    if classification == "sigmoid":
        scores, labels = logits.float().sigmoid().max(-1)
    else:
        scores, labels = logits.float().softmax(-1)[..., :-1].max(-1)
    scores, queries = scores.topk(min(count, scores.numel()))
    return queries, scores, labels[queries]
