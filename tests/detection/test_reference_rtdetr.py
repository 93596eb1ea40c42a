"""Self-checks of the RT-DETRv2 test oracle in ``reference_rtdetr.py``.

The parameter counts run everywhere. Where the official source is unpacked at
``/tmp/rtdetr/rtdetrv2_pytorch`` (lyuwenyu/RT-DETR), the official model is built from its own
config files by its own registry (``create``), and ours must have the same state_dict and, with the
official random weights loaded strictly, the same eval outputs in float64.
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest
import torch
from reference_rtdetr import (
    PARAM_COUNTS,
    build_reference,
    randomize_,
    released_checkpoint,
)

OFFICIAL = Path("/tmp/rtdetr/rtdetrv2_pytorch")
CONFIGS = {18: "rtdetrv2_r18vd_120e_coco.yml", 34: "rtdetrv2_r34vd_120e_coco.yml",
           50: "rtdetrv2_r50vd_6x_coco.yml", 101: "rtdetrv2_r101vd_6x_coco.yml"}
needs_official = pytest.mark.skipif(
    not OFFICIAL.is_dir(), reason=f"official RT-DETR source not found at {OFFICIAL} (lyuwenyu/RT-DETR checkout)")


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_parameter_counts(depth):
    with torch.device("meta"):
        model = build_reference(depth)
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[depth]


def test_keys_and_checkpoint_layout():
    with torch.device("meta"):
        model = build_reference(18, num_classes=20, eval_spatial_size=(640, 640))
    keys = list(model.state_dict())
    for key in ("backbone.conv1.conv1_1.conv.weight", "backbone.res_layers.0.blocks.0.short.conv.weight",
                "backbone.res_layers.1.blocks.0.short.conv.conv.weight", "encoder.input_proj.0.conv.weight",
                "encoder.encoder.0.layers.0.self_attn.in_proj_weight", "encoder.fpn_blocks.0.conv3.conv.weight",
                "decoder.decoder.layers.2.cross_attn.num_points_scale", "decoder.anchors", "decoder.valid_mask",
                "decoder.dec_bbox_head.2.layers.2.bias", "decoder.denoising_class_embed.weight"):
        assert key in keys, key
    assert not any("pos_embed" in k for k in keys)
    state = released_checkpoint(model)
    assert set(state) == {"ema", "last_epoch"} and set(state["ema"]) == {"module", "updates"}
    assert list(state["ema"]["module"]) == keys
    assert state["ema"]["module"]["decoder.anchors"].shape == (1, 80 * 80 + 40 * 40 + 20 * 20, 4)
    with torch.device("meta"):
        r50 = build_reference(50)
    r50_keys = r50.state_dict().keys()
    assert "backbone.conv1.conv1_1.norm.running_var" in r50_keys  # FrozenBatchNorm2d: buffers only
    assert not any(k.startswith("backbone") and "num_batches_tracked" in k for k in r50_keys)
    assert "encoder.fpn_blocks.0.conv3.conv.weight" not in r50_keys  # expansion 1.0: conv3 is Identity


def _official():
    """The official modules, imported from the source tree under a private package name, with only
    the pieces the model needs (the package ``__init__``s pull in data, solver and optimiser code)."""
    name = "_official_rtdetrv2"
    if name + ".core" in sys.modules:
        return sys.modules[name + ".core"]
    src = OFFICIAL / "src"
    for package in ("", ".core", ".zoo", ".zoo.rtdetr", ".nn", ".nn.backbone"):
        module = types.ModuleType(name + package)
        module.__path__ = [str(src / package[1:].replace(".", "/"))]
        sys.modules[name + package] = module
    core = sys.modules[name + ".core"]
    core.workspace = importlib.import_module(name + ".core.workspace")
    core.register = core.workspace.register
    core.yaml_utils = importlib.import_module(name + ".core.yaml_utils")
    for module in ("nn.backbone.presnet", "zoo.rtdetr.hybrid_encoder", "zoo.rtdetr.rtdetrv2_decoder",
                   "zoo.rtdetr.rtdetr"):
        importlib.import_module(f"{name}.{module}")  # registers PResNet, HybridEncoder, ...
    return core


def official_model(depth, num_classes=80, eval_spatial_size=None):
    """Built as the official solver does: YAML config (with includes) -> registry ``create``."""
    core = _official()
    cfg = core.yaml_utils.load_config(str(OFFICIAL / "configs" / "rtdetrv2" / CONFIGS[depth]))
    cfg["PResNet"]["pretrained"] = False
    cfg["num_classes"], cfg["eval_spatial_size"] = num_classes, eval_spatial_size
    return core.workspace.create(cfg["model"], core.yaml_utils.merge_config(cfg, inplace=False, overwrite=False))


def _pair(depth, eval_spatial_size=None, dtype=torch.float64):
    """The official model with random weights everywhere, and ours holding the same (strict load)."""
    official = randomize_(official_model(depth, 80, eval_spatial_size), seed=depth).eval().to(dtype)
    ours = build_reference(depth, 80, eval_spatial_size)
    theirs = official.state_dict()
    assert list(ours.state_dict()) == list(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.items()}
    # buffers ours computes itself (not randomised): equal before any loading
    for name, buffer in ours.named_buffers():
        if name.endswith(("num_points_scale", "anchors", "valid_mask", "pos_embed2")):
            reference = official.get_buffer(name) if name in theirs else official.encoder.pos_embed2  # upstream: plain attribute
            assert torch.equal(buffer.to(reference.dtype), reference), name
    ours.load_state_dict(theirs, strict=True)
    ours.eval().to(dtype)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in official.parameters())
    return official, ours


def _assert_same(official, ours, batch, h, w, dtype=torch.float64):
    images = torch.rand(batch, 3, h, w, dtype=dtype)
    with torch.no_grad():
        expected, got = official(images), ours(images)
    assert got["pred_logits"].shape == (batch, 300, 80) and got["pred_boxes"].shape == (batch, 300, 4)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-5)
    return got


@needs_official
def test_matches_official_r18():
    torch.manual_seed(0)
    official, ours = _pair(18)
    _assert_same(official, ours, 1, 640, 640)
    _assert_same(official, ours, 2, 512, 672)  # non-square: the width-major position embedding shows


@needs_official
@pytest.mark.slow
def test_matches_official_r18_precomputed_and_masked_anchors():
    torch.manual_seed(1)
    official, ours = _pair(18, (640, 640), torch.float32)  # anchors, valid_mask, pos_embed2 buffers
    _assert_same(official, ours, 1, 640, 640, torch.float32)
    # Random weights almost never select a masked anchor (the level-0 border ring beyond 400 px),
    # so make them win: a masked (zeroed) memory row becomes LN(enc_output.proj.bias); align class 0
    # with it. At 512x672 the 292 masked positions then take 292 of the 300 queries.
    official, ours = _pair(18)
    decoder = official.decoder
    with torch.no_grad():
        decoder.enc_output.norm.weight.fill_(1.0)
        decoder.enc_output.norm.bias.zero_()
        masked_row = torch.nn.functional.layer_norm(decoder.enc_output.proj.bias, (256,))
        decoder.enc_score_head.weight[0] = 10 * masked_row / masked_row.norm()
    ours.load_state_dict(official.state_dict(), strict=True)
    got = _assert_same(official, ours, 1, 512, 672)
    assert (got["pred_boxes"][0, :, None] == got["pred_boxes"][0, None, :]).all(-1).sum(-1).max() == 292


@needs_official
@pytest.mark.slow
def test_matches_official_r50():
    torch.manual_seed(2)
    official, ours = _pair(50)
    _assert_same(official, ours, 1, 640, 640)
    _assert_same(official, ours, 1, 512, 672)

@needs_official
@pytest.mark.slow
@pytest.mark.parametrize("depth", [34, 101])
def test_state_dict_matches_official(depth):
    with torch.device("meta"):
        ours, theirs = build_reference(depth).state_dict(), official_model(depth).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert list(ours) == list(theirs)
