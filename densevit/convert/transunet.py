"""TransUNet checkpoints (Beckschen/TransUNet ``networks/vit_seg_modeling.py``) into densevit's TransUNet.

``densevit convert transunet IN.pth OUT.pth`` writes a densevit checkpoint (``model`` state
dict plus a ``config`` for ``transunet_r50_vitb16`` or ``transunet_vit_b16_ref``, sizes read
from the weights) that ``densevit predict``/``evaluate`` and ``model.pretrained`` accept.
(Google's ViT ``.npz`` files need no conversion: the encoder reads them as pretrained weights,
see :mod:`densevit.backbones.google_vit`.)

Every reference name maps to ours:

=================================================  ==========================================
reference                                          densevit
=================================================  ==========================================
transformer.embeddings.hybrid_model.root.conv/gn   encoder.stem.conv / encoder.stem.norm
...hybrid_model.body.blockB.unitU.convK/gnK        encoder.stem.stages.(B-1).(U-1).convK/normK
...unitU.downsample / gn_proj                      ...downsample / downsample_norm
transformer.embeddings.patch_embeddings            encoder.patch_embed
transformer.embeddings.position_embeddings         encoder.pos_embed
transformer.encoder.layer.N.attn.query/key/value   encoder.blocks.N.attn.qkv (concatenated)
transformer.encoder.layer.N.attn.out               encoder.blocks.N.attn.proj
...layer.N.attention_norm / ffn_norm / ffn.fcK     encoder.blocks.N.norm1 / norm2 / mlp.fcK
transformer.encoder.encoder_norm                   encoder.norm
decoder.conv_more / decoder.blocks.N               decoder.conv_more / decoder.blocks.N
segmentation_head.0                                head
=================================================  ==========================================
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from densevit.convert import CONVERTERS
from densevit.errors import UserInputError
from densevit.weights import read_weights, state_dict_of

SYNAPSE_CLASSES = ["background", "aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach"]

_BLOCK_PARTS = {
    "attention_norm": "norm1",
    "ffn_norm": "norm2",
    "ffn.fc1": "mlp.fc1",
    "ffn.fc2": "mlp.fc2",
    "attn.out": "attn.proj",
}
_UNIT_PARTS = {"gn1": "norm1", "gn2": "norm2", "gn3": "norm3", "gn_proj": "downsample_norm"}


def reference_to_densevit(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename (and fuse q/k/v of) a reference-layout state dict into densevit's TransUNet keys."""
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if m := re.fullmatch(r"transformer\.encoder\.layer\.(\d+)\.attn\.(query|key|value)\.(weight|bias)", key):
            qkv.setdefault((int(m[1]), m[3]), {})[m[2]] = value
            continue
        out[_rename(key)] = value
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise UserInputError(f"layer {layer}: attention {kind} needs query, key and value; found {sorted(parts)}")
        out[f"encoder.blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def _rename(key: str) -> str:
    rules = [
        (r"transformer\.embeddings\.hybrid_model\.root\.conv\.(.+)", r"encoder.stem.conv.\1"),
        (r"transformer\.embeddings\.hybrid_model\.root\.gn\.(.+)", r"encoder.stem.norm.\1"),
        (r"transformer\.embeddings\.patch_embeddings\.(.+)", r"encoder.patch_embed.\1"),
        (r"transformer\.embeddings\.position_embeddings", "encoder.pos_embed"),
        (r"transformer\.encoder\.encoder_norm\.(.+)", r"encoder.norm.\1"),
        (r"segmentation_head\.0\.(.+)", r"head.\1"),
        (r"(decoder\..+)", r"\1"),
    ]
    if m := re.fullmatch(r"transformer\.embeddings\.hybrid_model\.body\.block(\d+)\.unit(\d+)\.(\w+)\.(.+)", key):
        part = _UNIT_PARTS.get(m[3], m[3])
        return f"encoder.stem.stages.{int(m[1]) - 1}.{int(m[2]) - 1}.{part}.{m[4]}"
    if m := re.fullmatch(r"transformer\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)", key):
        if m[2] in _BLOCK_PARTS:
            return f"encoder.blocks.{m[1]}.{_BLOCK_PARTS[m[2]]}.{m[3]}"
    for pattern, replacement in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    raise UserInputError(f"unexpected key {key!r}: not a TransUNet (vit_seg_modeling) checkpoint")


# ----------------------------------------------------------------------------- checkpoints


def infer_model_config(state: dict[str, Tensor]) -> dict[str, Any]:
    """The ``model`` config section (name, num_classes, kwargs) that fits a converted state dict."""
    hidden = state["encoder.norm.weight"].numel()
    depth = len({k.split(".")[2] for k in state if k.startswith("encoder.blocks.")})
    hybrid = "encoder.stem.conv.weight" in state
    patches = state["encoder.pos_embed"].shape[1]
    side = math.isqrt(patches)
    decoder_channels = []
    n_skip, previous = 0, state["decoder.conv_more.0.weight"].shape[0]
    for i in range(len({k.split(".")[2] for k in state if k.startswith("decoder.blocks.")})):
        weight = state[f"decoder.blocks.{i}.conv1.0.weight"]
        n_skip += int(weight.shape[1] > previous)
        previous = weight.shape[0]
        decoder_channels.append(previous)
    kwargs: dict[str, Any] = {
        "img_size": [side * 16, side * 16],
        "hidden": hidden,
        "depth": depth,
        "num_heads": max(hidden // 64, 1),
        "mlp_dim": state["encoder.blocks.0.mlp.fc1.weight"].shape[0],
        "head_channels": state["decoder.conv_more.0.weight"].shape[0],
        "decoder_channels": decoder_channels,
        "n_skip": n_skip,
    }
    if hybrid:
        kwargs["resnet_layers"] = [
            len({k.split(".")[4] for k in state if k.startswith(f"encoder.stem.stages.{s}.")}) for s in range(3)
        ]
        kwargs["resnet_width"] = state["encoder.stem.conv.weight"].shape[0]
        kwargs["in_chans"] = state["encoder.stem.conv.weight"].shape[1]
    else:
        kwargs["in_chans"] = state["encoder.patch_embed.weight"].shape[1]
    return {
        "name": "transunet_r50_vitb16" if hybrid else "transunet_vit_b16_ref",
        "num_classes": state["head.weight"].shape[0],
        "kwargs": kwargs,
    }


@CONVERTERS.register("transunet")
def convert_transunet(src: Path, dst: Path) -> str:
    """Beckschen/TransUNet ``.pth`` -> densevit checkpoint (model weights and a matching config)."""
    from densevit.engine.checkpoint import save_checkpoint

    src, dst = Path(src), Path(dst)
    state = state_dict_of(read_weights(src, "TransUNet checkpoint"), src)
    ours = reference_to_densevit(state)
    model_cfg = infer_model_config(ours)
    num_classes = model_cfg["num_classes"]
    size = model_cfg["kwargs"]["img_size"]
    config = {
        "task": "volume_segmentation",
        "name": f"converted_{src.stem}",
        "model": model_cfg,
        "data": {"kind": "nifti", "normalisation": "ct", "crop_size": size, "augment": "medical"},
    }
    names = SYNAPSE_CLASSES if num_classes == len(SYNAPSE_CLASSES) else []
    if names:
        config["data"]["class_names"] = names
    save_checkpoint({"model": ours, "config": config, "class_names": names}, dst)
    return (
        f"converted {len(state)} tensors from {src} into {model_cfg['name']} ({num_classes} classes, "
        f"{model_cfg['kwargs']['depth']} blocks, hidden {model_cfg['kwargs']['hidden']}, input {size[0]}x{size[1]}); "
        f"wrote {dst}"
    )
