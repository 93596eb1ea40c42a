"""``densevit convert rtdetr-official IN OUT``: RT-DETRv2 weights (lyuwenyu/RT-DETR) -> densevit's RT-DETR.

The released files hold ``{"ema": {"module": state_dict, ...}}`` (or ``{"model": ...}``) in the
official module's layout. The hybrid encoder and the decoder convert by renaming attention and
FFN keys; the backbone (RT-DETR's ``PResNet``) maps onto timm's ResNet-D:

================================================  ===========================================
official                                          densevit
================================================  ===========================================
backbone.conv1.conv1_{1,2,3}.conv / .norm         backbone.body.conv1.{0,3,6} / conv1.{1,4}, bn1
backbone.res_layers.S.blocks.B.branch2{a,b,c}     backbone.body.layer(S+1).B.conv{1,2,3} / bn{1,2,3}
...blocks.B.short(.conv).conv / .norm             backbone.body.layer(S+1).B.downsample.1 / .2
*.self_attn.in_proj_weight / in_proj_bias         *.self_attn.in_proj.weight / .bias
*.linear1 / *.linear2 (encoder and decoder)       *.ffn.linear1 / *.ffn.linear2
encoder.encoder.K.layers.J                        encoder.encoder.K.J
decoder.decoder.layers.I                          decoder.layers.I
================================================  ===========================================

Buffers that densevit computes instead of storing are dropped: the decoder's ``anchors`` and
``valid_mask`` (for 640x640 only; densevit builds them for each input's size) and each
deformable attention's ``num_points_scale``. The depth (18/34/50/101), the class count and the
decoder's layer count are read from the tensors; every tensor must find its place, or the file
is refused naming the keys.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from densevit.convert import CONVERTERS
from densevit.errors import UserInputError
from densevit.weights import load_state, read_weights, state_dict_of

DROPPED = (re.compile(r"decoder\.(anchors|valid_mask)$"), re.compile(r".*\.num_points_scale$"))
_STEM = {"conv1_1": ("conv1.0", "conv1.1"), "conv1_2": ("conv1.3", "conv1.4"), "conv1_3": ("conv1.6", "bn1")}
_BRANCH = {"branch2a": "1", "branch2b": "2", "branch2c": "3"}
_RENAMES = [
    (r"\.self_attn\.in_proj_(weight|bias)$", r".self_attn.in_proj.\1"),
    (r"\.(linear[12])\.", r".ffn.\1."),
    (r"^encoder\.encoder\.(\d+)\.layers\.(\d+)\.", r"encoder.encoder.\1.\2."),
    (r"^decoder\.decoder\.layers\.(\d+)\.", r"decoder.layers.\1."),
]
_BLOCKS_TO_DEPTH = {(2, 2, 2, 2, False): 18, (3, 4, 6, 3, False): 34, (3, 4, 6, 3, True): 50, (3, 4, 23, 3, True): 101}


def rename_official_key(key: str) -> str | None:
    """densevit's name for an official RT-DETRv2 key; None for buffers densevit does not store."""
    if any(pattern.match(key) for pattern in DROPPED):
        return None
    if m := re.match(r"backbone\.conv1\.(conv1_\d)\.(conv|norm)\.(.+)$", key):
        conv, norm = _STEM[m[1]]
        return f"backbone.body.{conv if m[2] == 'conv' else norm}.{m[3]}"
    if m := re.match(r"backbone\.res_layers\.(\d+)\.blocks\.(\d+)\.(.+)$", key):
        stage, block, rest = int(m[1]) + 1, m[2], m[3]
        prefix = f"backbone.body.layer{stage}.{block}"
        if b := re.match(r"(branch2[abc])\.(conv|norm)\.(.+)$", rest):
            kind = "conv" if b[2] == "conv" else "bn"
            return f"{prefix}.{kind}{_BRANCH[b[1]]}.{b[3]}"
        if s := re.match(r"short\.(?:conv\.)?(conv|norm)\.(.+)$", rest):
            return f"{prefix}.downsample.{1 if s[1] == 'conv' else 2}.{s[2]}"
        return None if rest.endswith("num_batches_tracked") else f"{prefix}.{rest}"
    for pattern, replacement in _RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def convert_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official state dict renamed into densevit's layout (dropped buffers left out)."""
    out = {}
    for key, value in state.items():
        ours = rename_official_key(key)
        if ours is not None:
            out[ours] = value
    return out


def infer_model_config(state: dict[str, torch.Tensor], source: Path) -> dict[str, Any]:
    """``{"name", "num_classes", "kwargs"}`` of the RT-DETR these official weights fit."""
    stages = []
    for s in range(4):
        blocks = {int(m[1]) for k in state if (m := re.match(rf"backbone\.res_layers\.{s}\.blocks\.(\d+)\.", k))}
        stages.append(len(blocks))
    bottleneck = any(".branch2c." in k for k in state)
    depth = _BLOCKS_TO_DEPTH.get((*stages, bottleneck))
    if depth is None or "decoder.dec_score_head.0.weight" not in state:
        raise UserInputError(f"{source}: not RT-DETRv2 ResNet weights (backbone stages {stages}, "
                             "expected backbone.res_layers.*, encoder.*, decoder.dec_score_head.*)")
    layers = len({int(m[1]) for k in state if (m := re.match(r"decoder\.dec_score_head\.(\d+)\.", k))})
    return {"name": f"rtdetr_r{depth}", "num_classes": int(state["decoder.dec_score_head.0.weight"].shape[0]),
            "kwargs": {"decoder": {"num_layers": layers}}}


@CONVERTERS.register("rtdetr-official")
def convert_rtdetr_official(src: Path, dst: Path) -> str:
    """Convert ``src`` (a released RT-DETRv2 file) into a densevit checkpoint at ``dst``."""
    from densevit.config import build_config
    from densevit.detection.coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
    from densevit.engine.checkpoint import save_checkpoint
    from densevit.models import create_model

    src, dst = Path(src), Path(dst)
    state = state_dict_of(read_weights(src, "RT-DETR checkpoint", allowed_globals=[argparse.Namespace]), src)
    model_cfg = infer_model_config(state, src)
    num_classes = model_cfg["num_classes"]
    data: dict[str, Any] = {"pipeline": "rtdetr", "input_size": 640, "max_detections": 300}
    if num_classes == len(COCO_CATEGORY_IDS):  # COCO's 80 classes in RT-DETR's label order
        data.update(category_ids=list(COCO_CATEGORY_IDS), class_names=list(COCO_CLASS_NAMES))
    cfg = build_config({"task": "detection", "name": f"{model_cfg['name']}_official", "model": model_cfg,
                        "data": data, "loss": {"criterion": "rtdetr", "classification": "sigmoid", "cost_class": 2.0}},
                       where=str(src))
    ours = convert_state(state)
    model = create_model(model_cfg["name"], num_classes=num_classes, **model_cfg["kwargs"])
    load_state(model, ours, src, strict=True)  # every tensor must fit: fails before writing
    save_checkpoint({"model": ours, "config": cfg.to_dict(), "class_names": data.get("class_names", [])}, dst)
    return f"wrote {dst}: {model_cfg['name']}, {num_classes} classes, {len(ours)} tensors"
