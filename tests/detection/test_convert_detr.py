"""``detr-official`` conversion: a file in facebookresearch/detr's layout gives our DETR the same outputs.

The reference below re-implements the official module structure (``nn.MultiheadAttention``,
post-norm layers, the Joiner's ``backbone.0.body``) so that its ``state_dict`` has the
official keys; it is the oracle our converted model must match.
"""
from __future__ import annotations

import argparse
import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from densevit.convert import CONVERTERS
from densevit.convert.detr import convert_detr_official
from densevit.data.collate import PaddedImages
from densevit.engine.build import build_from_checkpoint
from densevit.errors import UserInputError

HIDDEN, HEADS, FFN, ENC, DEC, QUERIES, CLASSES = 64, 4, 96, 2, 3, 7, 91


class RefEncoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(HIDDEN, HEADS)
        self.linear1, self.linear2 = nn.Linear(HIDDEN, FFN), nn.Linear(FFN, HIDDEN)
        self.norm1, self.norm2 = nn.LayerNorm(HIDDEN), nn.LayerNorm(HIDDEN)

    def forward(self, src, mask, pos):
        q = k = src + pos
        src = self.norm1(src + self.self_attn(q, k, value=src, key_padding_mask=mask)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class RefDecoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(HIDDEN, HEADS)
        self.multihead_attn = nn.MultiheadAttention(HIDDEN, HEADS)
        self.linear1, self.linear2 = nn.Linear(HIDDEN, FFN), nn.Linear(FFN, HIDDEN)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(HIDDEN) for _ in range(3))

    def forward(self, tgt, memory, mask, pos, query_pos):
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, k, value=tgt)[0])
        tgt2 = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory, key_padding_mask=mask)[0]
        tgt = self.norm2(tgt + tgt2)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class RefStack(nn.Module):
    def __init__(self, layer, count, norm=None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(count))
        self.norm = norm


class RefTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = RefStack(RefEncoderLayer(), ENC)
        self.decoder = RefStack(RefDecoderLayer(), DEC, nn.LayerNorm(HIDDEN))

    def forward(self, src, mask, query_embed, pos):
        bs = src.shape[0]
        src = src.flatten(2).permute(2, 0, 1)
        pos = pos.flatten(2).permute(2, 0, 1)
        query_pos = query_embed.unsqueeze(1).repeat(1, bs, 1)
        mask = mask.flatten(1)
        memory = src
        for layer in self.encoder.layers:
            memory = layer(memory, mask, pos)
        out, states = torch.zeros_like(query_pos), []
        for layer in self.decoder.layers:
            out = layer(out, memory, mask, pos, query_pos)
            states.append(self.decoder.norm(out))
        return torch.stack(states).transpose(1, 2)


class RefBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        net = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        self.body = IntermediateLayerGetter(net, return_layers={"layer4": "0"})


class RefMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(HIDDEN, HIDDEN), nn.Linear(HIDDEN, HIDDEN), nn.Linear(HIDDEN, 4)])


def ref_sine(mask, num_pos_feats=HIDDEN // 2, temperature=10000, scale=2 * math.pi):
    not_mask = ~mask
    y_embed = not_mask.cumsum(1, dtype=torch.float32)
    x_embed = not_mask.cumsum(2, dtype=torch.float32)
    y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class RefDETR(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(RefBackbone())  # the Joiner: backbone.0.body.*
        self.input_proj = nn.Conv2d(2048, HIDDEN, 1)
        self.query_embed = nn.Embedding(QUERIES, HIDDEN)
        self.transformer = RefTransformer()
        self.class_embed = nn.Linear(HIDDEN, CLASSES + 1)
        self.bbox_embed = RefMLP()

    def forward(self, images, mask):
        feature = self.backbone[0].body(images)["0"]
        mask = F.interpolate(mask[None].float(), size=feature.shape[-2:]).to(torch.bool)[0]
        hs = self.transformer(self.input_proj(feature), mask, self.query_embed.weight, ref_sine(mask))
        x = hs
        for i, layer in enumerate(self.bbox_embed.layers):
            x = F.relu(layer(x)) if i < 2 else layer(x)
        return self.class_embed(hs), x.sigmoid()


def _reference_model() -> RefDETR:
    torch.manual_seed(0)
    ref = RefDETR().eval()
    generator = torch.Generator().manual_seed(1)
    for name, buffer in ref.named_buffers():  # non-trivial frozen BN statistics
        if "running_var" in name:
            buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
        elif "running_mean" in name or name.endswith(".bias"):
            buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
        elif name.endswith(".weight"):
            buffer.copy_(torch.rand(buffer.shape, generator=generator) * 0.5 + 0.5)
    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, nn.MultiheadAttention):
                module.in_proj_bias.normal_(0, 0.1, generator=generator)
    return ref


def test_converted_official_checkpoint_gives_the_same_outputs(tmp_path):
    ref = _reference_model()
    src = tmp_path / "detr-official.pth"
    torch.save({"model": ref.state_dict(), "args": argparse.Namespace(lr=1e-4, backbone="resnet50", nheads=HEADS, dilation=False)}, src)
    assert CONVERTERS.get("detr-official") is convert_detr_official
    report = convert_detr_official(src, tmp_path / "ours.pth")
    assert "detr_r50" in report and "91 classes" in report

    _, ours = build_from_checkpoint(tmp_path / "ours.pth")
    images = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(2, 96, 128, dtype=torch.bool)
    mask[1, 64:, :] = True
    mask[1, :, 96:] = True
    images[mask[:, None].expand_as(images)] = 0
    with torch.no_grad():
        ref_logits, ref_boxes = ref(images, mask)
        out = ours(PaddedImages((images, mask)))
    assert out["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
    torch.testing.assert_close(out["pred_logits"], ref_logits[-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(out["pred_boxes"], ref_boxes[-1], atol=1e-4, rtol=0)
    for i, aux in enumerate(out["aux_outputs"]):
        torch.testing.assert_close(aux["pred_logits"], ref_logits[i], atol=1e-4, rtol=0)


def test_unknown_tensors_are_refused_and_nothing_is_written(tmp_path):
    state = _reference_model().state_dict()
    state["transformer.encoder.norm.weight"] = torch.ones(HIDDEN)  # a pre-norm checkpoint
    src = tmp_path / "prenorm.pth"
    torch.save({"model": state}, src)
    with pytest.raises(UserInputError, match="transformer.encoder.norm.weight"):
        convert_detr_official(src, tmp_path / "ours.pth")
    assert not (tmp_path / "ours.pth").exists()
