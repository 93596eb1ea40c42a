"""``densevit convert detr-official IN.pth OUT.pth``: facebookresearch/detr weights -> our DETR.

The official checkpoints hold ``checkpoint["model"]`` with the ResNet trunk under
``backbone.0.body.``, the transformer as ``transformer.encoder.layers.N`` /
``transformer.decoder.layers.N`` (``nn.MultiheadAttention`` with a fused ``in_proj_weight``),
``transformer.decoder.norm``, ``input_proj``, ``query_embed``, ``class_embed`` and
``bbox_embed.layers.N``. Our layout differs only by names, so conversion is a renaming; the
sizes (classes, queries, hidden size, layers, ResNet depth) are read from the tensors.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from densevit.convert import CONVERTERS
from densevit.errors import UserInputError
from densevit.weights import load_state, read_weights

# (pattern on the official key, replacement in ours); the first match wins
_RENAMES = [
    (r"^backbone\.0\.body\.", "backbone.body."),
    (r"^transformer\.encoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$", r"transformer.encoder_layers.\1.self_attn.in_proj.\2"),
    (r"^transformer\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"transformer.encoder_layers.\1.self_attn.out_proj."),
    (r"^transformer\.encoder\.layers\.(\d+)\.(linear[12])\.", r"transformer.encoder_layers.\1.ffn.\2."),
    (r"^transformer\.encoder\.layers\.(\d+)\.(norm[12])\.", r"transformer.encoder_layers.\1.\2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$", r"transformer.decoder_layers.\1.self_attn.in_proj.\2"),
    (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"transformer.decoder_layers.\1.self_attn.out_proj."),
    (r"^transformer\.decoder\.layers\.(\d+)\.multihead_attn\.in_proj_(weight|bias)$", r"transformer.decoder_layers.\1.cross_attn.in_proj.\2"),
    (r"^transformer\.decoder\.layers\.(\d+)\.multihead_attn\.out_proj\.", r"transformer.decoder_layers.\1.cross_attn.out_proj."),
    (r"^transformer\.decoder\.layers\.(\d+)\.(linear[12])\.", r"transformer.decoder_layers.\1.ffn.\2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.(norm[123])\.", r"transformer.decoder_layers.\1.\2."),
    (r"^transformer\.decoder\.norm\.", "transformer.decoder_norm."),
    (r"^(input_proj|query_embed|class_embed|bbox_embed)\.", r"\1."),
]


def rename_official_key(key: str) -> str | None:
    """Our name for an official DETR state-dict key, or None when the key has no counterpart."""
    for pattern, replacement in _RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def read_official_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``checkpoint["model"]`` of an official DETR file and its training ``args`` as a dict (empty
    when absent); read as weights only, with ``argparse.Namespace`` allowed for ``args``."""
    checkpoint = read_weights(path, "DETR checkpoint", allowed_globals=[argparse.Namespace])
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, dict) or "class_embed.weight" not in state:
        raise UserInputError(f"{path}: field 'model': expected facebookresearch/detr weights "
                             "(a state dict with class_embed.weight, transformer.*, backbone.0.body.*)")
    args = checkpoint.get("args")
    return state, (vars(args) if isinstance(args, argparse.Namespace) else {})


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for key in state for m in [re.match(pattern, key)] if m}
    return max(found) + 1 if found else 0


def infer_model_config(state: dict[str, torch.Tensor], args: dict[str, Any]) -> dict[str, Any]:
    """``{"name", "num_classes", "kwargs"}`` of the DETR that these official weights fit.

    Sizes come from the tensors; the number of heads (which no tensor shows) from the
    checkpoint's ``args.nheads``, else DETR's 8.
    """
    if args.get("dilation") or args.get("pre_norm"):
        raise UserInputError("DC5 (dilation) and pre-norm DETR checkpoints are not supported")
    layer3_blocks = _count(state, r"^backbone\.0\.body\.layer3\.(\d+)\.")
    names = {6: "detr_r50", 23: "detr_r101"}
    if layer3_blocks not in names:
        raise UserInputError(f"unsupported backbone: layer3 has {layer3_blocks} blocks (expected ResNet-50 or -101)")
    hidden = state["query_embed.weight"].shape[1]
    kwargs = {
        "num_queries": state["query_embed.weight"].shape[0],
        "hidden_dim": hidden,
        "num_heads": int(args.get("nheads", 8)),
        "num_encoder_layers": _count(state, r"^transformer\.encoder\.layers\.(\d+)\."),
        "num_decoder_layers": _count(state, r"^transformer\.decoder\.layers\.(\d+)\."),
        "ffn_dim": state["transformer.encoder.layers.0.linear1.weight"].shape[0],
    }
    return {"name": names[layer3_blocks], "num_classes": state["class_embed.weight"].shape[0] - 1, "kwargs": kwargs}


def convert_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every tensor; a key we do not know is an error (it would be silently lost)."""
    out, unknown = {}, []
    for key, value in state.items():
        ours = rename_official_key(key)
        if ours is None:
            unknown.append(key)
        else:
            out[ours] = value
    if unknown:
        raise UserInputError(f"{len(unknown)} tensors have no place in densevit's DETR: {', '.join(unknown[:5])}"
                             " (pre-norm or segmentation DETR checkpoints are not supported)")
    return out


@CONVERTERS.register("detr-official")
def convert_detr_official(src: Path, dst: Path) -> str:
    """Convert ``src`` (facebookresearch/detr) into a densevit checkpoint at ``dst``."""
    from densevit.config import build_config
    from densevit.detection.coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
    from densevit.engine.checkpoint import save_checkpoint
    from densevit.models import create_model

    src, dst = Path(src), Path(dst)
    state, args = read_official_checkpoint(src)
    model_cfg = infer_model_config(state, args)
    num_classes = model_cfg["num_classes"]
    coco_names = dict(zip(COCO_CATEGORY_IDS, COCO_CLASS_NAMES))
    data = {
        # the official models predict COCO category ids directly: label i is category id i
        "category_ids": list(range(num_classes)),
        "class_names": [coco_names.get(i, f"category {i}") for i in range(num_classes)],
    }
    cfg = build_config({"task": "detection", "name": f"{model_cfg['name']}_converted", "model": model_cfg,
                        "data": data}, where=str(src))
    ours = convert_state(state)
    model = create_model(model_cfg["name"], num_classes=num_classes, **model_cfg["kwargs"])
    checkpoint = {"model": ours, "config": cfg.to_dict(), "class_names": data["class_names"]}
    load_state(model, ours, src, strict=True)  # every tensor must fit: fails before writing
    save_checkpoint(checkpoint, dst)
    return (f"wrote {dst}: {model_cfg['name']}, {num_classes} classes, {len(ours)} tensors "
            f"({model_cfg['kwargs']['num_queries']} queries)")
