"""DETR: a backbone, a transformer and set prediction heads (Carion et al. 2020).

The model takes a padded batch (:class:`PaddedImages`) or a plain image tensor and returns
``pred_logits`` [B,Q,K+1] (the last class is "no object"; [B,Q,K] with sigmoid
classification), ``pred_boxes`` [B,Q,4] normalised (cx, cy, w, h) in [0, 1], and
``aux_outputs``, the same two for every decoder layer but the last.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densevit.data.collate import PaddedImages
from densevit.detection.position import PositionEmbeddingSine, point_encoding
from densevit.detection.transformer import Transformer, flatten_map

Classification = Literal["softmax", "sigmoid"]
QueryType = Literal["learned", "anchor", "two_stage"]


def _zero_last_layer(mlp: "MLP") -> None:
    nn.init.zeros_(mlp.layers[-1].weight)
    nn.init.zeros_(mlp.layers[-1].bias)


def grid_points(count: int) -> Tensor:
    """``count`` points [count,2] (x, y) spread over the unit square: a rows x cols grid of cell
    centres (cols = ceil(sqrt(count))), read row by row and cut at ``count``."""
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    ys, xs = torch.meshgrid((torch.arange(rows) + 0.5) / rows, (torch.arange(cols) + 0.5) / cols, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)[:count]


class MLP(nn.Module):
    """Linear layers with ReLU between them (``layers.N`` as in DETR's box head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class DETR(nn.Module):
    """DEtection TRansformer.

    Args:
        backbone: module mapping [B,3,H,W] to a list of NCHW maps, with ``.channels``; the
            map at ``feature_index`` (the coarsest, by default) feeds the transformer.
        num_classes: K, the number of object classes.
        classification: ``"softmax"`` (the paper: K+1 logits, cross-entropy) or
            ``"sigmoid"`` (K logits for focal loss, with the prior-probability bias init).
        query_type: ``"learned"`` (the paper: free query embeddings) or ``"anchor"``: each
            query owns a learnable reference point (initialised on a grid over the image),
            its positional query is an MLP of the point's sine encoding, and its box centre
            is predicted as an offset from the point (as Anchor DETR and Conditional DETR
            do), which converges several times faster; or ``"two_stage"``: every encoder token
            predicts a box from its own position, the ``num_queries`` best-scoring become the
            decoder's queries (content and reference box), as in two-stage Deformable DETR and
            DINO; converges fastest, and adds ``enc_outputs`` to the outputs.
    """

    # Which parameters are the backbone (its own learning rate) and the classifier (resized
    # when pretrained weights were trained for another number of classes).
    backbone_prefixes = ("backbone.",)
    classifier_prefixes = ("class_embed.", "enc_class_embed.")

    def __init__(self, backbone: nn.Module, num_classes: int, num_queries: int = 100,
                 hidden_dim: int = 256, num_heads: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, ffn_dim: int = 2048, dropout: float = 0.1,
                 aux_loss: bool = True, feature_index: int = -1,
                 classification: Classification = "softmax", prior_prob: float = 0.01,
                 query_type: QueryType = "learned") -> None:
        super().__init__()
        if classification not in ("softmax", "sigmoid"):
            raise ValueError(f"classification must be 'softmax' or 'sigmoid', got {classification!r}")
        if query_type not in ("learned", "anchor", "two_stage"):
            raise ValueError(f"query_type must be 'learned', 'anchor' or 'two_stage', got {query_type!r}")
        self.backbone = backbone
        self.feature_index = feature_index
        self.num_classes = num_classes
        self.classification = classification
        self.aux_loss = aux_loss
        self.position = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.input_proj = nn.Conv2d(backbone.channels[feature_index], hidden_dim, kernel_size=1)
        num_logits = num_classes + 1 if classification == "softmax" else num_classes
        self.class_embed = nn.Linear(hidden_dim, num_logits)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_type = query_type
        self.num_queries = num_queries
        if query_type == "learned":
            self.query_embed = nn.Embedding(num_queries, hidden_dim)
        else:
            self.query_pos_head = MLP(hidden_dim, hidden_dim, hidden_dim, 2)
            _zero_last_layer(self.bbox_embed)  # boxes start at their references
        if query_type == "anchor":
            self.reference_points = nn.Embedding(num_queries, 2)
            self.reference_points.weight.data.copy_(torch.logit(grid_points(num_queries), eps=1e-4))
            # no width/height prior: start at a quarter of the image
            nn.init.constant_(self.bbox_embed.layers[-1].bias[2:], math.log(0.25 / 0.75))
        if query_type == "two_stage":
            self.enc_proj = nn.Linear(hidden_dim, hidden_dim)
            self.enc_norm = nn.LayerNorm(hidden_dim)
            self.enc_class_embed = nn.Linear(hidden_dim, num_logits)
            self.enc_bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
            _zero_last_layer(self.enc_bbox_embed)
        self.transformer = Transformer(hidden_dim, num_heads, num_encoder_layers,
                                       num_decoder_layers, ffn_dim, dropout)
        if classification == "sigmoid":
            # start every class at prior_prob so that focal loss is not swamped by negatives
            for head in (self.class_embed, getattr(self, "enc_class_embed", None)):
                if head is not None:
                    nn.init.constant_(head.bias, -math.log((1 - prior_prob) / prior_prob))

    def no_weight_decay(self) -> set[str]:
        """Learned query positions and reference points: positions, kept out of weight decay."""
        return {name for name, _ in self.named_parameters() if name in ("query_embed.weight", "reference_points.weight")}

    def forward(self, samples: PaddedImages | tuple[Tensor, Tensor] | Tensor) -> dict[str, Any]:
        """``samples``: ``(images [B,3,H,W], mask [B,H,W])`` or a tensor of unpadded images."""
        if isinstance(samples, Tensor):
            images = samples
            mask = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.bool, device=images.device)
        else:
            images, mask = samples
        feature = self.backbone(images)[self.feature_index]
        mask = F.interpolate(mask[None].float(), size=feature.shape[-2:])[0].to(torch.bool)
        pos = self.position(mask).to(feature.dtype)
        if self.query_type == "two_stage":
            return self._two_stage(self.input_proj(feature), mask, pos)
        reference = None
        if self.query_type == "anchor":
            points = self.reference_points.weight  # [Q,2] logits of (x, y) in [0, 1]
            query_pos = self.query_pos_head(point_encoding(points.sigmoid(), self.transformer.dim))
            reference = F.pad(points, (0, 2))  # no prior on width and height
        else:
            query_pos = self.query_embed.weight
        states = self.transformer(self.input_proj(feature), mask, query_pos, pos)
        return self._outputs(states, reference)

    def _outputs(self, states: Tensor, reference: Tensor | None) -> dict[str, Any]:
        """Heads on decoder states [L,B,Q,D]; box logits are offsets from ``reference`` (logit
        space, [Q,4] or [B,Q,4]) when given."""
        logits = self.class_embed(states)
        deltas = self.bbox_embed(states)
        if reference is not None:
            deltas = deltas + reference
        boxes = deltas.sigmoid()
        out: dict[str, Any] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])
            ]
        return out

    def _two_stage(self, src: Tensor, mask: Tensor, pos: Tensor) -> dict[str, Any]:
        """Encoder tokens propose boxes; the best ``num_queries`` become the decoder's queries.

        ``src``/``pos`` [B,D,h,w], ``mask`` [B,h,w]. Adds ``enc_outputs`` (one prediction per
        token, trained with the same matching loss) to the outputs.
        """
        flat_src, flat_pos, flat_mask = flatten_map(src), flatten_map(pos), mask.flatten(1)
        memory = self.transformer.encode(flat_src, flat_pos, flat_mask)
        tokens = self.enc_norm(self.enc_proj(memory))
        enc_logits = self.enc_class_embed(tokens)
        enc_boxes = self.enc_bbox_embed(tokens) + token_proposals(mask)  # logit space
        object_logits = enc_logits if self.classification == "sigmoid" else enc_logits[..., :-1]
        scores = object_logits.max(-1).values.masked_fill(flat_mask, float("-inf"))
        top = scores.topk(min(self.num_queries, scores.shape[1]), dim=1).indices  # [B,Q]
        reference = enc_boxes.gather(1, top[..., None].expand(-1, -1, 4)).detach()
        tgt = tokens.gather(1, top[..., None].expand(-1, -1, tokens.shape[-1])).detach()
        query_pos = self.query_pos_head(point_encoding(reference[..., :2].sigmoid(), self.transformer.dim))
        states = self.transformer.decode(tgt, memory, flat_pos, query_pos, flat_mask)
        out = self._outputs(states, reference)
        out["enc_outputs"] = {"pred_logits": enc_logits, "pred_boxes": enc_boxes.sigmoid()}
        return out


def token_proposals(mask: Tensor, cells: float = 2.0) -> Tensor:
    """One box per feature-map token, in logit space: [B,h*w,4] (cx, cy, w, h), row by row.

    Centres are the tokens' centres within each image's valid (unpadded) region; sides are
    ``cells`` tokens. Padding tokens get clamped boxes (they are never selected).
    """
    valid_h = (~mask[:, :, 0]).sum(1).clamp(min=1).to(torch.float32)  # [B]
    valid_w = (~mask[:, 0, :]).sum(1).clamp(min=1).to(torch.float32)
    h, w = mask.shape[1:]
    ys = (torch.arange(h, device=mask.device, dtype=torch.float32) + 0.5)[None, :, None] / valid_h[:, None, None]
    xs = (torch.arange(w, device=mask.device, dtype=torch.float32) + 0.5)[None, None, :] / valid_w[:, None, None]
    cx, cy = xs.expand(-1, h, -1), ys.expand(-1, -1, w)
    bw = (cells / valid_w)[:, None, None].expand(-1, h, w)
    bh = (cells / valid_h)[:, None, None].expand(-1, h, w)
    boxes = torch.stack([cx, cy, bw, bh], dim=-1).flatten(1, 2)
    return torch.logit(boxes.clamp(0.01, 0.99))
