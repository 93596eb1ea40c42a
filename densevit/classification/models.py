"""Registered classifiers: ``densevit.create_model("classifier_vit_small", num_classes=10)``.

Every classifier takes its backbone from the registry (``densevit list backbones``). The
generic ``classifier`` takes the backbone by name (``model.kwargs.backbone: cswin_tiny``); the
named ones fix it. ``backbone_pretrained`` is a weight file for the backbone, in our
layout or the library's (timm / torchvision), or a weights name (``timm:...``, ``hf-hub:...``); a library ImageNet file also gives the head when
``num_classes`` is its class count (1000), so that the model predicts ImageNet labels.
``backbone_kwargs`` go to the backbone (``drop_path_rate``), ``drop_rate`` is the dropout before
the head.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from densevit.classification.classifier import Classifier
from densevit.models import MODELS

# registered name -> backbone name
NAMED = {
    "classifier_vit_tiny": "vit_tiny_patch16",
    "classifier_vit_small": "vit_small_patch16",
    "classifier_vit_base": "vit_base_patch16",
    "classifier_swin_tiny": "swin_tiny",
    "classifier_swin_small": "swin_small",
    "classifier_swin_base": "swin_base",
    "classifier_tnt_small": "tnt_small",
    "classifier_cswin_tiny": "cswin_tiny",
    "classifier_cswin_small": "cswin_small",
    "classifier_cswin_base": "cswin_base",
    "classifier_resnet18": "resnet18",
    "classifier_resnet50": "resnet50",
    "classifier_resnet101": "resnet101",
    "classifier_resnet50d": "resnet50d",
    "classifier_tiny_cnn": "tiny_cnn",
}


@MODELS.register("classifier")
def classifier(num_classes: int, backbone: str = "", backbone_pretrained: str | None = None,
               backbone_kwargs: dict[str, Any] | None = None, drop_rate: float = 0.0) -> Classifier:
    """A classifier on the registry backbone ``backbone`` (see the module docstring)."""
    from densevit.backbones import create_backbone
    from densevit.errors import ConfigError

    if not backbone:
        raise ConfigError("model.kwargs.backbone: required for model.name classifier (densevit list backbones)")
    model = Classifier(create_backbone(backbone, pretrained=backbone_pretrained, **(backbone_kwargs or {})),
                       num_classes, drop_rate)
    if backbone_pretrained is not None:
        model.load_library_head(Path(backbone_pretrained))
    return model


def _named(name: str, backbone: str) -> None:
    def factory(num_classes: int, **kwargs: Any) -> Classifier:
        return classifier(num_classes, backbone=backbone, **kwargs)

    factory.__doc__ = f"A classifier on backbone ``{backbone}``."
    factory.__name__ = name
    MODELS.register(name)(factory)


for _name, _backbone in NAMED.items():
    _named(_name, _backbone)
