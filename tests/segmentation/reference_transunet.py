"""A compact re-implementation of Beckschen/TransUNet ``networks/vit_seg_modeling.py`` (and its
ResNet ``vit_seg_modeling_resnet_skip.py``) with the reference's module names, so that its
``state_dict`` has the published checkpoints' layout, and its ``load_from`` reads Google ``.npz``
arrays the way the reference does. Used only as the independent side of conversion tests.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class StdConv2d(nn.Conv2d):
    def forward(self, x):
        w = self.weight
        v, m = torch.var_mean(w, dim=[1, 2, 3], keepdim=True, unbiased=False)
        w = (w - m) / torch.sqrt(v + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PreActBottleneck(nn.Module):
    def __init__(self, cin, cout, cmid, stride=1):
        super().__init__()
        self.gn1 = nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv1 = StdConv2d(cin, cmid, 1, bias=False)
        self.gn2 = nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv2 = StdConv2d(cmid, cmid, 3, stride=stride, padding=1, bias=False)
        self.gn3 = nn.GroupNorm(32, cout, eps=1e-6)
        self.conv3 = StdConv2d(cmid, cout, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or cin != cout:
            self.downsample = StdConv2d(cin, cout, 1, stride=stride, bias=False)
            self.gn_proj = nn.GroupNorm(cout, cout)

    def forward(self, x):
        residual = x
        if hasattr(self, "downsample"):
            residual = self.gn_proj(self.downsample(x))
        y = self.relu(self.gn1(self.conv1(x)))
        y = self.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return self.relu(residual + y)


class ResNetV2(nn.Module):
    def __init__(self, block_units, width_factor):
        super().__init__()
        width = int(64 * width_factor)
        self.width = width
        self.root = nn.Sequential(OrderedDict([
            ("conv", StdConv2d(3, width, kernel_size=7, stride=2, bias=False, padding=3)),
            ("gn", nn.GroupNorm(32, width, eps=1e-6)),
            ("relu", nn.ReLU(inplace=True)),
        ]))
        def block(cin, cout, cmid, units, stride):
            return nn.Sequential(OrderedDict(
                [("unit1", PreActBottleneck(cin, cout, cmid, stride))]
                + [(f"unit{i}", PreActBottleneck(cout, cout, cmid)) for i in range(2, units + 1)]
            ))
        self.body = nn.Sequential(OrderedDict([
            ("block1", block(width, width * 4, width, block_units[0], 1)),
            ("block2", block(width * 4, width * 8, width * 2, block_units[1], 2)),
            ("block3", block(width * 8, width * 16, width * 4, block_units[2], 2)),
        ]))

    def forward(self, x):
        features = []
        b, c, in_size, _ = x.size()
        x = self.root(x)
        features.append(x)
        x = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)(x)
        for i in range(len(self.body) - 1):
            x = self.body[i](x)
            right_size = int(in_size / 4 / (i + 1))
            if x.size()[2] != right_size:
                feat = torch.zeros((b, x.size()[1], right_size, right_size), device=x.device)
                feat[:, :, 0:x.size()[2], 0:x.size()[3]] = x[:]
            else:
                feat = x
            features.append(feat)
        x = self.body[-1](x)
        return x, features[::-1]


class Attention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads, self.head_size = heads, hidden // heads
        self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def split(self, x):
        return x.view(*x.shape[:-1], self.heads, self.head_size).permute(0, 2, 1, 3)

    def forward(self, x):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        probs = (q @ k.transpose(-1, -2) / math.sqrt(self.head_size)).softmax(dim=-1)
        ctx = (probs @ v).permute(0, 2, 1, 3).contiguous()
        return self.out(ctx.view(*ctx.shape[:-2], -1))


class Mlp(nn.Module):
    def __init__(self, hidden, mlp_dim):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(hidden, mlp_dim), nn.Linear(mlp_dim, hidden)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, hidden, heads, mlp_dim):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.ffn = Mlp(hidden, mlp_dim)
        self.attn = Attention(hidden, heads)

    def forward(self, x):
        x = x + self.attn(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class Embeddings(nn.Module):
    def __init__(self, hidden, img_size, hybrid, block_units, width_factor):
        super().__init__()
        self.hybrid = hybrid
        if hybrid:
            self.hybrid_model = ResNetV2(block_units, width_factor)
            in_channels, patch = self.hybrid_model.width * 16, 1
        else:
            in_channels, patch = 3, 16
        self.patch_embeddings = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch)
        self.position_embeddings = nn.Parameter(torch.zeros(1, (img_size // 16) ** 2, hidden))

    def forward(self, x):
        features = None
        if self.hybrid:
            x, features = self.hybrid_model(x)
        x = self.patch_embeddings(x).flatten(2).transpose(-1, -2)
        return x + self.position_embeddings, features


class Encoder(nn.Module):
    def __init__(self, hidden, heads, mlp_dim, layers):
        super().__init__()
        self.layer = nn.ModuleList(Block(hidden, heads, mlp_dim) for _ in range(layers))
        self.encoder_norm = nn.LayerNorm(hidden, eps=1e-6)

    def forward(self, x):
        for block in self.layer:
            x = block(x)
        return self.encoder_norm(x)


class Transformer(nn.Module):
    def __init__(self, hidden, heads, mlp_dim, layers, img_size, hybrid, block_units, width_factor):
        super().__init__()
        self.embeddings = Embeddings(hidden, img_size, hybrid, block_units, width_factor)
        self.encoder = Encoder(hidden, heads, mlp_dim, layers)

    def forward(self, x):
        x, features = self.embeddings(x)
        return self.encoder(x), features


class Conv2dReLU(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    def __init__(self, cin, cout, skip):
        super().__init__()
        self.conv1, self.conv2 = Conv2dReLU(cin + skip, cout), Conv2dReLU(cout, cout)
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)

    def forward(self, x, skip=None):
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class DecoderCup(nn.Module):
    def __init__(self, hidden, decoder_channels, skip_channels, n_skip):
        super().__init__()
        self.n_skip = n_skip
        self.conv_more = Conv2dReLU(hidden, 512)
        ins = [512, *decoder_channels[:-1]]
        skips = [s if i < n_skip else 0 for i, s in enumerate(skip_channels)]
        self.blocks = nn.ModuleList(DecoderBlock(i, o, s) for i, o, s in zip(ins, decoder_channels, skips))

    def forward(self, hidden_states, features=None):
        b, n_patch, hidden = hidden_states.size()
        h = w = int(np.sqrt(n_patch))
        x = self.conv_more(hidden_states.permute(0, 2, 1).contiguous().view(b, hidden, h, w))
        for i, block in enumerate(self.blocks):
            skip = features[i] if (features is not None and i < self.n_skip) else None
            x = block(x, skip=skip)
        return x


class VisionTransformer(nn.Module):
    """TransUNet; ``skip_channels`` as the reference's config ([512, 256, 64, 16] at width 64)."""

    def __init__(self, num_classes, img_size=224, hidden=768, heads=12, mlp_dim=3072, layers=12,
                 hybrid=True, block_units=(3, 4, 9), width_factor=1.0, n_skip=3,
                 decoder_channels=(256, 128, 64, 16)):
        super().__init__()
        width = int(64 * width_factor)
        skip_channels = [width * 8, width * 4, width, 16] if hybrid else [0, 0, 0, 0]
        self.transformer = Transformer(hidden, heads, mlp_dim, layers, img_size, hybrid, block_units, width_factor)
        self.decoder = DecoderCup(hidden, decoder_channels, skip_channels, n_skip if hybrid else 0)
        self.segmentation_head = nn.Sequential(nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1), nn.Identity())

    def forward(self, x):
        if x.size()[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x, features = self.transformer(x)
        return self.segmentation_head(self.decoder(x, features))

    @torch.no_grad()
    def load_from(self, weights):
        """The reference's ``load_from``: Google ``.npz`` arrays into this model (same-size grid)."""
        def np2th(w, conv=False):
            return torch.from_numpy(w.transpose([3, 2, 0, 1]) if conv else w)

        emb, enc = self.transformer.embeddings, self.transformer.encoder
        hidden = enc.encoder_norm.weight.numel()
        emb.patch_embeddings.weight.copy_(np2th(weights["embedding/kernel"], conv=True))
        emb.patch_embeddings.bias.copy_(np2th(weights["embedding/bias"]))
        enc.encoder_norm.weight.copy_(np2th(weights["Transformer/encoder_norm/scale"]))
        enc.encoder_norm.bias.copy_(np2th(weights["Transformer/encoder_norm/bias"]))
        posemb = np2th(weights["Transformer/posembed_input/pos_embedding"])
        emb.position_embeddings.copy_(posemb[:, 1:] if posemb.size(1) - 1 == emb.position_embeddings.size(1) else posemb)
        for n, block in enumerate(enc.layer):
            root = f"Transformer/encoderblock_{n}/"
            att = root + "MultiHeadDotProductAttention_1/"
            for part in ("query", "key", "value", "out"):
                getattr(block.attn, part).weight.copy_(np2th(weights[att + part + "/kernel"]).view(hidden, hidden).t())
                getattr(block.attn, part).bias.copy_(np2th(weights[att + part + "/bias"]).view(-1))
            block.ffn.fc1.weight.copy_(np2th(weights[root + "MlpBlock_3/Dense_0/kernel"]).t())
            block.ffn.fc2.weight.copy_(np2th(weights[root + "MlpBlock_3/Dense_1/kernel"]).t())
            block.ffn.fc1.bias.copy_(np2th(weights[root + "MlpBlock_3/Dense_0/bias"]).t())
            block.ffn.fc2.bias.copy_(np2th(weights[root + "MlpBlock_3/Dense_1/bias"]).t())
            block.attention_norm.weight.copy_(np2th(weights[root + "LayerNorm_0/scale"]))
            block.attention_norm.bias.copy_(np2th(weights[root + "LayerNorm_0/bias"]))
            block.ffn_norm.weight.copy_(np2th(weights[root + "LayerNorm_2/scale"]))
            block.ffn_norm.bias.copy_(np2th(weights[root + "LayerNorm_2/bias"]))
        if emb.hybrid:
            res = emb.hybrid_model
            res.root.conv.weight.copy_(np2th(weights["conv_root/kernel"], conv=True))
            res.root.gn.weight.copy_(np2th(weights["gn_root/scale"]).view(-1))
            res.root.gn.bias.copy_(np2th(weights["gn_root/bias"]).view(-1))
            for bname, block in res.body.named_children():
                for uname, unit in block.named_children():
                    p = f"{bname}/{uname}/"
                    for i in (1, 2, 3):
                        getattr(unit, f"conv{i}").weight.copy_(np2th(weights[p + f"conv{i}/kernel"], conv=True))
                        getattr(unit, f"gn{i}").weight.copy_(np2th(weights[p + f"gn{i}/scale"]).view(-1))
                        getattr(unit, f"gn{i}").bias.copy_(np2th(weights[p + f"gn{i}/bias"]).view(-1))
                    if hasattr(unit, "downsample"):
                        unit.downsample.weight.copy_(np2th(weights[p + "conv_proj/kernel"], conv=True))
                        unit.gn_proj.weight.copy_(np2th(weights[p + "gn_proj/scale"]).view(-1))
                        unit.gn_proj.bias.copy_(np2th(weights[p + "gn_proj/bias"]).view(-1))
