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
from densevit.detection.position import PositionEmbeddingSine
from densevit.detection.transformer import Transformer

Classification = Literal["softmax", "sigmoid"]
QueryType = Literal["learned", "anchor"]


def grid_points(count: int) -> Tensor:
    """``count`` points [count,2] (x, y) spread over the unit square: a rows x cols grid of cell
    centres (cols = ceil(sqrt(count))), read row by row and cut at ``count``."""
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    ys, xs = torch.meshgrid((torch.arange(rows) + 0.5) / rows, (torch.arange(cols) + 0.5) / cols, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)[:count]


def point_encoding(points: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Sine encoding of normalised points [..., 2] (x, y) -> [..., dim] (y half, then x half),
    the same formula as :class:`PositionEmbeddingSine` applies to pixel positions."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=points.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
    scaled = points.float()[..., None] * (2 * math.pi) / dim_t  # [..., 2, half]
    encoded = torch.stack((scaled[..., 0::2].sin(), scaled[..., 1::2].cos()), dim=-1).flatten(-2)
    return torch.cat([encoded[..., 1, :], encoded[..., 0, :]], dim=-1).to(points.dtype)


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
            do), which converges several times faster.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, num_queries: int = 100,
                 hidden_dim: int = 256, num_heads: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, ffn_dim: int = 2048, dropout: float = 0.1,
                 aux_loss: bool = True, feature_index: int = -1,
                 classification: Classification = "softmax", prior_prob: float = 0.01,
                 query_type: QueryType = "learned") -> None:
        super().__init__()
        if classification not in ("softmax", "sigmoid"):
            raise ValueError(f"classification must be 'softmax' or 'sigmoid', got {classification!r}")
        if query_type not in ("learned", "anchor"):
            raise ValueError(f"query_type must be 'learned' or 'anchor', got {query_type!r}")
        self.backbone = backbone
        self.feature_index = feature_index
        self.num_classes = num_classes
        self.classification = classification
        self.aux_loss = aux_loss
        self.position = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.input_proj = nn.Conv2d(backbone.channels[feature_index], hidden_dim, kernel_size=1)
        self.query_type = query_type
        if query_type == "anchor":
            self.reference_points = nn.Embedding(num_queries, 2)
            self.reference_points.weight.data.copy_(torch.logit(grid_points(num_queries), eps=1e-4))
            self.query_pos_head = MLP(hidden_dim, hidden_dim, hidden_dim, 2)
        else:
            self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.transformer = Transformer(hidden_dim, num_heads, num_encoder_layers,
                                       num_decoder_layers, ffn_dim, dropout)
        num_logits = num_classes + 1 if classification == "softmax" else num_classes
        self.class_embed = nn.Linear(hidden_dim, num_logits)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        if classification == "sigmoid":
            # start every class at prior_prob so that focal loss is not swamped by negatives
            nn.init.constant_(self.class_embed.bias, -math.log((1 - prior_prob) / prior_prob))

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
        if self.query_type == "anchor":
            reference = self.reference_points.weight  # [Q,2] logits of (x, y) in [0, 1]
            query_pos = self.query_pos_head(point_encoding(reference.sigmoid(), self.transformer.dim))
        else:
            query_pos = self.query_embed.weight
        states = self.transformer(self.input_proj(feature), mask, query_pos, pos)
        logits = self.class_embed(states)
        deltas = self.bbox_embed(states)
        if self.query_type == "anchor":
            deltas = torch.cat([deltas[..., :2] + reference, deltas[..., 2:]], dim=-1)
        boxes = deltas.sigmoid()
        out: dict[str, Any] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])
            ]
        return out


# ----------------------------------------------------------------------------- registered models

_BACKBONES = {
    "detr_r18": "resnet18",
    "detr_r50": "resnet50",
    "detr_r101": "resnet101",
    "detr_vit_s16": "vit_small_patch16",
    "detr_swin_t": "swin_tiny",
}


def build_detr(backbone: str, num_classes: int, backbone_pretrained: str | None = None,
               backbone_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> DETR:
    """DETR on the registry backbone ``backbone``; ``kwargs`` go to :class:`DETR`."""
    from densevit.backbones import create_backbone

    body = create_backbone(backbone, pretrained=backbone_pretrained, **(backbone_kwargs or {}))
    return DETR(body, num_classes, **kwargs)


def _register(model_name: str, backbone: str) -> None:
    from densevit.models import MODELS

    def factory(num_classes: int, **kwargs: Any) -> DETR:
        return build_detr(backbone, num_classes, **kwargs)

    factory.__name__ = model_name
    factory.__doc__ = f"DETR with the ``{backbone}`` backbone; keyword arguments as :func:`build_detr`."
    MODELS.register(model_name)(factory)


def detr_tiny(num_classes: int, **kwargs: Any) -> DETR:
    """A small DETR for CPU demos and tests: :class:`TinyConvNet` (stride 16), hidden 128,
    2 encoder and 3 decoder layers, 20 anchor queries, sigmoid classification.
    Keyword arguments override these defaults (see :class:`DETR`)."""
    from densevit.detection.tiny_backbone import TinyConvNet

    settings: dict[str, Any] = dict(num_queries=20, hidden_dim=128, num_heads=8, num_encoder_layers=2,
                                    num_decoder_layers=3, ffn_dim=512, dropout=0.0,
                                    classification="sigmoid", query_type="anchor")
    settings.update(kwargs)
    return DETR(TinyConvNet(), num_classes, **settings)


def register_models() -> None:
    """Put every DETR variant in :data:`densevit.models.MODELS` (plus ``detr``, backbone by name)."""
    from densevit.models import MODELS

    for model_name, backbone in _BACKBONES.items():
        _register(model_name, backbone)
    MODELS.register("detr")(build_detr)
    MODELS.register("detr_tiny")(detr_tiny)
