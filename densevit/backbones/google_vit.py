"""Google's ViT weight files (``ViT-B_16.npz``, ``R50+ViT-B_16.npz``) in TransUNet's encoder keys.

The arrays are named as in the JAX release (``Transformer/encoderblock_N/...``, ``conv_root``,
``blockB/unitU/...``) with kernels in HWIO / (in, heads, head_dim) layouts. This maps them onto
:class:`~densevit.backbones.transunet_encoder.TransUNetEncoder` exactly as TransUNet's
``load_from`` copies them: convolutions transposed to OIHW, attention kernels flattened to
``hidden x hidden`` and transposed, q/k/v concatenated into timm's fused ``qkv``.
"""
from __future__ import annotations

import re

import torch
from torch import Tensor

# A key that every Google ViT file has (and no PyTorch checkpoint).
MARKER = "Transformer/encoder_norm/scale"

_NORMS = {"LayerNorm_0": "norm1", "LayerNorm_2": "norm2"}
_ATTENTION = "MultiHeadDotProductAttention_1"


def is_google_vit(state: dict[str, Tensor]) -> bool:
    """Whether ``state`` holds the arrays of a Google ViT ``.npz``."""
    return MARKER in state


def _conv(kernel: Tensor) -> Tensor:
    """HWIO -> OIHW."""
    return kernel.float().permute(3, 2, 0, 1).contiguous()


def google_vit_to_encoder(arrays: dict[str, Tensor]) -> dict[str, Tensor]:
    """Google arrays -> TransUNet encoder keys (``patch_embed``, ``blocks.N.*``, ``stem.*``, ...).

    Raises ``KeyError`` naming the first array a block needs and the file lacks.
    """
    def t(name: str) -> Tensor:
        return arrays[name].float()

    out = {
        "patch_embed.weight": _conv(t("embedding/kernel")),
        "patch_embed.bias": t("embedding/bias"),
        "pos_embed": t("Transformer/posembed_input/pos_embedding"),
        "norm.weight": t("Transformer/encoder_norm/scale"),
        "norm.bias": t("Transformer/encoder_norm/bias"),
    }
    hidden = out["norm.weight"].numel()
    blocks = sorted({int(m[1]) for k in arrays if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
    for n in blocks:
        src, dst = f"Transformer/encoderblock_{n}", f"blocks.{n}"
        qkv = [t(f"{src}/{_ATTENTION}/{part}/kernel").reshape(hidden, hidden).t() for part in ("query", "key", "value")]
        out[f"{dst}.attn.qkv.weight"] = torch.cat(qkv)
        out[f"{dst}.attn.qkv.bias"] = torch.cat(
            [t(f"{src}/{_ATTENTION}/{part}/bias").reshape(-1) for part in ("query", "key", "value")])
        out[f"{dst}.attn.proj.weight"] = t(f"{src}/{_ATTENTION}/out/kernel").reshape(hidden, hidden).t()
        out[f"{dst}.attn.proj.bias"] = t(f"{src}/{_ATTENTION}/out/bias").reshape(-1)
        for i in (0, 1):
            out[f"{dst}.mlp.fc{i + 1}.weight"] = t(f"{src}/MlpBlock_3/Dense_{i}/kernel").t()
            out[f"{dst}.mlp.fc{i + 1}.bias"] = t(f"{src}/MlpBlock_3/Dense_{i}/bias")
        for google, ours in _NORMS.items():
            out[f"{dst}.{ours}.weight"] = t(f"{src}/{google}/scale")
            out[f"{dst}.{ours}.bias"] = t(f"{src}/{google}/bias")
    if "conv_root/kernel" in arrays:
        out["stem.conv.weight"] = _conv(t("conv_root/kernel"))
        out["stem.norm.weight"] = t("gn_root/scale").reshape(-1)
        out["stem.norm.bias"] = t("gn_root/bias").reshape(-1)
        for key in arrays:
            if m := re.fullmatch(r"block(\d+)/unit(\d+)/(conv\d|conv_proj)/kernel", key):
                name = "downsample" if m[3] == "conv_proj" else m[3]
                out[f"stem.stages.{int(m[1]) - 1}.{int(m[2]) - 1}.{name}.weight"] = _conv(t(key))
            elif m := re.fullmatch(r"block(\d+)/unit(\d+)/(gn\d|gn_proj)/(scale|bias)", key):
                name = "downsample_norm" if m[3] == "gn_proj" else f"norm{m[3][2:]}"
                kind = "weight" if m[4] == "scale" else "bias"
                out[f"stem.stages.{int(m[1]) - 1}.{int(m[2]) - 1}.{name}.{kind}"] = t(key).reshape(-1)
    return out
