"""Every registered model, built at full size on the meta device (shapes only, no memory): it
names its backbone and classifier, and maps an image batch to outputs of the documented shapes."""
from __future__ import annotations

import pytest
import torch

from densevit.models import MODELS, create_model, list_models

# densevit's own models (other tests register models of their own)
OURS = [name for name in list_models() if MODELS.get(name).__module__.startswith("densevit.")]
DETECTORS = [name for name in OURS if name.startswith("detr") and name != "detr"]
RTDETRS = [name for name in OURS if name.startswith("rtdetr") and name != "rtdetr"]
SEGMENTERS = [name for name in OURS if name.startswith("transunet")]
CLASSIFIERS = [name for name in OURS if name.startswith("classifier_")]


def test_the_registry_holds_the_published_families():
    assert {"detr_r50", "detr_r101", "detr_swin_t", "detr_cswin_t", "detr_vit_s16",
            "detr_tiny"} <= set(DETECTORS)
    assert {"transunet_r50_vitb16", "transunet_vit_b16", "transunet_swin_t", "transunet_cswin_t",
            "transunet_r50"} <= set(SEGMENTERS)
    assert {"rtdetr_r18", "rtdetr_r34", "rtdetr_r50", "rtdetr_r101", "rtdetr_cswin_t"} <= set(RTDETRS)
    assert {"classifier_vit_small", "classifier_swin_tiny", "classifier_tnt_small", "classifier_resnet50"} <= set(CLASSIFIERS)
    assert set(OURS) == {"detr", "rtdetr", "classifier", *DETECTORS, *RTDETRS, *SEGMENTERS, *CLASSIFIERS}  # nothing unaccounted for


def _declares_its_parts(model: torch.nn.Module) -> None:
    names = [name for name, _ in model.named_parameters()]
    for attribute in ("backbone_prefixes", "classifier_prefixes"):
        prefixes = getattr(model, attribute)
        assert prefixes and any(n.startswith(tuple(prefixes)) for n in names), attribute


@pytest.mark.parametrize("name", DETECTORS)
def test_every_detector_declares_its_parts_and_outputs_the_contract(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=7)
        out = model(torch.zeros(2, 3, 224, 320))
    _declares_its_parts(model)
    logits = 7 if model.classification == "sigmoid" else 8
    assert out["pred_logits"].shape == (2, model.num_queries, logits) and out["pred_boxes"].shape == (2, model.num_queries, 4)
    assert len(out["aux_outputs"]) == len(model.transformer.decoder_layers) - 1


@pytest.mark.parametrize("name", RTDETRS)
def test_every_rtdetr_declares_its_parts_and_outputs_the_contract(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=7)
        out = model(torch.zeros(2, 3, 224, 320))
    _declares_its_parts(model)
    assert model.classification == "sigmoid"
    assert out["pred_logits"].shape == (2, model.num_queries, 7) and out["pred_boxes"].shape == (2, model.num_queries, 4)
    # the last decoder layer is the prediction; the encoder's top-k proposals are scored too
    assert len(out["aux_outputs"]) == len(model.decoder.layers) - 1
    assert out["enc_outputs"]["pred_logits"].shape == (2, model.num_queries, 7)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_every_segmenter_declares_its_parts_and_outputs_full_size_logits(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=5)
        logits = model(torch.zeros(2, 3, 224, 320))
    _declares_its_parts(model)
    assert logits.shape == (2, 5, 224, 320)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_declares_its_parts_and_outputs_logits(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=5)
        logits = model(torch.zeros(2, 3, 224, 288))
    _declares_its_parts(model)
    assert logits.shape == (2, 5)
    if model.num_layers:  # transformers number every layer for layer decay, from the stem to the head
        assert {model.layer_id(n) for n, _ in model.named_parameters()} == set(range(model.num_layers))
