"""DETR's encoder-decoder transformer (post-norm), attention through ``scaled_dot_product_attention``.

Sequences are batch-first: ``[B, L, D]``. The parameter layout of attention (one fused
``in_proj`` for query, key and value, then ``out_proj``) is the one of
``torch.nn.MultiheadAttention``, so published DETR weights map onto it by renaming only.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head attention with a key padding mask.

    ``in_proj`` holds the query, key and value projections stacked as ``[3*D, D]``.

    With ``keep_weights`` set (off by default), each call also stores its attention weights in
    ``weights`` [B, heads, Lq, Lk] (softmax rows over the keys, zero at masked keys): the
    matrix that SDPA forms internally, from the same q and k; the output still comes from SDPA.
    """

    keep_weights: bool = False
    weights: Tensor | None = None

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, blocked: Tensor | None = None) -> Tensor:
        """``query`` [B,Lq,D], ``key``/``value`` [B,Lk,D] -> [B,Lq,D].

        ``key_padding_mask`` [B,Lk] and ``blocked`` [Lq,Lk] are True where a query may not look
        (padding; other denoising groups), as in ``torch.nn.MultiheadAttention``.
        """
        d = self.dim
        weight, bias = self.in_proj.weight, self.in_proj.bias
        if query is key:  # self-attention: one matmul gives both q and k
            q, k = F.linear(query, weight[: 2 * d], bias[: 2 * d]).chunk(2, dim=-1)
        else:
            q = F.linear(query, weight[:d], bias[:d])
            k = F.linear(key, weight[d: 2 * d], bias[d: 2 * d])
        v = F.linear(value, weight[2 * d:], bias[2 * d:])
        q, k, v = (self._split_heads(t) for t in (q, k, v))
        attn_mask = None  # SDPA's boolean mask marks what may be attended
        if key_padding_mask is not None:
            attn_mask = ~key_padding_mask[:, None, None, :]
        if blocked is not None:
            attn_mask = ~blocked if attn_mask is None else attn_mask & ~blocked
        if self.keep_weights:
            self.weights = self._softmax_weights(q, k, attn_mask)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        batch, length = out.shape[0], out.shape[2]
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, d))

    @staticmethod
    def _softmax_weights(q: Tensor, k: Tensor, attn_mask: Tensor | None) -> Tensor:
        """softmax(q k^T / sqrt(d)) [B, heads, Lq, Lk], masked as SDPA masks (detached: for inspection)."""
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        return scores.softmax(-1).detach()

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, -1).transpose(1, 2)


class FeedForward(nn.Module):
    """Linear -> activation (ReLU, or GELU) -> dropout -> Linear (``linear1``/``linear2`` as in DETR)."""

    def __init__(self, dim: int, hidden: int, dropout: float, activation: str = "relu") -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.activation = {"relu": F.relu, "gelu": F.gelu}[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Post-norm encoder layer: self-attention (position added to queries and keys), then FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, activation: str = "relu") -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout, activation)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``src``/``pos`` [B,HW,D], ``padding_mask`` [B,HW] -> [B,HW,D]."""
        qk = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(qk, qk, src, padding_mask)))
        return self.norm2(src + self.dropout2(self.ffn(src)))


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: query self-attention, cross-attention to the memory, FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads, dropout)
        self.cross_attn = Attention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor,
                memory_mask: Tensor | None) -> Tensor:
        """``tgt``/``query_pos`` [B,Q,D], ``memory``/``pos`` [B,HW,D], ``memory_mask`` [B,HW] -> [B,Q,D]."""
        qk = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(qk, qk, tgt)))
        attended = self.cross_attn(tgt + query_pos, memory + pos, memory, memory_mask)
        tgt = self.norm2(tgt + self.dropout2(attended))
        return self.norm3(tgt + self.dropout3(self.ffn(tgt)))


class Transformer(nn.Module):
    """Encoder over the flattened feature map, decoder over learned object queries.

    Returns the decoder's output after every layer (each through the final ``decoder_norm``)
    so that every layer can be supervised.
    """

    def __init__(self, dim: int = 256, num_heads: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, ffn_dim: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        encoder_layer = EncoderLayer(dim, num_heads, ffn_dim, dropout)
        decoder_layer = DecoderLayer(dim, num_heads, ffn_dim, dropout)
        self.encoder_layers = nn.ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_encoder_layers))
        self.decoder_layers = nn.ModuleList(copy.deepcopy(decoder_layer) for _ in range(num_decoder_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.dim = dim
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # DETR's initialisation: Xavier-uniform on every matrix of the transformer
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.modules():
            if isinstance(module, Attention):
                nn.init.zeros_(module.in_proj.bias)
                nn.init.zeros_(module.out_proj.bias)

    def forward(self, src: Tensor, mask: Tensor, query_embed: Tensor, pos: Tensor) -> Tensor:
        """``src`` [B,D,H,W], ``mask`` [B,H,W] (True at padding), ``query_embed`` [Q,D], ``pos`` [B,D,H,W]
        -> decoder states [L_dec, B, Q, D] (DETR: the decoder starts from zeros)."""
        src, pos, mask = flatten_map(src), flatten_map(pos), mask.flatten(1)
        memory = self.encode(src, pos, mask)
        query_pos = query_embed.unsqueeze(0).expand(src.shape[0], -1, -1)
        return self.decode(torch.zeros_like(query_pos), memory, pos, query_pos, mask)

    def encode(self, src: Tensor, pos: Tensor, mask: Tensor) -> Tensor:
        """``src``/``pos`` [B,HW,D], ``mask`` [B,HW] -> memory [B,HW,D]."""
        memory = src
        for layer in self.encoder_layers:
            memory = layer(memory, pos, mask)
        return memory

    def decode(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor, mask: Tensor) -> Tensor:
        """``tgt``/``query_pos`` [B,Q,D], ``memory``/``pos`` [B,HW,D], ``mask`` [B,HW] -> [L_dec,B,Q,D]."""
        states = []
        for layer in self.decoder_layers:
            tgt = layer(tgt, memory, pos, query_pos, mask)
            states.append(self.decoder_norm(tgt))
        return torch.stack(states)


def flatten_map(x: Tensor) -> Tensor:
    """[B,D,H,W] -> [B,HW,D], row by row."""
    return x.flatten(2).transpose(1, 2)
