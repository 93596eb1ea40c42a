"""Registered DETR variants: ``densevit.create_model("detr_r50", num_classes=91)``.

Every variant takes its backbone from the backbone registry; ``backbone_pretrained`` is a
weight file for it and ``backbone_kwargs`` its options. Other keyword arguments go to
:class:`~densevit.detection.detr.DETR`.
"""
from __future__ import annotations

from typing import Any

from densevit.detection.detr import DETR
from densevit.models import MODELS


@MODELS.register("detr")
def build_detr(backbone: str, num_classes: int, backbone_pretrained: str | None = None,
               backbone_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> DETR:
    """DETR on the registry backbone ``backbone`` (any name of ``densevit list backbones``)."""
    from densevit.backbones import create_backbone

    body = create_backbone(backbone, pretrained=backbone_pretrained, **(backbone_kwargs or {}))
    return DETR(body, num_classes, **kwargs)


@MODELS.register()
def detr_r18(num_classes: int, **kwargs: Any) -> DETR:
    """DETR with a ResNet-18 backbone."""
    return build_detr("resnet18", num_classes, **kwargs)


@MODELS.register()
def detr_r50(num_classes: int, **kwargs: Any) -> DETR:
    """DETR with a ResNet-50 backbone, the paper's (41.3M parameters with 91 classes)."""
    return build_detr("resnet50", num_classes, **kwargs)


@MODELS.register()
def detr_r101(num_classes: int, **kwargs: Any) -> DETR:
    """DETR with a ResNet-101 backbone."""
    return build_detr("resnet101", num_classes, **kwargs)


@MODELS.register()
def detr_vit_s16(num_classes: int, **kwargs: Any) -> DETR:
    """DETR on ViT-S/16's last block (stride 16)."""
    return build_detr("vit_small_patch16", num_classes, **kwargs)


@MODELS.register()
def detr_swin_t(num_classes: int, **kwargs: Any) -> DETR:
    """DETR on Swin-T's last stage (stride 32)."""
    return build_detr("swin_tiny", num_classes, **kwargs)


@MODELS.register()
def detr_cswin_t(num_classes: int, **kwargs: Any) -> DETR:
    """DETR on CSWin-T's last stage (stride 32, after the final norm)."""
    return build_detr("cswin_tiny", num_classes, **kwargs)


@MODELS.register()
def detr_tiny(num_classes: int, **kwargs: Any) -> DETR:
    """A small DETR for CPU demos and tests: the ``tiny_cnn`` backbone (stride 16), hidden 128,
    2 encoder and 3 decoder layers, 20 two-stage queries, sigmoid classification.
    Keyword arguments override these defaults (see :class:`DETR`)."""
    settings: dict[str, Any] = dict(num_queries=20, hidden_dim=128, num_heads=8, num_encoder_layers=2,
                                    num_decoder_layers=3, ffn_dim=512, dropout=0.0,
                                    classification="sigmoid", query_type="two_stage")
    settings.update(kwargs)
    return build_detr("tiny_cnn", num_classes, **settings)
