"""DETR model: size, output contract, padding masks, every query type, every backbone family."""
from __future__ import annotations

import math

import pytest
import torch

import densevit
from densevit.data.collate import PaddedImages, pad_images
from densevit.detection.detr import token_proposals
from densevit.detection.position import PositionEmbeddingSine, point_encoding
from densevit.detection.transformer import Transformer

SMALL = dict(num_queries=8, hidden_dim=32, num_heads=4, num_encoder_layers=1, num_decoder_layers=2, ffn_dim=64)


def test_detr_r50_has_the_papers_parameter_count():
    model = densevit.create_model("detr_r50", num_classes=91)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == pytest.approx(41.3e6, rel=0.005)  # DETR reports 41,302,368
    assert model.class_embed.out_features == 92


@pytest.mark.parametrize("name,size", [("detr_r18", (64, 96)), ("detr_vit_s16", (64, 96)), ("detr_swin_t", (64, 96))])
def test_backbone_families_give_the_output_contract(name, size):
    model = densevit.create_model(name, num_classes=5, **SMALL).eval()
    batch = pad_images([torch.randn(3, *size), torch.randn(3, size[0] - 32, size[1])], size_divisor=32)
    with torch.no_grad():
        out = model(batch)
    assert out["pred_logits"].shape == (2, 8, 6)
    assert out["pred_boxes"].shape == (2, 8, 4)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    assert len(out["aux_outputs"]) == 1 and out["aux_outputs"][0]["pred_boxes"].shape == (2, 8, 4)


@pytest.mark.parametrize("query_type,classification", [("learned", "softmax"), ("anchor", "sigmoid"),
                                                       ("two_stage", "sigmoid"), ("two_stage", "softmax")])
def test_query_types_train_end_to_end(query_type, classification):
    from densevit.detection.criterion import SetCriterion
    from densevit.detection.matcher import HungarianMatcher

    model = densevit.create_model("detr_tiny", num_classes=3, query_type=query_type, classification=classification,
                                  num_queries=6)
    batch = pad_images([torch.randn(3, 64, 64), torch.randn(3, 48, 64)])
    targets = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])},
               {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    out = model(batch)
    width = 4 if classification == "softmax" else 3
    assert out["pred_logits"].shape == (2, 6, width)
    assert ("enc_outputs" in out) == (query_type == "two_stage")
    losses = SetCriterion(3, HungarianMatcher(classification=classification), classification=classification)(out, targets)
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:5]) and torch.isfinite(losses["loss"])


def test_padded_keys_do_not_change_the_transformer_output():
    transformer = Transformer(dim=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, ffn_dim=64).eval()
    src = torch.randn(1, 32, 4, 6)
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[:, :, 4:] = True
    pos = PositionEmbeddingSine(16)(mask)
    queries = torch.randn(5, 32)
    changed = src.clone()
    changed[..., 4:] = torch.randn(1, 32, 4, 2) * 10
    with torch.no_grad():
        a = transformer(src, mask, queries, pos)
        b = transformer(changed, mask, queries, pos)
    torch.testing.assert_close(a, b)


def test_position_encoding_of_a_padded_image_equals_the_image_alone():
    encoder = PositionEmbeddingSine(16)
    alone = encoder(torch.zeros(1, 5, 7, dtype=torch.bool))
    mask = torch.ones(1, 9, 12, dtype=torch.bool)
    mask[:, :5, :7] = False
    padded = encoder(mask)
    torch.testing.assert_close(padded[..., :5, :7], alone)


def test_position_encoding_follows_the_formula_and_point_encoding_agrees():
    """Pixel (i, j) of an H x W map: sin/cos of ((i+1)/H * 2pi) / 10000^(2k/F), y half then x half."""
    height, width, feats = 3, 5, 8
    pos = PositionEmbeddingSine(feats)(torch.zeros(1, height, width, dtype=torch.bool))[0]  # [2F, H, W]
    for i, j in [(0, 0), (2, 4), (1, 3)]:
        y, x = (i + 1) / (height + 1e-6) * 2 * math.pi, (j + 1) / (width + 1e-6) * 2 * math.pi
        expected = []
        for value in (y, x):
            for k in range(feats):
                angle = value / 10000 ** (2 * (k // 2) / feats)
                expected.append(math.sin(angle) if k % 2 == 0 else math.cos(angle))
        torch.testing.assert_close(pos[:, i, j], torch.tensor(expected), rtol=0, atol=1e-6)
        point = torch.tensor([(j + 1) / width, (i + 1) / height])
        torch.testing.assert_close(point_encoding(point, 2 * feats), torch.tensor(expected), rtol=0, atol=1e-5)


def test_token_proposals_centre_on_the_valid_region():
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[0] = False
    mask[1, :2, :2] = False
    boxes = token_proposals(mask).sigmoid()
    assert boxes.shape == (2, 16, 4)
    torch.testing.assert_close(boxes[0, 0, :2], torch.tensor([0.125, 0.125]))
    torch.testing.assert_close(boxes[1, 5, :2], torch.tensor([0.75, 0.75]))  # row 1, column 1 of a 2x2 region
    torch.testing.assert_close(boxes[0, 6, 2:], torch.tensor([0.5, 0.5]))  # 2 of 4 tokens wide


def test_a_plain_tensor_is_an_unpadded_batch():
    model = densevit.create_model("detr_tiny", num_classes=2).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model(images)
        b = model(PaddedImages((images, torch.zeros(2, 64, 64, dtype=torch.bool))))
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"])
