"""RT-DETR: published parameter counts, outputs, denoising groups, the loss and its gradients."""
from __future__ import annotations

import pytest
import torch

import densevit
from densevit.detection.denoising import denoising_groups
from densevit.detection.matcher import HungarianMatcher
from densevit.detection.rtdetr_criterion import RTDETRCriterion

TARGETS = [
    {"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.6, 0.3, 0.2]])},
    {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
]


@pytest.mark.parametrize(("name", "expected"), [
    ("rtdetr_r18", 20_184_464), ("rtdetr_r34", 31_441_668), ("rtdetr_r50", 42_891_372), ("rtdetr_r101", 76_556_268),
])
def test_parameter_counts_equal_the_published_models(name, expected):
    with torch.device("meta"):
        model = densevit.create_model(name, num_classes=80)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return densevit.create_model("rtdetr_r18", num_classes=5, decoder={"num_queries": 30, "num_denoising": 20})


def test_eval_outputs_and_any_size_the_strides_divide(small):
    small.eval()
    with torch.no_grad():
        out = small(torch.randn(2, 3, 128, 160))
    assert set(out) == {"pred_logits", "pred_boxes"}
    assert out["pred_logits"].shape == (2, 30, 5) and out["pred_boxes"].shape == (2, 30, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()


def test_denoising_groups_are_kept_apart_and_know_their_targets():
    embed = torch.nn.Embedding(6, 8, padding_idx=5)
    groups = denoising_groups(TARGETS, 5, num_matching=7, label_embed=embed, num_denoising=8)
    most = 2  # the largest target count: each group holds 2 positives and 2 negatives per image
    assert groups.num_groups == 4 and groups.num_queries == 4 * 2 * most
    assert groups.content.shape == (2, 16, 8) and groups.boxes_unact.shape == (2, 16, 4)
    span, total = 2 * most, 16
    for g in range(4):
        rows = slice(g * span, (g + 1) * span)
        assert not groups.blocked[rows, rows].any()  # a group sees itself
        assert groups.blocked[rows, :g * span].all() and groups.blocked[rows, (g + 1) * span:total].all()
        assert not groups.blocked[rows, total:].any()  # and the matching queries
    assert groups.blocked[total:, :total].all() and not groups.blocked[total:, total:].any()
    # positives: the first `count` slots of each group's first half, group after group
    assert groups.positive_index[0].tolist() == [0, 1, 4, 5, 8, 9, 12, 13]
    assert groups.positive_index[1].tolist() == [0, 4, 8, 12]


def test_training_outputs_loss_terms_and_gradients(small):
    small.train()
    with torch.no_grad():  # box heads start at zero (boxes at their anchors): wake them up for the gradient check
        for head in [small.decoder.enc_bbox_head, *small.decoder.dec_bbox_head]:
            head.layers[-1].weight.normal_(0, 0.01)
    out = small(torch.randn(2, 3, 128, 160), TARGETS)
    assert len(out["aux_outputs"]) == 2 and len(out["dn_outputs"]) == 3
    assert out["enc_outputs"]["pred_logits"].shape == (2, 30, 5)
    dn = out["dn_groups"]
    assert out["dn_outputs"][0]["pred_logits"].shape == (2, dn.num_queries, 5)
    criterion = RTDETRCriterion(5, HungarianMatcher(2, 5, 2, "sigmoid"))
    losses = criterion(out, TARGETS)
    expected = {f"{term}{suffix}" for term in ("loss_vfl", "loss_bbox", "loss_giou")
                for suffix in ("", "_aux_0", "_aux_1", "_enc", "_dn_0", "_dn_1", "_dn_2")}
    assert set(losses) == expected | {"loss"}
    weights = {"loss_vfl": 1, "loss_bbox": 5, "loss_giou": 2}
    term = {name: next(t for t in weights if name.startswith(t)) for name in losses if name != "loss"}
    total = sum(weights[term[name]] * value for name, value in losses.items() if name != "loss")
    torch.testing.assert_close(losses["loss"], total)
    small.zero_grad()
    losses["loss"].backward()
    outside_backbone = [n for n, p in small.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    silent = [n for n in outside_backbone if small.get_parameter(n).grad is None
              or not small.get_parameter(n).grad.abs().sum()]
    assert silent == []


def test_varifocal_loss_of_a_perfect_match_is_the_background_term_only():
    """Predicted boxes equal to their targets (IoU 1): VFL = BCE at the true class against 1, and
    the negatives weighted alpha * p^gamma; computed here by hand."""
    logits = torch.tensor([[[2.0, -1.0], [-3.0, 0.5]]])  # one image, 2 queries, 2 classes
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]])
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    criterion = RTDETRCriterion(2, HungarianMatcher(2, 5, 2, "sigmoid"))
    losses = criterion({"pred_logits": logits, "pred_boxes": boxes}, targets)
    p = logits.sigmoid()
    bce_pos = -torch.log(p[0, 0, 0])  # target 1 (IoU) with weight 1
    negatives = [(0, 1), (1, 0), (1, 1)]
    bce_neg = sum(0.75 * p[0, q, c] ** 2 * -torch.log(1 - p[0, q, c]) for q, c in negatives)
    expected = (bce_pos + bce_neg) / 2 * 2 / 1  # mean over queries, sum, times Q, over 1 box
    torch.testing.assert_close(losses["loss_vfl"], expected)
    assert losses["loss_bbox"] == 0 and losses["loss_giou"].abs() < 1e-6


def test_runs_in_float64(small):
    model = small.double().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 128, dtype=torch.float64))
    assert out["pred_logits"].dtype == torch.float64
    small.float()
