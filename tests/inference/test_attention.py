"""``densevit attention``: maps taken from the models' own attention, outputs and state left as they were."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from densevit.backbones import create_backbone
from densevit.backbones.cswin import StripeAttention
from densevit.backbones.transunet_encoder import TransUNetEncoder
from densevit.cli import main
from densevit.config import build_config
from densevit.detection.transformer import Attention
from densevit.engine.build import build_model, build_task
from densevit.engine.checkpoint import save_checkpoint
from densevit.inference.attention import (
    AttentionOptions,
    attention_maps,
    prefix_tokens,
    token_grid,
)
from densevit.inference.attention_capture import (
    StripeCall,
    cswin_blocks,
    detr_cross_attention,
    rtdetr_sampling,
    stripe_attention,
    swin_blocks,
    token_attention,
    token_attention_modules,
    window_attention,
)
from densevit.inference.attention_maps import (
    attention_rollout,
    last_layer_map,
    rollout_map,
    stripe_map,
    window_map,
)
from densevit.inference.pictures import generated_picture
from densevit.models import create_model


def _left_clean(model: torch.nn.Module, fused: dict[str, bool]) -> None:
    """fused_attn as before, no hook anywhere, no flag or stored tensor on the detectors' layers."""
    assert {name: m.fused_attn for name, m in model.named_modules() if hasattr(m, "fused_attn")} == fused
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not {"keep_weights", "weights", "weights_layout", "keep_sampling", "sampling"} & set(vars(module))


def _fused(model: torch.nn.Module) -> dict[str, bool]:
    return {name: m.fused_attn for name, m in model.named_modules() if hasattr(m, "fused_attn")}


def _numpy_rollout(layers: list[np.ndarray]) -> np.ndarray:
    rollout = np.eye(layers[0].shape[-1])
    for attention in layers:
        mixed = attention.mean(0) + np.eye(attention.shape[-1])
        rollout = (mixed / mixed.sum(-1, keepdims=True)) @ rollout
    return rollout


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_backbone("vit_tiny_patch16").eval()


def test_rollout_equals_a_direct_numpy_computation_and_rows_sum_to_one(vit):
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad(), token_attention(vit) as captured:
        vit(x)
    assert len(captured) == 12 and captured[0].shape == (1, 3, 7, 7)  # class token + 2x3 patches
    layers = [a[0] for a in captured]
    for attention in layers:
        assert torch.allclose(attention.sum(-1), torch.ones(3, 7), atol=1e-5)
    rollout = attention_rollout(layers)
    assert np.allclose(rollout.numpy(), _numpy_rollout([a.double().numpy() for a in layers]), atol=1e-12)
    assert torch.allclose(rollout.sum(-1), torch.ones(7, dtype=torch.float64))
    assert prefix_tokens(vit) == 1 and token_grid(6, 32, 48) == (2, 3)
    assert torch.equal(rollout_map(rollout, 1, (2, 3)), rollout[0, 1:].reshape(2, 3))
    heads = last_layer_map(layers[-1], 1, (2, 3))
    assert heads.shape == (3, 2, 3) and torch.allclose(heads.sum((1, 2)), 1 - layers[-1][:, 0, 0].double())


def test_capturing_keeps_the_vit_outputs_and_restores_the_model(vit):
    x = torch.randn(1, 3, 32, 32)
    before = _fused(vit)
    assert any(before.values())  # timm's default: SDPA
    with torch.no_grad():
        fused = vit(x)[0]
        with token_attention(vit):
            captured = vit(x)[0]
        _left_clean(vit, before)
        for module in token_attention_modules(vit):
            module.fused_attn = False
        unfused = vit(x)[0]
        for name, module in vit.named_modules():
            if name in before:
                module.fused_attn = before[name]
    assert torch.equal(captured, unfused)  # the capture runs timm's own unfused path, nothing else
    assert torch.allclose(captured, fused, atol=1e-5)  # which is SDPA up to rounding
    double = vit.double()
    try:
        with torch.no_grad():
            reference = double(x.double())[0]
            with token_attention(double):
                taken = double(x.double())[0]
        assert torch.allclose(taken, reference, atol=1e-10, rtol=0)
    finally:
        vit.float()


def test_a_failing_forward_still_restores_the_model(vit):
    before = _fused(vit)
    with pytest.raises(ValueError), token_attention(vit):
        vit(torch.randn(1, 3, 30, 30))  # not a multiple of 16
    _left_clean(vit, before)


def test_encoders_without_class_token_and_tnt():
    torch.manual_seed(0)
    encoder = TransUNetEncoder(hidden=64, depth=2, num_heads=4, mlp_dim=128, resnet_layers=(1, 1, 1),
                               resnet_width=32).eval()
    tnt = create_backbone("tnt_small").eval()
    for model, prefix, heads in ((encoder, 0, 4), (tnt, 1, 6)):
        x = torch.randn(1, 3, 32, 48)
        before = _fused(model)
        with torch.no_grad():
            plain = model(x)[-1]
            with token_attention(model) as captured:
                taken = model(x)[-1]
        assert torch.equal(plain, taken) if not before else torch.allclose(plain, taken, atol=1e-5)
        _left_clean(model, before)
        assert len(captured) == len(model.body.blocks if prefix else model.blocks)  # TNT's inner attention left out
        assert prefix_tokens(model) == prefix and captured[-1].shape == (1, heads, 6 + prefix, 6 + prefix)
        if not prefix:  # the mean attention each patch receives: a distribution over the patches
            received = last_layer_map(captured[-1][0], 0, (2, 3))
            assert torch.allclose(received.sum((1, 2)), torch.ones(heads, dtype=torch.float64))


def test_swin_window_maps_follow_the_shifted_windows():
    torch.manual_seed(0)
    swin = create_backbone("swin_tiny", out_indices=(2,)).eval()
    stage = swin_blocks(swin)[2]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        plain = swin(x)[0]
        with window_attention(stage[-2:]) as calls:
            taken = swin(x)[0]
    assert torch.equal(plain, taken)
    _left_clean(swin, _fused(swin))
    regular, shifted = calls
    assert regular.size == shifted.size == (14, 14) and regular.shift == (0, 0) and shifted.shift == (3, 3)
    for call in calls:
        assert torch.allclose(call.weights.sum(-1), torch.ones(call.weights.shape[:-1]), atol=1e-5)
    # regular windows: the token (0, 0) sees the 7x7 window in the corner
    maps = window_map(regular, 0, 0)
    assert torch.allclose(maps.sum((1, 2)), torch.ones(len(maps), dtype=torch.float64))
    assert maps[:, 7:].abs().sum() == 0 and maps[:, :, 7:].abs().sum() == 0
    # shifted windows: (0, 0) is rolled into the bottom-right window, where the mask lets it see
    # only the 3x3 corner that was rolled with it; rolled back, that is the image's top-left corner
    maps = window_map(shifted, 0, 0)
    assert torch.allclose(maps.sum((1, 2)), torch.ones(len(maps), dtype=torch.float64))
    assert torch.allclose(maps[:, :3, :3].sum((1, 2)), torch.ones(len(maps), dtype=torch.float64), atol=1e-6)
    assert set(torch.nonzero(maps.sum(0))[:, 0].tolist()) == {10, 11, 12, 13, 0, 1, 2}


@pytest.mark.parametrize("orientation, size, pixel, stripe", [
    ("vertical", (5, 10), (2, 1), (slice(None), slice(0, 3))),  # 10 columns padded to 12: 1 left, 1 right
    ("horizontal", (10, 5), (8, 2), (slice(7, 10), slice(None))),  # 10 rows padded to 12: 1 above, 1 below
    ("full", (3, 4), (1, 2), (slice(None), slice(None))),
])
def test_cswin_stripe_weights_are_the_softmax_sdpa_applies(orientation, size, pixel, stripe):
    torch.manual_seed(0)
    attention = StripeAttention(8, 2, 4, orientation).eval()
    q, k, v = torch.randn(3, 1, 8, *size)
    plain = attention(q, k, v)
    attention.keep_weights = True
    kept = attention(q, k, v)
    assert torch.equal(plain, kept)
    windows, heads, area, _ = attention.weights.shape
    assert heads == 2 and torch.allclose(attention.weights.sum(-1), torch.ones(windows, heads, area))
    call = StripeCall(orientation, attention.weights, *attention.weights_layout)
    maps = stripe_map(call, *pixel)
    # the token's row over its stripe: the padding tokens are zeros, so each adds exp(0) to the denominator
    qh, kh = q.double().view(2, 4, *size), k.double().view(2, 4, *size)
    scores = torch.einsum("hd,hdij->hij", qh[:, :, pixel[0], pixel[1]], kh[:, :, stripe[0], stripe[1]]) / 2
    padding = area - scores[0].numel()
    expected = scores.exp() / (scores.exp().sum((1, 2), keepdim=True) + padding)
    assert maps.shape == (2, *size) and torch.allclose(maps[:, stripe[0], stripe[1]], expected, atol=1e-6)
    assert torch.allclose(maps.sum((1, 2)), expected.sum((1, 2)))  # nothing outside the stripe
    assert (padding == 0) == torch.allclose(maps.sum((1, 2)), torch.ones(2, dtype=torch.float64))


def test_cswin_capture_keeps_the_outputs_and_maps_land_in_the_stripes():
    torch.manual_seed(0)
    cswin = create_backbone("cswin_tiny", out_indices=(1, 2)).eval()
    stages = cswin_blocks(cswin)
    assert [len(blocks) for blocks in stages] == [1, 2, 21, 1]
    x = torch.randn(1, 3, 64, 192)  # stage 1: 8x24, stripes 2 wide; stage 2: 4x12, padded to 7x14 for 7
    with torch.no_grad():
        plain = cswin(x)
        with stripe_attention(stages[1][-1]) as narrow, stripe_attention(stages[2][-1]) as padded, \
                stripe_attention(stages[3][-1]) as skipped:
            taken = cswin(x)
    assert all(torch.equal(a, b) for a, b in zip(plain, taken))
    _left_clean(cswin, {})
    assert skipped == []  # out_indices stop before stage 3
    assert [c.orientation for c in narrow] == ["vertical", "horizontal"] and narrow[0].size == (8, 24)
    assert padded[0].window == (4, 7) and padded[0].padding == (0, 1) and padded[1].padding == (1, 0)
    for call in narrow + padded:
        assert torch.allclose(call.weights.sum(-1), torch.ones(call.weights.shape[:-1]), atol=1e-5)
    vertical, horizontal = (stripe_map(call, 5, 9) for call in narrow)
    assert set(torch.nonzero(vertical.sum(0))[:, 1].tolist()) == {8, 9}  # columns 8-9, every row
    assert set(torch.nonzero(horizontal.sum(0))[:, 0].tolist()) == {4, 5}  # rows 4-5, every column
    for maps in (vertical, horizontal):
        assert torch.allclose(maps.sum((1, 2)), torch.ones(2, dtype=torch.float64))
    # stage 2's 12 columns padded by one on each side: stripes are columns 0-5 and 6-11
    assert set(torch.nonzero(stripe_map(padded[0], 2, 6).sum(0))[:, 1].tolist()) == set(range(6, 12))
    assert set(torch.nonzero(stripe_map(padded[0], 2, 5).sum(0))[:, 1].tolist()) == set(range(6))


def test_detr_weights_are_the_ones_sdpa_applies():
    torch.manual_seed(0)
    attention = Attention(16, 4).eval()
    query, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 5:] = True
    plain = attention(query, memory, memory, padding)
    attention.keep_weights = True
    kept = attention(query, memory, memory, padding)
    assert torch.equal(plain, kept) and attention.weights.shape == (2, 4, 5, 7)
    assert torch.allclose(attention.weights.sum(-1), torch.ones(2, 4, 5)) and attention.weights[1, :, :, 5:].sum() == 0
    values = torch.nn.functional.linear(memory, attention.in_proj.weight[32:], attention.in_proj.bias[32:])
    heads = (attention.weights @ values.view(2, 7, 4, 4).transpose(1, 2)).transpose(1, 2).reshape(2, 5, 16)
    assert torch.allclose(attention.out_proj(heads), plain, atol=1e-6)


@pytest.mark.parametrize("name", ["detr_tiny", "rtdetr_tiny"])
def test_detector_outputs_are_unchanged_and_the_layers_left_clean(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    x = torch.randn(1, 3, 64, 96)
    capture = detr_cross_attention if name == "detr_tiny" else rtdetr_sampling
    with torch.no_grad():
        plain = model(x)
        with capture(model) as found:
            taken = model(x)
    for key in ("pred_logits", "pred_boxes"):
        assert torch.equal(plain[key], taken[key])
    _left_clean(model, _fused(model))
    queries = plain["pred_logits"].shape[1]
    if name == "detr_tiny":
        assert found["weights"].shape == (1, 8, queries, 4 * 6)  # stride 16
        assert torch.allclose(found["weights"].sum(-1), torch.ones(1, 8, queries), atol=1e-5)
    else:
        assert found["locations"].shape == (1, queries, 8, 6, 2)  # 2 points on each of 3 levels
        assert torch.allclose(found["weights"].sum(-1), torch.ones(1, queries, 8), atol=1e-5)


def _image(path, height=80, width=112):
    Image.fromarray(generated_picture(height, width)).save(path)
    return path


def _checkpoint(path, model: str, data: dict) -> str:
    cfg = build_config({"task": "detection", "model": {"name": model, "num_classes": 3},
                        "data": {"class_names": ["a", "b", "c"], **data}})
    task = build_task(cfg)
    torch.manual_seed(0)
    save_checkpoint({"model": build_model(task).state_dict(), "config": cfg.to_dict(),
                     "class_names": task.class_names()}, path)
    return str(path)


def _written(out, summary: dict, suffixes=(".png", ".npy")) -> None:
    assert json.loads((out / "attention.json").read_text())["files"] == summary["files"]
    for suffix in suffixes:
        assert any(name.endswith(suffix) for name in summary["files"])
    for name in summary["files"]:
        assert (out / name).is_file()
        if name.endswith(".png"):
            assert Image.open(out / name).mode == "RGB"


def test_cli_writes_pictures_and_arrays_for_a_vit(tmp_path, capsys):
    image = _image(tmp_path / "in.png")
    assert main(["attention", "vit_tiny_patch16", str(image), "--out", str(tmp_path / "out"), "--size", "64"]) == 0
    assert "wrote 6 files" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "attention.json").read_text())
    assert summary["kind"] == "tokens" and summary["input_size"] == [48, 64]
    _written(tmp_path / "out", summary)
    assert np.load(tmp_path / "out" / "last_layer.npy").shape == (3, 3, 4)
    rollout = np.load(tmp_path / "out" / "rollout_matrix.npy")
    assert np.allclose(rollout.sum(-1), 1)
    assert Image.open(tmp_path / "out" / "rollout.png").size == (112, 80)  # drawn over the original image


def test_cli_draws_a_pixels_stripes_for_cswin(tmp_path, capsys):
    image = _image(tmp_path / "in.png")  # 112x80: input 64x32 at --size 64, stage 1's grid 4x8
    out = tmp_path / "out"
    assert main(["attention", "cswin_tiny", str(image), "--out", str(out), "--size", "64", "--stage", "1",
                 "--pixel", "100", "10"]) == 0
    assert "wrote 7 files" in capsys.readouterr().out
    summary = json.loads((out / "attention.json").read_text())
    assert summary["kind"] == "cswin" and summary["input_size"] == [32, 64]
    _written(out, summary)
    vertical = np.load(out / "cswin_stage1_block1_vertical.npy")
    horizontal = np.load(out / "cswin_stage1_block1_horizontal.npy")
    assert vertical.shape == horizontal.shape == (2, 4, 8)  # 2 of stage 1's 4 heads in each half
    assert np.nonzero(vertical.sum(0))[1].tolist() == [6, 7] * 4 and np.allclose(vertical.sum((1, 2)), 1)
    assert set(np.nonzero(horizontal.sum(0))[0].tolist()) == {0, 1} and np.allclose(horizontal.sum((1, 2)), 1)
    assert Image.open(out / "cswin_stage1_block1_cross.png").size == (112, 80)
    summary = attention_maps("cswin_tiny", image, tmp_path / "last", AttentionOptions(size=64, head=3))
    assert sorted(summary["files"]) == ["cswin_stage3_block0_full.npy", "cswin_stage3_block0_full.png",
                                        "cswin_stage3_block0_full_heads.png"]
    assert np.allclose(np.load(tmp_path / "last" / "cswin_stage3_block0_full.npy").sum((1, 2)), 1)


@pytest.mark.parametrize("model, data, kind, size", [
    ("detr_tiny", {"val_size": 64, "max_size": 96}, "detr", [48, 64]),  # longer side 64, stride 16
    ("rtdetr_tiny", {"input_size": 64}, "rtdetr", [32, 64]),  # stride 32
])
def test_cli_draws_the_best_queries_of_a_detector_checkpoint(tmp_path, model, data, kind, size):
    checkpoint = _checkpoint(tmp_path / "model.pth", model, data)
    out = tmp_path / "out"
    summary = attention_maps(checkpoint, _image(tmp_path / "in.png"), out)  # the CLI's call, checked in detail
    assert summary["kind"] == kind and summary["input_size"] == size
    _written(out, summary)
    assert sum(name.endswith(".png") for name in summary["files"]) == 5  # --boxes 5
    if kind == "rtdetr":
        first = next(name for name in summary["files"] if name.endswith("_weights.npy"))
        assert np.allclose(np.load(out / first).sum(-1), 1)
    assert main(["attention", checkpoint, str(tmp_path / "in.png"), "--out", str(tmp_path / "cli"),
                 "--boxes", "2", "--head", "1"]) == 0
    assert sum(name.endswith(".png") for name in json.loads((tmp_path / "cli" / "attention.json").read_text())["files"]) == 2


@pytest.mark.parametrize("args, message", [
    (["resnet50", "{image}"], "resnet50: ResNetBackbone has no attention layers to draw"),
    (["vit_tiny_patch16", "{missing}"], "cannot read image"),
    (["vit_tiny_patch1", "{image}"], "did you mean"),
    (["vit_tiny_patch16", "{image}", "--head", "7"], "--head 7: the model has 3 heads"),
    (["cswin_tiny", "{image}", "--stage", "0", "--head", "1"], "--head 1: stage 0 has 1 head in each stripe"),
    (["cswin_tiny", "{image}", "--stage", "4"], "--stage 4: the model has 4 CSWin stages"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    image = _image(tmp_path / "in.png")
    args = [a.format(image=image, missing=tmp_path / "missing.png") for a in args]
    assert main(["attention", *args, "--out", str(tmp_path / "out"), "--size", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("densevit attention: error: ") and message in err and "\n" not in err
