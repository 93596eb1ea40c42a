"""Registered TransUNet variants: ``densevit.create_model("transunet_r50_vitb16", num_classes=9)``.

Every variant takes its encoder from the backbone registry; ``backbone_pretrained`` in the
kwargs is a weight file for it (or a weights name, ``timm:...`` / ``hf-hub:...``). ``transunet_r50_vitb16`` and ``transunet_vit_b16_ref``
use TransUNet's own encoder (backbones ``r50_vit_b16`` / ``vit_b16_transunet``), so that
published TransUNet checkpoints and Google ViT ``.npz`` weights load exactly (the ``.npz`` as
``model.pretrained`` or ``backbone_pretrained``); their sizes (``img_size``, ``hidden``,
``depth``, ``num_heads``, ``mlp_dim``, ``resnet_layers``, ``resnet_width``) go to the encoder.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from densevit.errors import UserInputError
from densevit.models import MODELS
from densevit.segmentation.transunet import TransUNet

# kwargs of the TransUNet models that size TransUNet's own encoder rather than the decoder
_ENCODER_SIZES = ("img_size", "hidden", "depth", "num_heads", "mlp_dim", "resnet_layers", "resnet_width")


def _with_registry_backbone(
    backbone: str, num_classes: int, backbone_pretrained: str | None = None, in_chans: int = 3,
    backbone_kwargs: dict[str, Any] | None = None, **kwargs: Any
) -> TransUNet:
    from densevit.backbones import create_backbone

    encoder = create_backbone(backbone, pretrained=backbone_pretrained, **(backbone_kwargs or {}))
    if in_chans != 3:
        raise UserInputError(f"model.kwargs.in_chans: {backbone} takes 3-channel input, got {in_chans}")
    return TransUNet(encoder, num_classes, in_chans=in_chans, **kwargs)


def _with_transunet_encoder(
    backbone: str, num_classes: int, backbone_pretrained: str | None = None, in_chans: int = 3, **kwargs: Any
) -> TransUNet:
    from densevit.backbones import create_backbone

    sizes = {key: kwargs.pop(key) for key in _ENCODER_SIZES if key in kwargs}
    encoder = create_backbone(backbone, pretrained=backbone_pretrained, in_chans=in_chans, **sizes)
    return TransUNet(encoder, num_classes, in_chans=in_chans, **kwargs)


@MODELS.register("transunet_r50_vitb16")
def transunet_r50_vitb16(num_classes: int, **kwargs: Any) -> nn.Module:
    """R50+ViT-B/16 hybrid encoder (backbone ``r50_vit_b16``), skips at strides 8/4/2 (about 105M parameters)."""
    return _with_transunet_encoder("r50_vit_b16", num_classes, **kwargs)


@MODELS.register("transunet_r50_vitb16_timm")
def transunet_r50_vitb16_timm(num_classes: int, **kwargs: Any) -> nn.Module:
    """R50+ViT-B/16 as timm builds it (backbone ``r50_vit_b16_timm``, for timm-format weights).

    Same architecture as ``transunet_r50_vitb16`` but timm's layer details ('same' padding,
    GroupNorm variants), so TransUNet's published weights do not reproduce their outputs here.
    """
    return _with_registry_backbone("r50_vit_b16_timm", num_classes, **kwargs)


@MODELS.register("transunet_vit_b16_ref")
def transunet_vit_b16_ref(num_classes: int, **kwargs: Any) -> nn.Module:
    """TransUNet's plain ViT-B/16 (backbone ``vit_b16_transunet``: no CNN, no skips), for ``ViT-B_16`` weights."""
    return _with_transunet_encoder("vit_b16_transunet", num_classes, **kwargs)


@MODELS.register("transunet_vit_b16")
def transunet_vit_b16(num_classes: int, **kwargs: Any) -> nn.Module:
    """timm ViT-B/16 encoder, upsampled from stride 16 without skips."""
    return _with_registry_backbone("vit_base_patch16", num_classes, **kwargs)


@MODELS.register("transunet_vit_s16")
def transunet_vit_s16(num_classes: int, **kwargs: Any) -> nn.Module:
    """timm ViT-S/16 encoder, upsampled from stride 16 without skips."""
    return _with_registry_backbone("vit_small_patch16", num_classes, **kwargs)


@MODELS.register("transunet_vit_t16")
def transunet_vit_t16(num_classes: int, **kwargs: Any) -> nn.Module:
    """timm ViT-Ti/16 encoder, upsampled from stride 16 without skips."""
    return _with_registry_backbone("vit_tiny_patch16", num_classes, **kwargs)


@MODELS.register("transunet_swin_t")
def transunet_swin_t(num_classes: int, **kwargs: Any) -> nn.Module:
    """Swin-T encoder; its stride 16/8/4 stages are the skips."""
    return _with_registry_backbone("swin_tiny", num_classes, **kwargs)


@MODELS.register("transunet_cswin_t")
def transunet_cswin_t(num_classes: int, **kwargs: Any) -> nn.Module:
    """CSWin-T encoder; its stride 16/8/4 stages are the skips."""
    return _with_registry_backbone("cswin_tiny", num_classes, **kwargs)


@MODELS.register("transunet_r50")
def transunet_r50(num_classes: int, **kwargs: Any) -> nn.Module:
    """ResNet-50 encoder (layers 1-4 at strides 4-32) as a plain U-Net-style baseline."""
    backbone_kwargs = {"return_layers": ["layer1", "layer2", "layer3", "layer4"], **kwargs.pop("backbone_kwargs", {})}
    return _with_registry_backbone("resnet50", num_classes, backbone_kwargs=backbone_kwargs, **kwargs)
