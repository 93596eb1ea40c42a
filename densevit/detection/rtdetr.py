"""RT-DETR (RT-DETRv2; Lv et al. 2024, after Zhao et al. 2024): backbone -> hybrid encoder -> decoder.

A DETR that converges in tens of epochs rather than hundreds: multi-scale features fused by a
cheap hybrid encoder, queries selected from the encoder's own proposals, deformable
cross-attention, contrastive denoising groups and a varifocal loss (``rtdetr_criterion``).
Still one-to-one Hungarian matching and no NMS. Scores are sigmoids (K logits, no background).

The model takes a batch of same-size images (RT-DETR resizes every image to one square size;
a padding mask, when given, is not used) and, in training, the targets for its denoising queries.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from densevit.data.collate import PaddedImages
from densevit.detection.hybrid_encoder import HybridEncoder
from densevit.detection.rtdetr_decoder import RTDETRDecoder
from densevit.errors import UserInputError
from densevit.models import MODELS


class RTDETR(nn.Module):
    """``forward(images [B,3,H,W] or PaddedImages, targets=None) -> dict`` (see ``RTDETRDecoder``);
    H and W divisible by the backbone's largest stride (32)."""

    backbone_prefixes = ("backbone.",)
    classifier_prefixes = ("decoder.enc_score_head.", "decoder.dec_score_head.", "decoder.denoising_class_embed.")
    classification = "sigmoid"

    def __init__(self, backbone: nn.Module, encoder: HybridEncoder, decoder: RTDETRDecoder) -> None:
        super().__init__()
        self.backbone, self.encoder, self.decoder = backbone, encoder, decoder
        self.num_classes, self.num_queries = decoder.num_classes, decoder.num_queries

    def forward(self, samples: PaddedImages | Tensor, targets: list[dict[str, Tensor]] | None = None) -> dict[str, Any]:
        images = samples if isinstance(samples, Tensor) else samples[0]
        return self.decoder(self.encoder(self.backbone(images)), targets)


@MODELS.register("rtdetr")
def build_rtdetr(backbone: str, num_classes: int, backbone_pretrained: str | None = None,
                 backbone_kwargs: dict[str, Any] | None = None, encoder: dict[str, Any] | None = None,
                 decoder: dict[str, Any] | None = None) -> RTDETR:
    """RT-DETR on the registry backbone ``backbone``, which must give three maps at strides
    8/16/32 (choose them with ``backbone_kwargs``); ``encoder`` / ``decoder`` are keyword
    arguments of ``HybridEncoder`` / ``RTDETRDecoder``."""
    from densevit.backbones import create_backbone

    body = create_backbone(backbone, pretrained=backbone_pretrained, **(backbone_kwargs or {}))
    if len(body.strides) != 3:
        raise UserInputError(f"model.kwargs.backbone_kwargs: RT-DETR needs three maps (strides 8, 16, 32) from "
                             f"{backbone}, it gives strides {body.strides} (out_indices chooses them)")
    hybrid = HybridEncoder(body.channels, **(encoder or {}))
    head = RTDETRDecoder(num_classes, [hybrid.hidden_dim] * 3, **(decoder or {}))
    return RTDETR(body, hybrid, head)


def _recipe(backbone: str, num_classes: int, preset_backbone: dict[str, Any], preset_encoder: dict[str, Any],
            preset_decoder: dict[str, Any], **kwargs: Any) -> RTDETR:
    """A published recipe; ``backbone_kwargs``, ``encoder`` and ``decoder`` given by the user update it."""
    return build_rtdetr(backbone, num_classes,
                        backbone_kwargs={**preset_backbone, **(kwargs.pop("backbone_kwargs", None) or {})},
                        encoder={**preset_encoder, **(kwargs.pop("encoder", None) or {})},
                        decoder={**preset_decoder, **(kwargs.pop("decoder", None) or {})}, **kwargs)


@MODELS.register()
def rtdetr_r18(num_classes: int, **kwargs: Any) -> RTDETR:
    """RT-DETRv2-R18 (ResNet-18-D, CSP expansion 0.5, 3 decoder layers): 20.2M parameters with 80 classes."""
    return _recipe("resnet18d", num_classes, {}, {"expansion": 0.5}, {"num_layers": 3}, **kwargs)


@MODELS.register()
def rtdetr_r34(num_classes: int, **kwargs: Any) -> RTDETR:
    """RT-DETRv2-R34 (ResNet-34-D, CSP expansion 0.5, 4 decoder layers): 31.4M parameters with 80 classes."""
    return _recipe("resnet34d", num_classes, {}, {"expansion": 0.5}, {"num_layers": 4}, **kwargs)


@MODELS.register()
def rtdetr_r50(num_classes: int, **kwargs: Any) -> RTDETR:
    """RT-DETRv2-R50 (ResNet-50-D with frozen BatchNorm, 6 decoder layers): 42.9M parameters with 80 classes."""
    return _recipe("resnet50d", num_classes, {}, {}, {"num_layers": 6}, **kwargs)


@MODELS.register()
def rtdetr_r101(num_classes: int, **kwargs: Any) -> RTDETR:
    """RT-DETRv2-R101 (ResNet-101-D, encoder width 384, 6 decoder layers): 76.6M parameters with 80 classes."""
    return _recipe("resnet101d", num_classes, {}, {"hidden_dim": 384, "ffn_dim": 2048}, {"num_layers": 6}, **kwargs)


@MODELS.register()
def rtdetr_swin_t(num_classes: int, **kwargs: Any) -> RTDETR:
    """RT-DETR on Swin-T's last three stages (strides 8/16/32), R50's encoder and decoder."""
    return _recipe("swin_tiny", num_classes, {"out_indices": (1, 2, 3)}, {}, {"num_layers": 6}, **kwargs)


@MODELS.register()
def rtdetr_vit_s16(num_classes: int, **kwargs: Any) -> RTDETR:
    """RT-DETR on ViT-S/16 through ViTDet's simple feature pyramid (strides 8/16/32), R50's encoder and decoder."""
    return _recipe("vit_small_patch16", num_classes, {"simple_fpn": True}, {}, {"num_layers": 6}, **kwargs)


@MODELS.register()
def rtdetr_tiny(num_classes: int, **kwargs: Any) -> RTDETR:
    """A small RT-DETR for CPU demos and tests: ``tiny_cnn`` (``detr_tiny``'s, with a fifth stage)
    giving strides 8/16/32, width 128, 3 decoder layers of 2 points per level, 30 queries and
    30 denoising queries (RT-DETR's 100 double the step time on a CPU for about the same AP)."""
    return _recipe("tiny_cnn", num_classes, {"widths": (24, 48, 96, 160, 256), "blocks": (0, 0, 1, 1, 1),
                                             "out_indices": (2, 3, 4)},
                   {"hidden_dim": 128, "ffn_dim": 512, "expansion": 0.5, "depth_mult": 0.34},
                   {"hidden_dim": 128, "ffn_dim": 512, "num_layers": 3, "num_points": 2, "num_queries": 30,
                    "num_denoising": 30}, **kwargs)


@MODELS.register()
def rtdetr_cswin_t(num_classes: int, **kwargs: Any) -> RTDETR:
    """RT-DETR on CSWin-T's last three stages (strides 8/16/32), R50's encoder and decoder."""
    return _recipe("cswin_tiny", num_classes, {"out_indices": (1, 2, 3)}, {}, {"num_layers": 6}, **kwargs)
